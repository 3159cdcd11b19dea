"""git-clone: fetch one revision of a repository into the workspace, like Tekton's git-clone.

Runs the real ``git`` as argument lists (never a shell string). Credentials from the
``git-credentials`` / ``ssh-directory`` workspaces live only in a private temporary HOME, so
they are never written into the clone's config nor printed; URLs are printed with their
userinfo redacted.

What may be cloned is decided here, not by git's (or the environment's) configuration:
- only ``https``, ``http``, ``ssh`` (also scp-like ``user@host:path``) and ``git`` URLs, plus
  ``file://`` URLs and local paths when ``--allow-file true``; ``ext::``/``fd::`` and other
  remote helpers, other schemes and option-like values (``-…``) are refused with one line;
- every git command runs with ``protocol.allow=never`` and ``protocol.<scheme>.allow=always``
  for exactly the allowed schemes (``-c`` beats ``GIT_CONFIG_*`` and config files) and with
  ``GIT_ALLOW_PROTOCOL`` set to the same list (it overrides any config), so submodules,
  ``url.*.insteadOf`` rewrites and redirects cannot reach another transport;
- ``user:password@`` in an http(s) URL never reaches git's argv nor any file: git gets the bare
  URL and asks a one-shot credential helper that reads the secret from its environment (that
  helper replaces every other helper for that host, as inline credentials do in git).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from taskyard._os import empty_dir
from taskyard.errors import StepError
from taskyard.redact import redact, strip_userinfo
from taskyard.steps import _cli
from taskyard.steps._results import write_results

TASK_NAME = "git-clone"
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
# Schemes a clone may use; "file" (file:// URLs and local paths) only with --allow-file.
NETWORK_SCHEMES = ("https", "http", "ssh", "git")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# git's `<transport>::<address>` form runs the remote helper git-remote-<transport> (ext, fd…).
_HELPER = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)::")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTPORT = re.compile(r"[A-Za-z0-9._~:%\[\]-]+")
_USER_ENV, _PASSWORD_ENV = "TASKYARD_GIT_USERNAME", "TASKYARD_GIT_PASSWORD"
# Answers `get` from the environment; ignores `store`/`erase` (nothing is ever saved).
_ENV_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USER_ENV}" "${_PASSWORD_ENV}"; }}; f'
)


@dataclass
class Git:
    """Runs git in one repository with one environment, echoing redacted commands."""

    cwd: Path
    env: dict[str, str]
    config: tuple[str, ...] = ()  # `-c k=v` pairs; git passes them on to submodule commands
    policy: tuple[str, ...] = ()  # `-c k=v` pairs too, not echoed (protocols, credentials)

    def run(
        self, *args: str, check: bool = True, echo: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``git args``; print the command, and its output when ``echo``."""
        shown = ["git", *(x for kv in self.config for x in ("-c", kv)), *args]
        print("+ " + redact(shlex.join(shown)), flush=True)
        cmd = [shown[0], *(x for kv in self.policy for x in ("-c", kv)), *shown[1:]]
        proc = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True)
        for stream in (proc.stdout if echo else "", proc.stderr):
            if stream.strip():
                print(redact(stream.rstrip()), flush=True)
        if check and proc.returncode != 0:
            raise GitFailed(reason(proc.stderr))
        return proc

    def out(self, *args: str, echo: bool = True) -> str:
        return self.run(*args, echo=echo).stdout.strip()


class GitFailed(StepError):
    """A git command failed; carries git's own one-line reason (one line even if uncaught)."""


def reason(stderr: str) -> str:
    """git's most useful line: the first ``fatal:``/``error:`` line, else the last line."""
    lines = [redact(x.strip()) for x in stderr.splitlines() if x.strip()]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line[len(prefix) :]
    return lines[-1] if lines else "git failed without a message"


def auth_hint(message: str) -> str | None:
    """Point at the workspaces when git's failure looks like missing credentials."""
    if re.search(r"could not read (Username|Password)|Authentication failed", message):
        return "private repository? bind the git-credentials workspace"
    if "Permission denied (publickey" in message or "Host key verification failed" in message:
        return "bind the ssh-directory workspace with a key and known_hosts"
    return None


def url_scheme(url: str, allow_file: bool) -> str:
    """The transport git would use for ``url`` (https/http/ssh/git/file), if it is allowed.

    Follows git's own reading of a URL: ``<helper>::…`` first, then ``scheme://…``, then
    scp-like ``[user@]host:path`` (a ':' before any '/'), else a local path.
    """
    shown = redact(url)
    if url.startswith("-"):
        raise StepError(f"repository url {shown!r} looks like an option; refused")
    if _CONTROL.search(url):
        raise StepError(f"repository url {shown!r} contains control characters; refused")
    allowed = ", ".join(allowed_schemes(allow_file))
    if m := _HELPER.match(url):
        raise StepError(
            f"repository url {shown!r} uses git's {m.group(1)}:: transport; refused",
            f"allowed: {allowed}",
        )
    if m := _SCHEME.match(url):
        scheme = m.group(1).lower()
        host = url[m.end() :].split("/", 1)[0].rsplit("@", 1)[-1]
    else:
        colon, slash = url.find(":"), url.find("/")
        if colon > 0 and (slash < 0 or colon < slash):
            scheme, host = "ssh", url[:colon].rsplit("@", 1)[-1]  # scp-like user@host:path
        else:
            scheme, host = "file", ""  # a local path
    if scheme == "file" and not allow_file:
        raise StepError(
            f"repository url {shown!r} is a local path or file:// URL; refused",
            "set the allow-file param to true to clone from this machine",
        )
    if scheme not in NETWORK_SCHEMES and scheme != "file":
        raise StepError(f"repository url scheme {scheme!r} is not allowed", f"allowed: {allowed}")
    if host.startswith("-"):
        raise StepError(f"repository url {shown!r} has an option-like host; refused")
    return scheme


def allowed_schemes(allow_file: bool) -> tuple[str, ...]:
    return (*NETWORK_SCHEMES, "file") if allow_file else NETWORK_SCHEMES


def protocol_policy(allow_file: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """``-c`` pairs and env that allow exactly the allowed schemes, whatever else is set."""
    schemes = allowed_schemes(allow_file)
    config = ("protocol.allow=never", *(f"protocol.{s}.allow=always" for s in schemes))
    return config, {"GIT_ALLOW_PROTOCOL": ":".join(schemes)}


def check_revision(revision: str) -> None:
    if revision.startswith("-"):
        raise StepError(f"revision {revision!r} looks like an option; refused")
    if _CONTROL.search(revision):
        raise StepError(f"revision {revision!r} contains control characters; refused")


def inline_credentials(url: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """(URL for git, ``-c`` pairs, env): ``user:password@`` moves to a credential helper.

    http(s) only; an ssh URL keeps its user name (ssh needs it) and loses any password (ssh
    never reads one from a URL).
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, (), {}
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    if parts.scheme.lower() == "ssh":
        user = userinfo.split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}@{hostport}")), (), {}
    if parts.scheme.lower() not in ("http", "https"):
        return url, (), {}
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    if _CONTROL.search(user + password):
        raise StepError("the credentials in the repository url contain control characters")
    if not _HOSTPORT.fullmatch(hostport):
        raise StepError(f"repository url {redact(url)!r} has an unusual host; refused")
    origin = f"{parts.scheme.lower()}://{hostport}"
    config = (f"credential.{origin}.helper=", f"credential.{origin}.helper={_ENV_HELPER}")
    bare = urlunsplit(parts._replace(netloc=hostport))
    return bare, config, {_USER_ENV: user, _PASSWORD_ENV: password}


def parse_depth(value: str) -> int:
    try:
        depth = int(value.strip())
    except ValueError:
        depth = -1
    if depth < 0:
        raise StepError(f"depth must be a whole number >= 0 (0 = full history), got {value!r}")
    return depth


def resolve_target(output: Path, subdirectory: str) -> Path:
    """``output/subdirectory``, refusing anything that escapes ``output``."""
    root = output.resolve()
    target = (root / subdirectory).resolve() if subdirectory.strip() else root
    if target != root and root not in target.parents:
        raise StepError(f"subdirectory {subdirectory!r} points outside the output workspace")
    return target


def install_credentials(home: Path, credentials: Path | None, ssh: Path | None) -> dict[str, str]:
    """Copy the credential workspaces into the private ``home``; return env for git."""
    env: dict[str, str] = {}
    if credentials is not None:
        if not credentials.is_dir():
            raise StepError(f"credentials folder {credentials} does not exist")
        gitconfig, store = credentials / ".gitconfig", credentials / ".git-credentials"
        if not gitconfig.is_file() and not store.is_file():
            raise StepError(
                f"credentials folder {credentials} has no .gitconfig or .git-credentials"
            )
        if gitconfig.is_file():
            shutil.copyfile(gitconfig, home / ".gitconfig")
        if store.is_file():
            shutil.copyfile(store, home / ".git-credentials")
            (home / ".git-credentials").chmod(0o600)
            text = (home / ".gitconfig").read_text() if (home / ".gitconfig").exists() else ""
            if not re.search(r"^\s*helper\s*=", text, re.MULTILINE):
                store_file = shlex.quote(str(home / ".git-credentials"))
                with (home / ".gitconfig").open("a") as f:
                    f.write(f'\n[credential]\n\thelper = "store --file={store_file}"\n')
    if ssh is not None:
        if not ssh.is_dir():
            raise StepError(f"ssh folder {ssh} does not exist")
        env["GIT_SSH_COMMAND"] = install_ssh(ssh, home / ".ssh")
    return env


def install_ssh(src: Path, dest: Path) -> str:
    """Copy an ssh folder with the modes ssh insists on; return a matching ssh command.

    ssh looks up ``~`` from the passwd database, not ``$HOME``, so the keys, config and
    known_hosts are named explicitly on the command line.
    """
    shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=False)
    dest.chmod(0o700)
    for path in dest.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    cmd = ["ssh", "-o", "BatchMode=yes"]
    if (dest / "config").is_file():
        cmd += ["-F", str(dest / "config")]
    if (dest / "known_hosts").is_file():
        cmd += ["-o", f"UserKnownHostsFile={dest / 'known_hosts'}"]
    for key in sorted(dest.glob("id_*")):
        if key.suffix != ".pub":
            cmd += ["-i", str(key)]
    return shlex.join(cmd)


def bound(folder: Path | None) -> Path | None:
    """An empty folder counts as unbound: Argo mounts a missing optional Secret as one."""
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        return None
    return folder


@contextmanager
def git_environment(credentials: Path | None, ssh: Path | None) -> Iterator[dict[str, str]]:
    """The env git runs with: never prompts; a private HOME when credentials are bound."""
    credentials, ssh = bound(credentials), bound(ssh)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    if credentials is None and ssh is None:
        yield env
        return
    home = Path(tempfile.mkdtemp(prefix="taskyard-git-home-"))
    try:
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
        env.update(install_credentials(home, credentials, ssh))
        yield env
    finally:
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Remote:
    """What ``git ls-remote --symref`` says about the remote."""

    refs: dict[str, str]  # ref name -> object id (peeled tags under `<tag>^{}`)
    head_branch: str | None

    @classmethod
    def parse(cls, listing: str) -> Remote:
        refs: dict[str, str] = {}
        head = None
        for line in listing.splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                head = left[5:].removeprefix("refs/heads/")
            elif name:
                refs[name] = left
        return cls(refs=refs, head_branch=head)

    def find(self, revision: str) -> str | None:
        """The remote ref ``revision`` names, in the order ``git fetch`` would pick it."""
        if revision in ("", "HEAD"):
            return "HEAD" if "HEAD" in self.refs else None
        if revision.startswith("refs/"):
            return revision if revision in self.refs else None
        for ref in (f"refs/{revision}", f"refs/tags/{revision}", f"refs/heads/{revision}"):
            if ref in self.refs:
                return ref
        return None


def clone(args: argparse.Namespace) -> dict[str, str]:
    """Do the clone; return the record details."""
    depth = parse_depth(args.depth)
    if shutil.which("git") is None:
        raise StepError("git is not installed (or not on PATH) in this image")
    url, shown = args.url.strip(), redact(args.url.strip())
    if not url:
        raise StepError("no repository url given (--url is empty)")
    url_scheme(url, args.allow_file)
    revision = args.revision.strip()
    check_revision(revision)
    url, credential_config, credential_env = inline_credentials(url)
    policy_config, policy_env = protocol_policy(args.allow_file)
    target = resolve_target(args.output, args.subdirectory)
    if args.delete_existing:
        empty_dir(target)
    target.mkdir(parents=True, exist_ok=True)

    config = () if args.ssl_verify else ("http.sslVerify=false",)
    print(f"git protocols allowed: {', '.join(allowed_schemes(args.allow_file))}", flush=True)
    if credential_env:
        print(f"using the url's credentials for {url} through a credential helper", flush=True)
    with git_environment(args.credentials_dir, args.ssh_dir) as env:
        env.update(policy_env, **credential_env)
        g = Git(cwd=target, env=env, config=config, policy=policy_config + credential_config)
        try:
            g.run("init", "-q")
            if "origin" in g.out("remote", echo=False).split():
                g.run("remote", "remove", "origin")
            g.run("remote", "add", "--", "origin", url)
        except GitFailed as e:
            raise StepError(f"cannot prepare {target} for the clone: {e}") from None
        try:
            remote = Remote.parse(g.out("ls-remote", "--symref", "--", url, echo=False))
        except GitFailed as e:
            raise StepError(f"cannot clone {shown}: {e}", auth_hint(str(e))) from None

        shallow = [f"--depth={depth}"] if depth else []
        ref = remote.find(revision)
        try:
            if ref is not None:
                g.run("fetch", "--no-tags", *shallow, "--force", "--", url, ref)
                commit = g.out("rev-parse", "FETCH_HEAD^{commit}")
            elif _HEX.fullmatch(revision):
                commit = fetch_sha(g, url, revision, shallow)
            else:
                commit = ""
        except GitFailed as e:
            raise StepError(f"cannot clone {shown}: {e}") from None
        if not commit and not revision:
            raise StepError(f"cannot clone {shown}: the remote has no HEAD (an empty repository?)")
        if not commit:
            raise StepError(f"revision {revision!r} not found in {shown}")
        try:
            g.run("-c", "advice.detachedHead=false", "checkout", "-q", "-f", "--detach", commit)
            if args.submodules and (target / ".gitmodules").is_file():
                g.run("submodule", "update", "--init", "--recursive", "--force", *shallow)
        except GitFailed as e:
            raise StepError(f"cannot check out {revision or 'HEAD'} of {shown}: {e}") from None

        branch = branch_of(revision, ref, remote)
        subject, date = g.out("log", "-1", "--format=%s%x00%cI", commit).split("\0", 1)
    return {
        "commit": commit,
        "url": strip_userinfo(url),  # already without credentials; stripped again for safety
        "revision": revision,
        "branch": branch or "",
        "subject": subject,
        "committer_date": date,
        "depth": str(depth),
        "subdirectory": args.subdirectory,
    }


def fetch_sha(g: Git, url: str, sha: str, shallow: list[str]) -> str:
    """Fetch a commit by SHA; fall back to all branches and tags (short SHAs, old servers)."""
    if len(sha) == 40 or len(sha) == 64:
        proc = g.run("fetch", "--no-tags", *shallow, "--force", "--", url, sha, check=False)
        if proc.returncode == 0:
            return g.out("rev-parse", "FETCH_HEAD^{commit}")
        print(f"fetching {sha} directly was refused; fetching all branches and tags", flush=True)
    g.run(
        "fetch",
        "--force",
        "--",
        url,
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
    )
    found = g.run("rev-parse", "-q", "--verify", f"{sha}^{{commit}}", check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def branch_of(revision: str, ref: str | None, remote: Remote) -> str | None:
    if ref == "HEAD":
        return remote.head_branch
    if ref and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


def run(args: argparse.Namespace) -> None:
    if args.delete_existing:
        _cli.clear_records(args.output)  # a new run starts: no report mixes in an older one
    details = clone(args)
    write_results({"commit": details["commit"], "url": details["url"]})
    _cli.write_record(
        args.output,
        TASK_NAME,
        {"results": {"commit": details["commit"], "url": details["url"]}, **details},
    )
    where = f" ({details['branch']})" if details["branch"] else ""
    print(f"checked out {details['commit']}{where}: {details['subject']}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser("git_clone", __doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--revision", default="")
    p.add_argument("--depth", default="1")
    p.add_argument("--submodules", type=_cli.boolean, default=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--subdirectory", default="repo")
    p.add_argument("--delete-existing", type=_cli.boolean, default=True)
    p.add_argument("--ssl-verify", type=_cli.boolean, default=True)
    p.add_argument("--credentials-dir", type=_cli.optional_path, default=None)
    p.add_argument("--ssh-dir", type=_cli.optional_path, default=None)
    p.add_argument("--allow-file", type=_cli.boolean, default=False)
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser())
