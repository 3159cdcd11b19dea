"""The MLflow server a rendered file's run talks to, as every pod of a cluster run does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from taskyard.errors import RunError
from taskyard.home import mlflow_dir
from taskyard.run.executor import die_with_parent

MLFLOW_PARAM = "mlflow-tracking-uri"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over the taskyard home's store, artifacts proxied.

    ``--serve-artifacts`` (MLflow's default) sends artifact uploads and downloads through the
    server, so a container needs no path of the host -- as pods need no bucket credentials.
    One worker: the SQLite store takes one writer. Stopped by its process group.
    """

    def __init__(self, root: Path | None = None, timeout: float = 60.0) -> None:
        self.root = root or mlflow_dir()
        self.timeout = timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 -- lives with the server
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", (self.root / "artifacts").resolve().as_uri(),
            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(
                    f"mlflow server exited with {self.proc.returncode}",
                    f"see {self.root / 'server.log'}",
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RunError(
            f"mlflow server not healthy after {self.timeout:g}s", f"see {self.root / 'server.log'}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
