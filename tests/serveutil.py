"""Helpers for the listener tests: configs, an in-process listener, a `taskyard serve` process.

Servers bind 127.0.0.1 on a free port (``--port 0``) and run in their own process group,
stopped by that group's id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from taskyard.serve.client import Client

SECRET = "It's a Secret to Everybody"
SECRET_ENV = "TASKYARD_TEST_WEBHOOK_SECRET"


def write_config(path: Path, **overrides: Any) -> Path:
    """A serve config: one GitHub and one GitLab repo on the test secret (env var)."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "repos": [
            {
                "name": "acme/model",
                "provider": "github",
                "secret": {"env": SECRET_ENV},
                "branches": ["main", "release/*"],
                "pipelines": ["ci"],
            },
            {
                "name": "mike/diaspora",
                "provider": "gitlab",
                "secret": {"env": SECRET_ENV},
                "branches": ["master"],
                "pipelines": ["ci", "train-eval-deploy"],
            },
        ],
        "workers": 2,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ServeProcess:
    """``python -m taskyard.serve`` (what ``taskyard serve`` runs) as a real subprocess."""

    def __init__(self, config: Path, state: Path, env: dict[str, str], *extra: str) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "taskyard.serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--state-dir",
            str(state),
            *extra,
        ]
        self.env = {**os.environ, SECRET_ENV: SECRET, **env}
        self.log = state.parent / f"{state.name}-serve.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> ServeProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if "listening on " not in line:
            self.kill()
            raise RuntimeError(f"taskyard serve did not start: {line!r}\n{self.log.read_text()}")
        self.url = line.rsplit("listening on ", 1)[1].strip()
        return self

    def client(self) -> Client:
        return Client(self.url)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole group: the listener and any run it started."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def running_listener(config_path: Path, state: Path, submitter=None, **listen: Any):
    """An in-process :class:`Listener` on 127.0.0.1:0 (``listen`` overrides by field name),
    stopped on exit. The caller sets the secret's env var."""
    from taskyard.serve import config as cfg
    from taskyard.serve.app import Listener
    from taskyard.serve.submit import NoopSubmitter

    config = cfg.load(config_path)
    config = config.model_copy(update={"listen": config.listen.model_copy(update=listen)})
    running = Listener(config, state, submitter or NoopSubmitter())
    running.start()
    try:
        yield running
    finally:
        running.stop(grace=5)


class Records(logging.Handler):
    """Collects the listener's (and uvicorn's) log records during a test."""

    NAMES = ("taskyard.serve", "uvicorn")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        for name in self.NAMES:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)

    def clear(self) -> None:
        self.records.clear()

    def lines(self) -> list[str]:
        """Each record as the JSON line ``taskyard serve`` would write."""
        from taskyard.serve.logs import JsonFormatter

        fmt = JsonFormatter()
        return [fmt.format(r) for r in self.records]
