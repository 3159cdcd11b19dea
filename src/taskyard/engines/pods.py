"""Where a rendered file's containers run: Docker (each in its image) or host subprocesses.

Both engines' emulations (engines/tekton.py, engines/argo.py) reduce a pod to a list of
:class:`Container` s run in order, with folders mounted at the paths the YAML names. A
:class:`Pods` backend starts one, and after it exits copies out the files the engine reads
from the container (Argo's ``outputs.parameters[].valueFrom.path``: the Argo executor reads
them from the container's filesystem after ``main`` exits, docs/workflow-executors.md).

- **docker**: ``docker run`` with the container's image, command, args, env, ``workingDir``,
  the pod's and container's ``securityContext`` (``runAsUser``/``runAsGroup`` as ``--user``,
  ``capabilities.drop`` as ``--cap-drop``, ``allowPrivilegeEscalation: false`` as
  ``no-new-privileges``, ``readOnlyRootFilesystem`` as ``--read-only``) and ``--network host``
  (a pod has a network, and a local MLflow server answers on the host's 127.0.0.1). The
  container is kept until its outputs are copied out (``docker cp``), then removed.
  ``runAsNonRoot`` is checked as the kubelet does: a container that would run as uid 0 fails
  with ``CreateContainerConfigError`` instead of starting.
- **subprocess**: the same argv on the host, for the catalog's own images only (their code is
  this package). Every mount path and output folder is mapped to a host folder by prefix in
  command, args, env and ``workingDir`` -- the one liberty taken, because a host process
  cannot see ``/workspace``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from taskyard.engines._common import shared_folder
from taskyard.errors import RunError
from taskyard.run.docker import ContainerProcess, Finished, container_suffix
from taskyard.run.executor import Process, SubprocessProcess, die_with_parent, host_gpus


@dataclass
class Mount:
    host: Path
    path: str  # inside the container
    read_only: bool = False


@dataclass
class Container:
    """One container of a pod, fully substituted (no ``$(...)`` / ``{{...}}`` left)."""

    name: str  # unique in the run: "<task>-<step>"
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    working_dir: str = ""
    user: int | None = None
    group: int | None = None
    run_as_non_root: bool = False
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    read_only_root: bool = False
    mounts: list[Mount] = field(default_factory=list)
    gpus: int = 0
    outputs: dict[str, str] = field(default_factory=dict)  # key -> absolute container path
    # Tekton's ``script``: written to a file the container runs (docs/tasks.md).
    script: str | None = None
    seccomp: str = "RuntimeDefault"  # Docker's default profile is RuntimeDefault


SCRIPTS = "/tekton/scripts"


def _script_file(folder: Path, body: str) -> Path:
    shared_folder(folder)
    path = folder / "script"
    path.write_text(body)
    path.chmod(0o755)
    return path


class Pods(Protocol):
    name: str

    def start(self, c: Container, log: BinaryIO) -> Process: ...

    def collect(self, c: Container, proc: Process) -> dict[str, str | None]:
        """The output files' text (None when missing); releases the container."""
        ...

    def gpus(self) -> int: ...


class DockerPods:
    """Containers through the ``docker`` CLI (``DOCKER_HOST`` honoured)."""

    name = "docker"

    def __init__(self, run_id: str, scratch: Path, grace: float = 10.0) -> None:
        from taskyard.images import require_docker

        require_docker("--executor docker: ")
        self.run_id = run_id
        self.scratch = scratch
        self.grace = grace
        self._users: dict[str, str] = {}
        self.images: set[str] = set()  # the images a container started from

    def gpus(self) -> int:
        return host_gpus() if shutil.which("nvidia-ctk") else 0

    def image_user(self, image: str) -> str | None:
        """The image's ``USER`` ("" = root), or None when the daemon does not have the image."""
        if image not in self._users:
            proc = subprocess.run(
                ["docker", "image", "inspect", "--format", "{{.Config.User}}", image],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                return None
            self._users[image] = proc.stdout.strip()
        return self._users[image]

    def argv(self, c: Container, name: str) -> list[str]:
        argv = ["docker", "run", "--init", "--name", name, "--network", "host"]
        argv += ["--label", f"taskyard.run={self.run_id}", "--label", f"taskyard.task={c.name}"]
        if c.user is not None or c.group is not None:
            # No runAsGroup: the uid's primary group, as the runtime picks it (plain --user uid).
            uid = c.user if c.user is not None else (self._users.get(c.image) or "0")
            argv += ["--user", f"{uid}" + (f":{c.group}" if c.group is not None else "")]
        if c.seccomp == "Unconfined":
            argv += ["--security-opt", "seccomp=unconfined"]
        for cap in c.cap_drop:
            argv += ["--cap-drop", cap]
        if c.no_new_privileges:
            argv += ["--security-opt", "no-new-privileges"]
        if c.read_only_root:
            argv += ["--read-only"]
        if c.working_dir:
            argv += ["--workdir", c.working_dir]
        if c.gpus and self.gpus():
            argv += ["--gpus", "all"]
        remotes = local_remotes(c)
        for m in [*c.mounts, *remotes]:
            argv += ["-v", f"{m.host}:{m.path}{':ro' if m.read_only else ''}"]
        for key in c.env:
            argv += ["-e", key]  # values travel in the client's env, never on its argv
        if c.command:
            argv += ["--entrypoint", c.command[0]]
            return [*argv, c.image, *c.command[1:], *c.args]
        return [*argv, c.image, *c.args]

    def start(self, c: Container, log: BinaryIO) -> Process:
        user = self.image_user(c.image)
        if user is None:
            log.write(
                f"error: ErrImagePull: image {c.image} is not in the Docker daemon (build it "
                "with `taskyard images build`, or pass the pipeline's image param)\n".encode()
            )
            return Finished(125)
        refusal = c.run_as_non_root and _non_root_refusal(c.user, user)
        if refusal:
            log.write(f"error: CreateContainerConfigError: {refusal}\n".encode())
            return Finished(126)
        self.images.add(c.image)
        if c.script is not None:
            folder = self.scratch / c.name / "script"
            _script_file(folder, c.script)
            c = replace(
                c,
                command=[f"{SCRIPTS}/script"],
                mounts=[*c.mounts, Mount(folder, SCRIPTS, True)],
            )
        remotes = local_remotes(c)
        if remotes:
            # git reads safe.directory only from protected config, and clears GIT_CONFIG_* for
            # a local transport's upload-pack: a global config file is what reaches it.
            folder = shared_folder(self.scratch / c.name / "gitconfig")
            lines = "".join(f"\tdirectory = {m.path}\n" for m in remotes)
            (folder / "config").write_text(f"[safe]\n{lines}")
            (folder / "config").chmod(0o644)
            c = replace(
                c,
                env={**c.env, "GIT_CONFIG_GLOBAL": f"{GITCONFIG}/config"},
                mounts=[*c.mounts, Mount(folder, GITCONFIG, True)],
            )
        name = f"taskyard-{self.run_id}-{c.name}"[:110] + container_suffix()
        popen = subprocess.Popen(
            self.argv(c, name),
            env={**os.environ, **c.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        return ContainerProcess(popen, name, self.grace)

    def collect(self, c: Container, proc: Process) -> dict[str, str | None]:
        name = getattr(proc, "name", None)
        if name is None:
            return dict.fromkeys(c.outputs)
        out: dict[str, str | None] = {}
        try:
            with tempfile.TemporaryDirectory(prefix="taskyard-cp-") as tmp:
                for key, path in c.outputs.items():
                    dest = Path(tmp) / key
                    cp = subprocess.run(
                        ["docker", "cp", f"{name}:{path}", str(dest)],
                        capture_output=True,
                        check=False,
                    )
                    ok = cp.returncode == 0 and dest.is_file()
                    out[key] = dest.read_bytes().decode(errors="replace") if ok else None
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        return out


def local_remotes(c: Container) -> list[Mount]:
    """``file://`` paths the container is handed (a local git remote), mounted read-only.

    The one liberty the docker backend takes: a cluster could not read such a URL at all,
    but a local run of a local repository should not need a git server. The repository
    belongs to the host user, not to the container's ``runAsUser``, so git is told to trust
    that one path (``safe.directory`` in a ``GIT_CONFIG_GLOBAL`` file; see
    :meth:`DockerPods.start`).
    """
    out = []
    for value in [*c.args, *c.env.values()]:
        m = _FILE_URL.match(value.strip()) if value else None
        if m and Path(m.group(1)).exists() and not any(x.path == m.group(1) for x in out):
            out.append(Mount(Path(m.group(1)), m.group(1), True))
    return out


GITCONFIG = "/tmp/taskyard-gitconfig"
_FILE_URL = re.compile(r"^file://(/\S+)$")


def _non_root_refusal(uid: int | None, image_user: str) -> str:
    """Why the kubelet refuses a ``runAsNonRoot`` container ("" when it starts it)."""
    if uid is not None:
        return "container has runAsNonRoot and image will run as root" if uid == 0 else ""
    name = image_user.split(":")[0]
    if name in ("", "0", "root"):
        return "container has runAsNonRoot and image will run as root"
    if not name.isdigit():  # the kubelet cannot tell a name's uid (kuberuntime_container.go)
        return f"container has runAsNonRoot and image has non-numeric user ({name})"
    return ""


class HostPods:
    """The catalog's own steps as host subprocesses, container paths mapped to host folders."""

    name = "subprocess"

    def __init__(self, scratch: Path, grace: float = 10.0) -> None:
        self.scratch = scratch
        self.grace = grace
        self.bin_dir = os.path.dirname(sys.executable)
        self._maps: dict[str, list[tuple[str, str]]] = {}

    def gpus(self) -> int:
        return host_gpus()

    def _mapping(self, c: Container) -> list[tuple[str, str]]:
        pairs = [(m.path.rstrip("/"), str(m.host)) for m in c.mounts]
        outputs = self.scratch / c.name / "outputs"
        if outputs.exists():
            shutil.rmtree(outputs)  # a retry must not read the last attempt's files
        for path in c.outputs.values():
            parent = str(PurePosixPath(path).parent)
            if any(parent == p or parent.startswith(p + "/") for p, _ in pairs):
                continue
            if parent == "/":  # map the file itself, never the whole root
                shared_folder(outputs)
                pairs.append((path, str(outputs / PurePosixPath(path).name)))
                continue
            host = outputs / parent.strip("/").replace("/", "_")
            host.mkdir(parents=True, exist_ok=True)
            pairs.append((parent, str(host)))
        # Longest container path first, so /workspace/source/x is not caught by /workspace.
        return sorted(pairs, key=lambda p: -len(p[0]))

    def host_path(self, mapping: list[tuple[str, str]], text: str) -> str:
        """Every container path in ``text`` (a whole path, not part of a longer name) mapped."""
        if not mapping:
            return text
        alternatives = "|".join(re.escape(inside) for inside, _ in mapping)
        hosts = dict(mapping)
        pattern = re.compile(rf"(?<![\w.-])({alternatives})(?=/|$|[\s'\":;,)}}])")
        return pattern.sub(lambda m: hosts[m.group(1)], text)

    def start(self, c: Container, log: BinaryIO) -> Process:
        from taskyard.images import catalog_images

        base = c.image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
        if base not in catalog_images():
            raise RunError(
                f"container {c.name!r}: image {c.image} is not one of the catalog's images",
                "the subprocess executor runs only taskyard's own steps; use --executor docker",
            )
        mapping = self._mapping(c)
        self._maps[c.name] = mapping
        command = c.command
        if c.script is not None:
            script = _script_file(
                self.scratch / c.name / "script", self.host_path(mapping, c.script)
            )
            command = [str(script)]
        argv = [self.host_path(mapping, a) for a in [*command, *c.args]]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(os.environ)
        env.update({k: self.host_path(mapping, v) for k, v in c.env.items()})
        env["PATH"] = self.bin_dir + os.pathsep + env.get("PATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        cwd = self.host_path(mapping, c.working_dir) if c.working_dir else str(self.scratch)
        if not Path(cwd).is_dir():
            cwd = str(self.scratch)
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        return SubprocessProcess(popen, self.grace)

    def collect(self, c: Container, proc: Process) -> dict[str, str | None]:
        mapping = self._maps.pop(c.name, [])
        out: dict[str, str | None] = {}
        for key, path in c.outputs.items():
            host = Path(self.host_path(mapping, path))
            text = None
            with contextlib.suppress(OSError):
                text = host.read_bytes().decode(errors="replace")
            out[key] = text
        return out
