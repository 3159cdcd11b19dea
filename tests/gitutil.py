"""Real git fixtures for tests: bare remotes with history, `git daemon`, a smart-HTTP server.

Everything here runs the real ``git``; nothing is mocked. Servers bind 127.0.0.1, run in their
own process group and are stopped by that group's id.

    remote = Remote.create(tmp_path / "project", {"README.md": "hi\\n"})
    sha = remote.commit({"a.txt": "1\\n"}, "add a")
    remote.branch("dev"); remote.tag("v1", annotated=True)
    with GitDaemon(tmp_path) as daemon:          # serves every repo under tmp_path
        url = daemon.url(remote.bare)            # git://127.0.0.1:PORT/project.git
    with GitHttpServer(tmp_path, user="u", password="p") as http:
        url = http.url(remote.bare)              # http://127.0.0.1:PORT/project.git (basic auth)

Run as ``python tests/gitutil.py http ROOT USER PASSWORD`` it is the smart-HTTP server itself.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# A fixed identity and no user/system config, so fixtures behave the same on every machine.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV, **extra}
    return env


def git(*args: str | Path, cwd: Path | None = None) -> str:
    """Run git, fail loudly with its stderr, return stripped stdout."""
    proc = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=git_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def allow_file_protocol() -> dict[str, str]:
    """Env that lets submodules use file:// (git >= 2.38.1 forbids it by default)."""
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.file.allow",
        "GIT_CONFIG_VALUE_0": "always",
    }


@dataclass
class Remote:
    """A bare repository (the remote) and the working clone used to push commits into it."""

    bare: Path
    work: Path

    @classmethod
    def create(
        cls, path: Path, files: dict[str, str] | None = None, *, branch: str = "main"
    ) -> Remote:
        """Make bare ``<path>.git`` with one commit on ``branch``, worked on in ``<path>.work``."""
        bare = path.with_name(path.name + ".git")
        work = path.with_name(path.name + ".work")
        git("init", "-q", "--bare", "-b", branch, bare)
        git("init", "-q", "-b", branch, work)
        git("remote", "add", "origin", bare, cwd=work)
        remote = cls(bare=bare, work=work)
        remote.commit(files or {"README.md": f"# {path.name}\n"}, "initial commit")
        return remote

    @property
    def url(self) -> str:
        return self.bare.resolve().as_uri()

    def commit(self, files: dict[str, str], message: str, *, branch: str | None = None) -> str:
        """Write files, commit and push (to ``branch`` or the current one); return the SHA."""
        if branch:
            git("checkout", "-q", "-B", branch, cwd=self.work)
        for name, text in files.items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        self.push()
        return self.head()

    def push(self) -> None:
        git("push", "-q", "--follow-tags", "origin", "HEAD", cwd=self.work)

    def head(self, rev: str = "HEAD") -> str:
        return git("rev-parse", f"{rev}^{{commit}}", cwd=self.work)

    def checkout(self, branch: str) -> None:
        git("checkout", "-q", branch, cwd=self.work)

    def branch(self, name: str, start: str = "HEAD") -> str:
        """Create ``name`` at ``start`` on the remote; return its SHA."""
        git("branch", "-f", name, start, cwd=self.work)
        git("push", "-q", "-f", "origin", f"{name}:refs/heads/{name}", cwd=self.work)
        return self.head(name)

    def tag(self, name: str, rev: str = "HEAD", *, annotated: bool = True) -> str:
        """Tag ``rev`` on the remote; return the tagged commit's SHA."""
        extra = ["-a", "-m", f"release {name}"] if annotated else []
        git("tag", "-f", *extra, name, rev, cwd=self.work)
        git("push", "-q", "-f", "origin", f"refs/tags/{name}", cwd=self.work)
        return self.head(name)

    def add_submodule(self, sub: Remote | str, path: str) -> str:
        """Add ``sub`` (a Remote or a URL) as a submodule at ``path``; commit; return SHA."""
        url = sub.url if isinstance(sub, Remote) else sub
        subprocess.run(
            ["git", "submodule", "add", "-q", url, path],
            cwd=self.work,
            env=git_env(**allow_file_protocol()),
            check=True,
            capture_output=True,
        )
        return self.commit({}, f"add submodule {path}")

    def commits(self, rev: str = "HEAD") -> int:
        return int(git("rev-list", "--count", rev, cwd=self.work))


def commit_count(repo: Path) -> int:
    """Commits reachable from HEAD in a clone (1 for a depth-1 shallow clone)."""
    return int(git("rev-list", "--count", "HEAD", cwd=repo))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout}s")


def stop_process_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop a server started with ``start_new_session=True`` by its own process group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class _Server:
    """A subprocess server in its own session, usable as a context manager."""

    scheme = ""
    proc: subprocess.Popen | None = None
    port = 0

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return git_env()

    def start(self, attempts: int = 3) -> _Server:
        last: Exception | None = None
        for _ in range(attempts):  # a free port can be taken between probe and bind: retry
            port = free_port()
            proc = subprocess.Popen(
                self._command(port),
                env=self._env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                _wait_for_port(proc, port, timeout=10)
            except RuntimeError as e:
                stop_process_group(proc)
                last = e
                continue
            self.proc, self.port = proc, port
            return self
        raise RuntimeError(f"could not start {type(self).__name__}: {last}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def url(self, repo: Path | str) -> str:
        rel = Path(repo).resolve().relative_to(self.root).as_posix()
        return f"{self.scheme}://127.0.0.1:{self.port}/{rel}"

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GitDaemon(_Server):
    """``git daemon`` exporting every repository under ``root`` over git:// (read-only)."""

    scheme = "git"

    def _command(self, port: int) -> list[str]:
        return [
            "git",
            "daemon",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={self.root}",
            "--export-all",
            "--reuseaddr",
            "--informative-errors",
            str(self.root),
        ]


class GitHttpServer(_Server):
    """Smart HTTP (``git http-backend``) for every repo under ``root``, behind basic auth."""

    scheme = "http"

    def __init__(self, root: Path, user: str = "user", password: str = "secret") -> None:
        super().__init__(root)
        self.user, self.password = user, password

    def _command(self, port: int) -> list[str]:
        return [sys.executable, __file__, "http", str(self.root), str(port), self.user]

    def _env(self) -> dict[str, str]:
        # The password travels by env, not argv, so it never shows in a process list.
        return git_env(GITUTIL_HTTP_PASSWORD=self.password)


def _http_backend_app(root: str, user: str, password: str):  # pragma: no cover - in a child
    """A WSGI app running ``git http-backend`` as CGI for authenticated requests."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def app(environ, start_response) -> Iterable[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != expected:
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")],
            )
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {k: v for k, v in environ.items() if k.startswith("HTTP_") and isinstance(v, str)}
        env.update(
            PATH=os.environ.get("PATH", ""),
            GIT_PROJECT_ROOT=root,
            GIT_HTTP_EXPORT_ALL="1",
            GIT_CONFIG_NOSYSTEM="1",
            REQUEST_METHOD=environ["REQUEST_METHOD"],
            PATH_INFO=environ.get("PATH_INFO", ""),
            QUERY_STRING=environ.get("QUERY_STRING", ""),
            CONTENT_TYPE=environ.get("CONTENT_TYPE", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_USER=user,
            REMOTE_ADDR=environ.get("REMOTE_ADDR", "127.0.0.1"),
            GIT_PROTOCOL=environ.get("HTTP_GIT_PROTOCOL", ""),
        )
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.stdout.partition(b"\n\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        start_response(status, headers)
        return [payload]

    return app


def _serve_http(root: str, port: int, user: str) -> None:  # pragma: no cover - in a child
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    app = _http_backend_app(root, user, os.environ.get("GITUTIL_HTTP_PASSWORD", ""))
    with make_server("127.0.0.1", port, app, handler_class=Quiet) as server:
        server.serve_forever()


if __name__ == "__main__":  # pragma: no cover - the HTTP server's own process
    if len(sys.argv) == 5 and sys.argv[1] == "http":
        _serve_http(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: gitutil.py http ROOT PORT USER  (password in $GITUTIL_HTTP_PASSWORD)")
