"""git-clone against real remotes: file://, git daemon (git://) and smart HTTP with basic auth."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskyard.errors import StepError
from taskyard.steps.git_clone import install_ssh, redact, strip_userinfo, url_scheme
from tests.gitutil import (
    GitDaemon,
    GitHttpServer,
    Remote,
    allow_file_protocol,
    commit_count,
    git,
    git_env,
)


@dataclass
class Clone:
    proc: subprocess.CompletedProcess[str]
    output: Path
    results: Path

    @property
    def repo(self) -> Path:
        return self.output / "repo"

    def result(self, name: str) -> str:
        return (self.results / name).read_text()

    @property
    def record(self) -> dict:
        return json.loads((self.output / "artifacts" / "git-clone.json").read_text())


def clone(tmp_path: Path, url: str, *, env: dict[str, str] | None = None, **params: str) -> Clone:
    """Run the step exactly as the catalog task does (every arg passed, optional ones empty).

    ``allow-file`` is true for a file:// or path remote (the local fixtures), false otherwise.
    """
    values = {
        "allow-file": "true" if url.startswith(("file:", "/")) else "false",
        "revision": "",
        "depth": "1",
        "submodules": "true",
        "subdirectory": "repo",
        "delete-existing": "true",
        "ssl-verify": "true",
        "credentials-dir": "",
        "ssh-dir": "",
        **{k.replace("_", "-"): v for k, v in params.items()},
    }
    output = values.pop("output", str(tmp_path / "ws"))
    results = tmp_path / "results"
    args = ["--url", url, "--output", output]
    for name, value in values.items():
        args += [f"--{name}", value]
    run_env = git_env(
        TASKYARD_RESULT_COMMIT=str(results / "commit"),
        TASKYARD_RESULT_URL=str(results / "url"),
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "taskyard.steps.git_clone", *args],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Clone(proc=proc, output=Path(output), results=results)


def head(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo)


def assert_one_line_error(c: Clone, starts: str) -> None:
    assert c.proc.returncode == 1, c.proc.stdout + c.proc.stderr
    lines = c.proc.stderr.strip().splitlines()
    assert len(lines) == 1, c.proc.stderr
    assert lines[0].startswith(starts), lines[0]
    assert "Traceback" not in c.proc.stderr + c.proc.stdout


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """main: 3 commits (c1..c3); dev at c1; tag v1 (annotated) at c2, light-v2 at c3."""
    r = Remote.create(tmp_path / "remotes" / "project", {"README.md": "one\n"})
    r.commit({"a.txt": "two\n"}, "second commit")
    r.tag("v1")
    r.commit({"a.txt": "three\n"}, "third commit")
    r.tag("light-v2", annotated=False)
    r.branch("dev", "HEAD~2")
    return r


def test_branch(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, revision="dev")
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == remote.head("dev") == c.result("commit")
    assert c.result("url") == remote.url
    assert c.record["branch"] == "dev"
    assert c.record["results"] == {"commit": remote.head("dev"), "url": remote.url}
    assert c.record["subject"] == "initial commit"
    assert c.record["committer_date"]


@pytest.mark.parametrize(("tag", "subject"), [("v1", "second commit"), ("light-v2", "third")])
def test_tags(tmp_path: Path, remote: Remote, tag: str, subject: str) -> None:
    c = clone(tmp_path, remote.url, revision=tag)
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == remote.head(tag) == c.result("commit")
    assert c.record["subject"].startswith(subject)
    assert c.record["branch"] == ""


def test_full_sha_of_an_older_commit_shallow(tmp_path: Path, remote: Remote) -> None:
    sha = remote.head("HEAD~1")
    c = clone(tmp_path, remote.url, revision=sha, depth="1")
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == sha
    assert commit_count(c.repo) == 1


def test_short_sha_falls_back_to_a_full_fetch(tmp_path: Path, remote: Remote) -> None:
    sha = remote.head("HEAD~1")
    c = clone(tmp_path, remote.url, revision=sha[:8], depth="1")
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == sha == c.result("commit")
    assert "fetching all branches and tags" not in c.proc.stdout  # short: no direct try


def test_empty_revision_is_remote_head(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, revision="")
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == remote.head("main")
    assert c.record["branch"] == "main"
    assert (c.repo / "a.txt").read_text() == "three\n"


def test_depth(tmp_path: Path, remote: Remote) -> None:
    shallow = clone(tmp_path / "s", remote.url, depth="1")
    full = clone(tmp_path / "f", remote.url, depth="0")
    assert shallow.proc.returncode == full.proc.returncode == 0
    assert commit_count(shallow.repo) == 1
    assert commit_count(full.repo) == 3


def test_subdirectory_and_delete_existing_keeps_siblings(tmp_path: Path, remote: Remote) -> None:
    ws = tmp_path / "ws"
    (ws / "sibling").mkdir(parents=True)
    (ws / "sibling" / "keep.txt").write_text("keep")
    target = ws / "nested" / "project"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    c = clone(tmp_path, remote.url, subdirectory="nested/project", output=str(ws))
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(target) == remote.head()
    assert not (target / "stale.txt").exists()
    assert (ws / "sibling" / "keep.txt").read_text() == "keep"
    assert (ws / "artifacts" / "git-clone.json").is_file()


def test_without_delete_existing_old_files_stay(tmp_path: Path, remote: Remote) -> None:
    target = tmp_path / "ws" / "repo"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    c = clone(tmp_path, remote.url, delete_existing="false")
    assert c.proc.returncode == 0, c.proc.stderr
    assert (target / "stale.txt").exists()
    # cloning again over an existing clone (a retry) works too
    again = clone(tmp_path, remote.url, revision="dev", delete_existing="false")
    assert again.proc.returncode == 0, again.proc.stderr
    assert head(target) == remote.head("dev")


def test_subdirectory_outside_output_is_refused(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, subdirectory="../escape")
    assert_one_line_error(c, "error: subdirectory '../escape' points outside")
    assert not (tmp_path / "escape").exists()


def test_git_daemon_remote_with_submodule(tmp_path: Path) -> None:
    root = tmp_path / "served"
    lib = Remote.create(root / "lib", {"lib.py": "X = 1\n"})
    lib.commit({"lib.py": "X = 2\n"}, "lib v2")
    app = Remote.create(root / "app", {"app.py": "print()\n"})
    with GitDaemon(root) as daemon:
        assert daemon.pid
        app.add_submodule(daemon.url(lib.bare), "vendor/lib")
        url = daemon.url(app.bare)
        assert url.startswith("git://127.0.0.1:")
        c = clone(tmp_path, url, depth="1")
        no_sub = clone(tmp_path / "n", url, submodules="false")
    assert c.proc.returncode == 0, c.proc.stderr
    assert head(c.repo) == app.head()
    sub = c.repo / "vendor" / "lib"
    assert (sub / "lib.py").read_text() == "X = 2\n"
    assert commit_count(sub) == 1  # depth respected in submodules
    assert no_sub.proc.returncode == 0, no_sub.proc.stderr
    assert not (no_sub.repo / "vendor" / "lib" / "lib.py").exists()


def test_bad_url_is_one_clear_line(tmp_path: Path) -> None:
    c = clone(tmp_path, (tmp_path / "nowhere.git").as_uri())
    assert_one_line_error(c, f"error: cannot clone {(tmp_path / 'nowhere.git').as_uri()}: ")
    assert "does not appear to be a git repository" in c.proc.stderr
    assert not (tmp_path / "results" / "commit").exists()


def test_unknown_revision_is_one_clear_line(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, revision="no-such-branch")
    assert_one_line_error(c, f"error: revision 'no-such-branch' not found in {remote.url}")
    unknown_sha = clone(tmp_path, remote.url, revision="0" * 40)
    assert_one_line_error(unknown_sha, f"error: revision '{'0' * 40}' not found in ")


def test_bad_depth(tmp_path: Path, remote: Remote) -> None:
    assert_one_line_error(clone(tmp_path, remote.url, depth="-1"), "error: depth must be")
    assert_one_line_error(clone(tmp_path, remote.url, depth="two"), "error: depth must be")


def test_git_missing(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, env={"PATH": str(tmp_path / "empty")})
    assert_one_line_error(c, "error: git is not installed")


def test_http_basic_auth_through_the_credentials_dir(tmp_path: Path) -> None:
    root = tmp_path / "served"
    app = Remote.create(root / "private", {"secret.py": "S = 1\n"})
    password = "s3cr3t-token"
    creds = tmp_path / "creds"
    creds.mkdir()
    with GitHttpServer(root, user="alice", password=password) as http:
        url = http.url(app.bare)
        (creds / ".git-credentials").write_text(f"http://alice:{password}@127.0.0.1:{http.port}\n")
        denied = clone(tmp_path / "d", url)
        ok = clone(tmp_path / "ok", url, credentials_dir=str(creds))
        # a Tekton-style secret: .gitconfig naming the store helper, next to .git-credentials
        (creds / ".gitconfig").write_text("[credential]\n\thelper = store\n")
        ok2 = clone(tmp_path / "ok2", url, credentials_dir=str(creds))
        inline = clone(tmp_path / "inline", url.replace("://", f"://alice:{password}@"))
    assert_one_line_error(denied, f"error: cannot clone {url}: ")
    assert "bind the git-credentials workspace" in denied.proc.stderr
    for c in (ok, ok2, inline):
        assert c.proc.returncode == 0, c.proc.stderr
        assert head(c.repo) == app.head()
        assert c.result("url") == url
        assert password not in c.proc.stdout + c.proc.stderr
        assert password not in (c.repo / ".git" / "config").read_text()
        assert password not in (c.output / "artifacts" / "git-clone.json").read_text()
    assert "using the url's credentials for " in inline.proc.stdout
    assert sorted(p.name for p in creds.iterdir()) == [".git-credentials", ".gitconfig"]


def test_missing_credentials_dir(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, credentials_dir=str(tmp_path / "nope"))
    assert_one_line_error(c, "error: credentials folder")


def test_empty_credential_folders_count_as_unbound(tmp_path: Path, remote: Remote) -> None:
    """Argo mounts a missing optional Secret as an empty folder; the clone must still work."""
    (tmp_path / "creds").mkdir()
    (tmp_path / "ssh").mkdir()
    c = clone(
        tmp_path, remote.url, credentials_dir=str(tmp_path / "creds"), ssh_dir=str(tmp_path / "ssh")
    )
    assert c.proc.returncode == 0, c.proc.stderr
    assert c.result("commit") == remote.head()


def test_ssh_dir_is_copied_with_strict_modes(tmp_path: Path) -> None:
    src = tmp_path / "ssh"
    src.mkdir()
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts", "config"):
        (src / name).write_text(name)
        (src / name).chmod(0o644)
    dest = tmp_path / "home" / ".ssh"
    command = install_ssh(src, dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts", "config"):
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o600
    assert f"-i {dest / 'id_ed25519'}" in command
    assert "id_ed25519.pub" not in command
    assert f"UserKnownHostsFile={dest / 'known_hosts'}" in command
    assert "BatchMode=yes" in command
    assert stat.S_IMODE((src / "id_ed25519").stat().st_mode) == 0o644  # source untouched


def test_redaction() -> None:
    assert redact("fatal: https://bob:pw@host/x.git") == "fatal: https://***@host/x.git"
    assert strip_userinfo("https://bob:pw@host/x.git") == "https://host/x.git"
    assert strip_userinfo("ssh://git@host/x.git") == "ssh://git@host/x.git"
    assert strip_userinfo("git@github.com:o/r.git") == "git@github.com:o/r.git"


def test_ssl_verify_false_is_not_persisted(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url, ssl_verify="false")
    assert c.proc.returncode == 0, c.proc.stderr
    assert "http.sslVerify=false" in c.proc.stdout
    assert "sslverify" not in (c.repo / ".git" / "config").read_text().lower()


def test_results_written_where_env_points(tmp_path: Path, remote: Remote) -> None:
    c = clone(tmp_path, remote.url)
    assert c.proc.returncode == 0
    assert {p.name for p in c.results.iterdir()} == {"commit", "url"}
    assert len(c.result("commit")) == 40
    assert os.environ.get("TASKYARD_RESULT_COMMIT") is None


# ---- what may be cloned: the scheme allow-list and git's own protocol policy ---------------------
def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_file_urls_and_local_paths_need_allow_file(tmp_path: Path, remote: Remote) -> None:
    for url in (remote.url, str(remote.bare)):
        c = clone(tmp_path / "no", url, allow_file="false")
        assert_one_line_error(c, "error: repository url ")
        assert "is a local path or file:// URL; refused" in c.proc.stderr
        assert "set the allow-file param to true" in c.proc.stderr
        assert not (tmp_path / "no" / "ws" / "repo" / ".git").exists()  # refused before git ran
    path = clone(tmp_path / "path", str(remote.bare), allow_file="true")
    assert path.proc.returncode == 0, path.proc.stderr
    assert head(path.repo) == remote.head()
    assert "git protocols allowed: https, http, ssh, git, file" in path.proc.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ext::sh -c touch% {marker}", "uses git's ext:: transport; refused"),
        ("fd::17", "uses git's fd:: transport; refused"),
        ("foo::https://example.com/x.git", "uses git's foo:: transport; refused"),
        ("ftp://127.0.0.1/x.git", "scheme 'ftp' is not allowed (allowed: https, http, ssh, git)"),
        ("git+ssh://127.0.0.1/x.git", "scheme 'git+ssh' is not allowed"),
        ("-uhello", "looks like an option; refused"),
        ("--upload-pack=touch {marker}", "looks like an option; refused"),
        ("ssh://-oProxyCommand=touch%20{marker}/x.git", "has an option-like host; refused"),
        ("u@-oProxyCommand=id:x.git", "has an option-like host; refused"),
        ("https://example.com/x.git\nfoo", "contains control characters; refused"),
    ],
)
def test_unlisted_transports_and_option_like_urls_are_refused_in_one_line(
    tmp_path: Path, url: str, message: str
) -> None:
    marker = tmp_path / "pwned"
    c = clone(tmp_path, url.format(marker=marker))
    assert_one_line_error(c, "error: ")
    assert message in c.proc.stderr
    assert "Traceback" not in c.proc.stdout  # clone.log is stdout + stderr
    assert not marker.exists()


def test_option_like_revision_is_refused_in_one_line(tmp_path: Path, remote: Remote) -> None:
    marker = tmp_path / "pwned"
    c = clone(tmp_path, remote.url, revision=f"--upload-pack=touch {marker}")
    assert_one_line_error(c, "error: revision '--upload-pack=touch ")
    assert "looks like an option; refused" in c.proc.stderr
    assert not marker.exists()


def test_scp_like_and_listed_urls_are_classified_as_git_reads_them() -> None:
    assert url_scheme("git@github.com:acme/model.git", False) == "ssh"
    assert url_scheme("github.com:acme/model.git", False) == "ssh"
    assert url_scheme("ssh://git@github.com/acme/model.git", False) == "ssh"
    assert url_scheme("https://u:p@github.com/acme/model.git", False) == "https"
    assert url_scheme("HTTP://example.com/x.git", False) == "http"
    assert url_scheme("git://127.0.0.1:9418/x.git", False) == "git"
    assert url_scheme("file:///srv/x.git", True) == "file"
    assert url_scheme("./relative/x.git", True) == "file"
    assert url_scheme("/srv/a:b/x.git", True) == "file"  # a '/' before the ':' is a path
    with pytest.raises(StepError, match="refused"):
        url_scheme("/srv/x.git", False)


def hostile_git_env(tmp_path: Path, marker: Path) -> dict[str, str]:
    """An environment that lets every transport run and rewrites an http URL to ext::."""
    trap = f"ext::sh -c touch% {marker}% #"
    return {
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_0": "protocol.allow",
        "GIT_CONFIG_VALUE_0": "always",
        "GIT_CONFIG_KEY_1": "protocol.ext.allow",
        "GIT_CONFIG_VALUE_1": "always",
        "GIT_CONFIG_KEY_2": f"url.{trap}.insteadOf",
        "GIT_CONFIG_VALUE_2": "http://trap.invalid/",
        "GIT_ALLOW_PROTOCOL": "ext:http:https",
    }


def test_an_environment_allowing_ext_does_not_make_the_step_run_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    env = hostile_git_env(tmp_path, marker)
    # The danger is real: plain git with this environment runs the ext:: command.
    subprocess.run(
        ["git", "ls-remote", "http://trap.invalid/x.git"],
        env=git_env(**env),
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert marker.exists(), "the hostile environment did not enable ext:: (test is void)"
    marker.unlink()

    direct = clone(tmp_path / "direct", f"ext::sh -c touch% {marker}", env=env)
    assert_one_line_error(direct, "error: repository url 'ext::sh -c touch% ")
    assert not marker.exists()
    # An allowed URL that the environment rewrites to ext:: is stopped by git's own policy.
    rewritten = clone(tmp_path / "rewritten", "http://trap.invalid/x.git", env=env)
    assert_one_line_error(rewritten, "error: cannot clone http://trap.invalid/x.git: ")
    assert "transport 'ext' not allowed" in rewritten.proc.stderr
    assert not marker.exists()


def test_inline_credentials_reach_no_file_and_no_other_helper(tmp_path: Path) -> None:
    root = tmp_path / "served"
    app = Remote.create(root / "private", {"secret.py": "S = 1\n"})
    password = "inl1ne-pa55-" + os.urandom(4).hex()
    home = tmp_path / "user-home"
    home.mkdir()
    store = home / ".git-credentials"
    # The user's own helper would otherwise be asked first and be told to store the password.
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = store --file={store}\n")
    with GitHttpServer(root, user="u", password=password) as http:
        store.write_text(f"http://u:stale@127.0.0.1:{http.port}\n")
        url = http.url(app.bare).replace("://", f"://u:{password}@")
        c = clone(tmp_path, url, env={"HOME": str(home)}, depth="0", revision=app.head()[:8])
    assert c.proc.returncode == 0, c.proc.stdout + c.proc.stderr
    assert head(c.repo) == app.head()
    assert password not in c.proc.stdout + c.proc.stderr
    assert files_containing(tmp_path / "ws", password.encode()) == []
    assert files_containing(c.results, password.encode()) == []
    assert store.read_text() == f"http://u:stale@127.0.0.1:{http.port}\n"
    assert "credential." not in c.proc.stdout  # the helper config is not echoed


def test_a_submodule_cannot_reach_a_transport_the_clone_may_not_use(tmp_path: Path) -> None:
    root = tmp_path / "served"
    lib = Remote.create(root / "lib", {"lib.py": "X = 1\n"})
    app = Remote.create(root / "app", {"app.py": "print()\n"})
    app.add_submodule(lib, "vendor/lib")  # a file:// submodule of a git:// superproject
    with GitDaemon(root) as daemon:
        url = daemon.url(app.bare)
        # even with the environment allowing file:// (as tests/gitutil.py does for fixtures)
        c = clone(tmp_path, url, env=allow_file_protocol())
        allowed = clone(tmp_path / "ok", url, env=allow_file_protocol(), allow_file="true")
    assert_one_line_error(c, f"error: cannot check out HEAD of {url}: ")
    assert "transport 'file' not allowed" in c.proc.stdout + c.proc.stderr
    assert not (c.repo / "vendor" / "lib" / "lib.py").exists()
    assert allowed.proc.returncode == 0, allowed.proc.stderr
    assert (allowed.repo / "vendor" / "lib" / "lib.py").read_text() == "X = 1\n"
