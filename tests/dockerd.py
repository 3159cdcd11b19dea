"""A private Docker daemon for the image tests: Debian's ``dockerd``, started and stopped here.

It gets its own data-root, exec-root and socket, and ``--iptables=false --bridge=none`` so it
touches nothing on the host: containers have ``--network none`` or ``--network host`` only,
which is all the docker executor uses. The data-root lives in the taskyard image cache (kept
between sessions so built layers are reused) unless another test session holds it, in which
case this one gets a throwaway data-root. The daemon and its containerd are stopped by their
own process group.

Where dockerd is missing or we are not root, :func:`unavailable` says why: tests skip with
that reason on a user's machine and fail in CI (``CI=true``), where ``make test`` installs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from taskyard.images import cache_dir


def unavailable() -> str | None:
    """Why no private daemon can start here, or None."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (make test installs Debian's docker.io as root)"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if os.geteuid() != 0:
        return "starting a private dockerd needs root"
    return None


def socket_group() -> int | None:
    """The ``docker`` group (Debian's package creates it): a non-root test user joins it."""
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        return None


class Dockerd:
    def __init__(self) -> None:
        # exec-root holds containerd's sockets: keep the path short (108-byte socket paths).
        self.root = Path(tempfile.mkdtemp(prefix="tyd-", dir="/tmp"))
        self.root.chmod(0o711)  # a non-root test user must reach the socket inside
        self.socket = self.root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None
        self.data_root = self._claim_data_root()

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def _claim_data_root(self) -> Path:
        shared = cache_dir() / "dockerd"
        shared.mkdir(parents=True, exist_ok=True)
        fd = os.open(shared / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self.root / "data"  # another session's daemon owns the shared one
        self._lock = fd
        return shared / "data"

    def start(self, timeout: float = 60) -> Dockerd:
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - closed with the daemon
        argv = [
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--host={self.host}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ]
        gid = socket_group()
        if gid is not None:
            argv.append(f"--group={gid}")
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}: {self.log_tail()}")
            probe = subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env=self.env(),
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.root / "dockerd.log").read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Containers of a failed test first, so the daemon's shutdown is quick.
            subprocess.run(
                "docker ps -aq | xargs -r docker rm -f",
                shell=True,
                env=self.env(),
                capture_output=True,
                check=False,
                timeout=60,
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        shutil.rmtree(self.root, ignore_errors=True)
