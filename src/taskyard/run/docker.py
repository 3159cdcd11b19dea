"""``taskyard run --executor docker``: each task in its image, as a Tekton pod would run it.

Choices, and why:
- Paths are the same inside and out: every host folder a task needs (its workspaces, its
  results folder, the folder of a ``sqlite:///`` MLflow store, a ``file://`` git remote, the
  deployments folder) is bind-mounted at its own path, so ``layout`` is the subprocess one and
  results, records and MLflow artifact URIs mean the same thing on both sides.
- ``--user UID:GID`` of the invoking user: whatever a task writes in the workspace belongs to
  the user, who can read and delete it, and so can the next task (which runs as the same uid).
  ``HOME=/tmp`` because that uid has no home in the image.
- ``--network none`` unless the task declares ``network=True`` or was handed an ``http(s)://``
  URL (a remote MLflow server). Networked tasks get ``--network host``: the daemon may run
  with ``--bridge=none``, and the deploy task's model server must answer on the host's
  127.0.0.1 as it does under the subprocess executor. The server lives as long as the task's
  container: with ``keep-serving=true`` it stops when the deploy task ends (see images/README).
- ``--gpus all`` when the task requests GPUs and the daemon can hand them out (NVIDIA Container
  Toolkit); otherwise ``gpus()`` says 0 and the runner applies ``Resources.gpu_fallback``.
- ``--cap-drop ALL --security-opt no-new-privileges``, as the rendered Tekton steps'
  ``securityContext``.
- ``--init`` so SIGTERM reaches the step (PID 1 ignores it) and zombies are reaped; containers
  are named ``taskyard-<run>-<task>-<rand>``, labelled, removed (``--rm``), and stopped with
  ``docker kill`` when a timeout or Ctrl-C stops the task.
- The ``docker run`` client dies with the runner, as a subprocess step does: it gets SIGTERM
  from the kernel when the runner dies (``PR_SET_PDEATHSIG``, run/executor.py). An attached,
  non-TTY ``docker run`` proxies the signals it receives to the container ("--sig-proxy
  true: Proxy received signals to the process", the default; docs.docker.com/reference/cli/
  docker/container/run/), ``--init`` hands SIGTERM to the step, the step cleans up and exits,
  and ``--rm`` removes the container. A step that ignores SIGTERM keeps its container until
  someone runs ``docker rm -f`` (``running(run_id)`` lists them): with the runner gone, no one
  is left to escalate to SIGKILL.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

from taskyard.errors import RunError
from taskyard.home import deployments_dir, home
from taskyard.images import image_exists, require_docker
from taskyard.run.executor import Invocation, Layout, Process, die_with_parent, host_gpus

_URL = re.compile(r"^(sqlite:///|file://)(/\S+)$")
_HTTP = re.compile(r"^https?://", re.I)


class ContainerProcess:
    """A ``docker run`` client and the container it started; stopping reaches both."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, grace: float) -> None:
        self.popen = popen
        self.name = name
        self.grace = grace

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        # docker run proxies SIGTERM to the container (--init passes it on to the step); a
        # container that ignores it is killed by name after the grace period.
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        timer = threading.Timer(self.grace, self._kill)
        timer.daemon = True
        timer.start()

    def _kill(self) -> None:
        if self.popen.poll() is None:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()


class Finished:
    """A task that never started a container (missing image): its exit code, at once."""

    def __init__(self, code: int) -> None:
        self.code = code

    def wait(self, timeout: float | None = None) -> int | None:
        return self.code

    def stop(self) -> None:
        pass


class DockerExecutor:
    """Runs each step in its task image through the ``docker`` CLI (``DOCKER_HOST`` honoured)."""

    name = "docker"

    def __init__(self, grace: float = 10.0, user: str | None = None) -> None:
        require_docker("--executor docker: ")
        self.grace = grace
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self._images: set[str] = set()
        self._gpus: int | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Fail early, with one line, when no daemon answers."""
        proc = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
            raise RunError(
                f"--executor docker: no Docker daemon: {last}", "start dockerd or set DOCKER_HOST"
            )

    def gpus(self) -> int:
        with self._lock:
            if self._gpus is None:
                self._gpus = host_gpus() if self._gpu_runtime() else 0
            return self._gpus

    def _gpu_runtime(self) -> bool:
        """Whether ``--gpus`` can work here: an nvidia runtime or the toolkit's hook."""
        if shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-ctk"):
            return True
        proc = subprocess.run(
            ["docker", "info", "--format", "{{json .Runtimes}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.returncode == 0 and "nvidia" in proc.stdout

    def layout(self, workspaces: dict[str, Path | None], results_dir: Path) -> Layout:
        return Layout(
            workspaces={k: str(v) if v is not None else "" for k, v in workspaces.items()},
            results_dir=str(results_dir),
        )

    def start(self, inv: Invocation, log: BinaryIO) -> Process:
        if not self._have(inv.image):
            log.write(
                f"error: image {inv.image} is not in the Docker daemon; build it with "
                f"`taskyard images build` or pass -p image=… for this task\n".encode()
            )
            return Finished(125)
        argv, env = self.command(inv)
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # SIGTERM when the runner dies; the client proxies it to the container (see top).
            preexec_fn=die_with_parent(),
        )
        return ContainerProcess(popen, argv[argv.index("--name") + 1], self.grace)

    def command(self, inv: Invocation) -> tuple[list[str], dict[str, str]]:
        """The ``docker run`` argv and the env it forwards (values never appear on the argv)."""
        env = self.env(inv)
        argv = ["docker", "run", "--rm", "--init", "--name", container_name(inv)]
        # As Tekton's securityContext: no capabilities, no privilege escalation.
        argv += ["--user", self.user, "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        argv += ["--network", "host" if needs_network(inv) else "none", "--workdir", "/tmp"]
        argv += ["--label", f"taskyard.run={inv.cwd.name}", "--label", f"taskyard.task={inv.task}"]
        want = inv.spec.resources.gpu
        if want and self.gpus() >= want:
            argv += ["--gpus", "all"]
        for host_path, read_only in mounts(inv, env).items():
            argv += ["-v", f"{host_path}:{host_path}{':ro' if read_only else ''}"]
        for key in env:
            argv += ["-e", key]  # the value travels in the client's env, not on its argv
        argv += [inv.image, *inv.command, *inv.args]
        return argv, env

    def env(self, inv: Invocation) -> dict[str, str]:
        user = _user()
        env = {
            "HOME": "/tmp",
            "USER": user,  # getpass (MLflow's run user) without a passwd entry for the uid
            "LOGNAME": user,
            "PYTHONUNBUFFERED": "1",
            "TASKYARD_HOME": str(home().resolve()),
            # A step whose work outlives it (deploy's server) can tell the user it will not.
            "TASKYARD_CONTAINER": "1",
        }
        # What the subprocess executor inherits and a step reads: MLflow's own settings (a
        # tracking server, its credentials) and taskyard's debug switch.
        for key, value in os.environ.items():
            if key.startswith("MLFLOW_") or key == "TASKYARD_DEBUG":
                env[key] = value
        env.update(inv.env)
        return env

    def _have(self, image: str) -> bool:
        if image not in self._images and image_exists(image):
            self._images.add(image)
        return image in self._images


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "taskyard"


def container_name(inv: Invocation) -> str:
    raw = f"taskyard-{inv.cwd.name}-{inv.task}"
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", raw)[:120] + container_suffix()


def container_suffix() -> str:
    """What makes a container name unique when a task runs twice (retries, two runs)."""
    return "-" + secrets.token_hex(3)


def needs_network(inv: Invocation) -> bool:
    """Declared in the spec, or implied by an http(s) URL the task was given (MLflow server)."""
    if inv.spec.network:
        return True
    values = [*inv.params.values(), *inv.env.values()]
    return any(_HTTP.match(v.strip()) for v in values if v)


def mounts(inv: Invocation, env: dict[str, str] | None = None) -> dict[str, bool]:
    """Host folder -> read-only?, for everything the task reads or writes on the host."""
    wanted: dict[Path, bool] = {}
    read_only = {w.name: w.read_only for w in inv.spec.workspaces}
    for ws, path in inv.workspaces.items():
        if path is not None:
            wanted[Path(path).resolve()] = read_only.get(ws, False)
    if inv.results_dir.is_dir():
        wanted[inv.results_dir.resolve()] = False
    for value in [*inv.params.values(), *(env or inv.env).values(), *inv.args]:
        m = _URL.match(value.strip()) if value else None
        if not m:
            continue
        path = Path(m.group(2))
        if m.group(1) == "sqlite:///":  # the store and its artifacts folder beside it
            path.parent.mkdir(parents=True, exist_ok=True)
            wanted.setdefault(path.parent.resolve(), False)
        elif path.exists():  # a file:// git remote: read it, never change it
            wanted.setdefault(path.resolve(), True)
    deploys = deployments_dir()
    deploys.mkdir(parents=True, exist_ok=True)
    wanted.setdefault(deploys.resolve(), False)
    out: dict[str, bool] = {}
    for path in sorted(wanted, key=lambda p: len(p.parts)):
        covered = any(
            path.is_relative_to(Path(p)) and (not ro or wanted[path]) for p, ro in out.items()
        )
        if not covered:
            out[str(path)] = wanted[path]
    return out


def running(run_id: str) -> list[str]:
    """Names of the containers a run still has (a test's and a user's leak check)."""
    proc = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=taskyard.run={run_id}",
            "--format",
            "{{json .Names}}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
