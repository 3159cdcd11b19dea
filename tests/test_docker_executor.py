"""``taskyard run --executor docker`` against a real, private dockerd and images built here.

The daemon is Debian's dockerd started by the fixture (tests/dockerd.py); the base image comes
from debootstrap + docker import, as on any machine without a registry; the git, steps and
train images are built with ``taskyard images build``. Then the main job runs in them, and the
executor's promises are checked from real files and real sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.demo import publish
from taskyard.images import DEBOOTSTRAP_BASE
from taskyard.run.docker import running
from tests.cliutil import latest_run, taskyard
from tests.dockerd import Dockerd, socket_group, unavailable
from tests.mlflowutil import migrated_store

# One file, so `--dist loadfile` keeps every test here on the worker that owns the daemon.
pytestmark = pytest.mark.slow

PIPELINES = str(Path(__file__).with_name("docker_pipelines.py"))
REPO_ROOT = Path(__file__).resolve().parents[1]
TASKYARD_BIN = str(Path(sys.executable).parent / "taskyard")
TEST_UID = 4242  # an ordinary user with no passwd entry, as a CI runner's often is


@pytest.fixture(scope="session")
def daemon() -> Iterator[Dockerd]:
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the docker tests: {reason}")
        pytest.skip(reason)
    d = Dockerd().start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def images(daemon: Dockerd) -> list[str]:
    """git, steps and train, built from images/ on a debootstrap base, then serve FROM train
    (train-gpu is not built)."""
    proc = taskyard("images", "build", "--debootstrap", env=daemon.env(), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tags = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert tags == [
        "ghcr.io/taskyard/git:0.1.0",
        "ghcr.io/taskyard/steps:0.1.0",
        "ghcr.io/taskyard/train:0.1.0",
        "ghcr.io/taskyard/serve:0.1.0",
    ]
    return tags


@pytest.fixture
def docker_env(daemon: Dockerd, monkeypatch: pytest.MonkeyPatch) -> Dockerd:
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    return daemon


def test_images_are_labelled_non_root_and_report_their_digests(
    images: list[str], docker_env: Dockerd
) -> None:
    import json

    for ref in images:
        data = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", ref], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        labels = data["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == "0.1.0"
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert len(labels["org.opencontainers.image.revision"]) == 40
        assert data["Config"]["User"] == "65532:65532"
    digests = taskyard("images", "digests")
    assert digests.returncode == 0, digests.stderr
    rows = [line.split("\t") for line in digests.stdout.splitlines()]
    assert [r[0] for r in rows] == ["git", "steps", "train", "serve"]
    assert all(r[2].startswith("sha256:") for r in rows)


@pytest.mark.usefixtures("images")
def test_main_job_in_docker_matches_the_subprocess_executor(
    docker_env: Dockerd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url, commit = publish(root=tmp_path / "remote")
    outcomes = {}
    for executor in ("docker", "subprocess"):
        home = tmp_path / executor
        home.mkdir()
        migrated_store(home, monkeypatch, tmp_path_factory)
        proc = taskyard(
            "run",
            "train-eval-deploy",
            "--executor",
            executor,
            "-p",
            f"repo-url={url}",
            "-p",
            "allow-file-url=true",
            "-p",
            "keep-serving=false",
        )
        assert proc.returncode == 0, f"{executor}:\n{proc.stdout}\n{proc.stderr}"
        run = latest_run()
        assert run.executor == executor
        assert {t.state for t in run.tasks.values()} == {"Succeeded"}
        outcomes[executor] = run.results
        if executor == "docker":
            assert running(run.id) == []  # every container was removed
            # The runner's user owns what the tasks wrote: they ran as its uid, not as 65532.
            for path in (run.path / "workspaces" / "source").rglob("*"):
                assert path.lstat().st_uid == os.getuid(), path
    docker, local = outcomes["docker"], outcomes["subprocess"]
    assert docker["commit"] == local["commit"] == commit
    for key in ("tests-passed", "metric-name", "candidate-score", "promote", "model-version"):
        assert docker[key] == local[key], key
    assert docker["promote"] == "true"
    assert docker["model-version"] == "1"
    assert docker["smoke-prediction"] == local["smoke-prediction"]
    assert docker["smoke-prediction"].startswith('{"predictions": [')


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that accepts and closes connections."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.mark.usefixtures("images")
def test_a_task_without_network_cannot_reach_the_host(
    docker_env: Dockerd, loopback_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    proc = taskyard(
        "run", f"{PIPELINES}:network", "--executor", "docker", "-p", f"port={loopback_server}"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = latest_run()
    assert run.tasks["online"].results["verdict"] == "reached"  # network=True: --network host
    offline = run.tasks["offline"].results["verdict"]
    assert offline.startswith("blocked: ")  # --network none: only its own loopback
    log = (run.path / "logs" / "offline.log").read_text()
    assert "blocked" in log


@pytest.mark.usefixtures("images")
def test_workspace_files_belong_to_the_invoking_user(docker_env: Dockerd) -> None:
    """Run as an ordinary uid: both tasks write, the second reads the first's files, and the
    user can read and delete everything afterwards."""
    home = Path(tempfile.mkdtemp(prefix="taskyard-uid-"))
    try:
        os.chown(home, TEST_UID, TEST_UID)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "TASKYARD_HOME": str(home / "taskyard"),
            "DOCKER_HOST": docker_env.host,
            "PYTHONPATH": str(Path(__file__).parents[1]),
        }
        groups = [str(g) for g in (socket_group(),) if g is not None]
        setpriv = ["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_UID}"]
        setpriv += [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
        proc = subprocess.run(
            [
                *setpriv,
                sys.executable,
                "-m",
                "taskyard.cli",
                "run",
                f"{PIPELINES}:handoff",
                "--executor",
                "docker",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = latest_run(home / "taskyard")
        handoff = run.path / "workspaces" / "source" / "handoff"
        assert (handoff / "first.txt").read_text() == "from write\nseen by read\n"
        assert (handoff / "second.txt").read_text() == "FROM WRITE\n"
        for path in [handoff, *handoff.iterdir()]:
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (TEST_UID, TEST_UID), path
        rm = subprocess.run(
            [*setpriv, "rm", "-r", str(run.path / "workspaces")], capture_output=True, text=True
        )
        assert rm.returncode == 0, rm.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.usefixtures("images")
def test_a_timeout_removes_a_container_that_ignores_sigterm(
    docker_env: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    proc = taskyard("run", f"{PIPELINES}:stubborn", "--executor", "docker")
    assert proc.returncode == 1
    run = latest_run()
    assert run.tasks["sleep"].state == "Failed"
    assert "timed out" in run.tasks["sleep"].reason
    assert running(run.id) == []


@pytest.mark.usefixtures("images")
def test_a_missing_image_fails_the_task_with_one_line(
    docker_env: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    proc = taskyard(
        "run",
        f"{PIPELINES}:network",
        "--executor",
        "docker",
        "-p",
        "port=9",
        "-p",
        "image=ghcr.io/taskyard/absent:0.0.0",
    )
    assert proc.returncode == 1
    run = latest_run()
    reason = run.tasks["offline"].reason
    assert "ghcr.io/taskyard/absent:0.0.0 is not in the Docker daemon" in reason
    assert "taskyard images build" in reason


SLEEPY_PIPELINE = f"""
from taskyard.spec import PipelineSpec, PipelineTask, TaskSpec

SLEEP = TaskSpec(
    name="sleep",
    display_name="sleep",
    description="Sleeps for a minute in the base image.",
    image={DEBOOTSTRAP_BASE!r},
    command=("sleep", "60"),
)
PIPELINE = PipelineSpec(
    name="docker-sleepy",
    display_name="docker-sleepy",
    description="one long containerised task",
    tasks=(PipelineTask(name="sleep", task=SLEEP),),
)
"""


def _running_containers(run_id: str, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        ["docker", "ps", "--filter", f"label=taskyard.run={run_id}", "--format", "{{.Names}}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.split()


@pytest.mark.usefixtures("images")  # the debootstrap base they are built on runs `sleep`
def test_sigkill_of_the_runner_stops_and_removes_the_container(
    daemon: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``docker run`` client gets SIGTERM when the runner dies (parent-death signal),
    proxies it to the container (sig-proxy, on by default), ``--init`` hands it to the step,
    and ``--rm`` removes the container."""
    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    pipeline = tmp_path / "docker_sleepy.py"
    pipeline.write_text(SLEEPY_PIPELINE)
    env = {**daemon.env(), "TASKYARD_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    runner = subprocess.Popen(
        [TASKYARD_BIN, "run", "--executor", "docker", f"{pipeline}:PIPELINE"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        runs = tmp_path / "home" / "runs"
        deadline = time.monotonic() + 120
        names: list[str] = []
        run_id = ""
        while not names and time.monotonic() < deadline:
            ids = [p.name for p in runs.iterdir()] if runs.is_dir() else []
            if ids:
                run_id = ids[0]
                names = _running_containers(run_id, env)
            time.sleep(0.2)
        assert names, "the task's container never started"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while running(run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running(run_id) == [], "the container outlived its runner"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    shown = subprocess.run(
        [TASKYARD_BIN, "runs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Abandoned" in shown.stdout
    record = json.loads((runs / run_id / "run.json").read_text())
    assert record["status"] == "Abandoned"


@pytest.mark.usefixtures("images")
def test_the_project_image_builds_from_the_train_image(docker_env: Dockerd, tmp_path: Path) -> None:
    """``taskyard images build --project``'s library side: FROM the catalog's train image,
    the project's pins baked in, the project env switched off, non-root."""
    from taskyard import images as catalog_images
    from tests.test_project_env_e2e import PIN, make_project

    project = make_project(tmp_path / "fare", {"requirements.txt": f"{PIN}\n"})
    ref = catalog_images.build_project_image(project, tag="taskyard-test/train-fare:1")
    probe = (
        "import os, six, sys, taskyard, mlflow; "
        "print(six.__version__, sys.prefix, os.environ['TASKYARD_PROJECT_ENV'], os.getuid())"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", ref, "python", "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.16.0", catalog_images.PROJECT_ENV_DIR, "off", "65532"]
    catalog_images.docker("image", "rm", ref, check=False)


# ---- the rendered YAML itself (issue 12): `taskyard run FILE.yaml --executor docker` ---------
CI_REGISTRY = "localhost/taskyard-ci"
TEKTON_FILE = REPO_ROOT / "pipelines" / "train-eval-deploy" / "0.1" / "train-eval-deploy.yaml"
ARGO_FILE = REPO_ROOT / "hera" / "train-eval-deploy.yaml"
OUTCOME = ("commit", "tests-passed", "metric-name", "candidate-score", "promote", "promoted")
OUTCOME += ("model-version", "smoke-prediction")


@pytest.fixture
def ci_images(images: list[str], docker_env: Dockerd) -> Iterator[dict[str, str]]:
    """The images under another registry, and the defaults hidden meanwhile: a render that does
    not pass its image params to a task then pulls a tag that is not there, and fails."""
    moved = {}
    for ref in images:
        name = ref.rsplit("/", 1)[1]  # git:0.1.0
        moved[ref] = f"{CI_REGISTRY}/{name}"
        subprocess.run(["docker", "tag", ref, moved[ref]], check=True, capture_output=True)
        subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
    try:
        yield {f"{ref.rsplit('/', 1)[1].split(':')[0]}-image": new for ref, new in moved.items()}
    finally:
        for ref, new in moved.items():
            subprocess.run(["docker", "tag", new, ref], check=True, capture_output=True)


def _file_run(path: Path, home: Path, url: str, images: dict[str, str], *extra: str):
    params = {"repo-url": url, "allow-file-url": "true", "keep-serving": "false", **images}
    flags = [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
    proc = taskyard(
        "run", str(path), "--executor", "docker", *flags, *extra,
        env={**os.environ, "TASKYARD_HOME": str(home)},
    )  # fmt: skip
    return proc, latest_run(home)


def test_the_committed_renders_run_as_rendered_to_the_main_jobs_outcome(
    ci_images: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The committed Tekton Pipeline and Argo WorkflowTemplate, each step in its image, reach
    what `taskyard run train-eval-deploy` reaches: same commit, tests, metric, promotion,
    version and smoke prediction."""
    url, commit = publish(root=tmp_path / "remote")
    home = tmp_path / "spec"
    home.mkdir()
    migrated_store(home, monkeypatch, tmp_path_factory)
    proc = taskyard("run", "train-eval-deploy", "-p", f"repo-url={url}", "-p",
                    "allow-file-url=true", "-p", "keep-serving=false")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {k: latest_run().results.get(k) for k in OUTCOME}
    assert expected["commit"] == commit
    assert expected["promoted"] == "true" and expected["model-version"] == "1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the file runs start their own MLflow server
    for path in (TEKTON_FILE, ARGO_FILE):
        proc, run = _file_run(path, tmp_path / path.suffix / path.parent.name, url, ci_images)
        assert proc.returncode == 0, f"{path}:\n{proc.stdout}\n{proc.stderr}"
        assert {k: run.results.get(k) for k in OUTCOME} == expected, path
        assert {t.state for t in run.tasks.values()} == {"Succeeded"}
        assert running(run.id) == []
        for file in (run.path / "workspaces").rglob("*"):  # given back to the invoking user
            assert file.lstat().st_uid == os.getuid(), file


def _plant(src: Path, dest: Path, old: str, new: str, count: int = 1) -> Path:
    text = src.read_text()
    assert text.count(old) >= count, (src, old)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text.replace(old, new, count))
    return dest


def test_a_planted_render_bug_fails_the_run(ci_images: dict[str, str], tmp_path: Path) -> None:
    """Each bug a schema accepts: a wrong result path, a wrong arg, an image param not passed."""
    url, _ = publish(root=tmp_path / "remote")
    bad_tasks = tmp_path / "tasks"
    shutil.copytree(REPO_ROOT / "tasks", bad_tasks)
    clone = bad_tasks / "git-clone" / "0.1" / "git-clone.yaml"
    _plant(clone, clone, "value: $(results.commit.path)", "value: /tmp/commit")
    no_image = "        - name: image\n          value: $(params.train-image)\n"
    cases = {
        "result path": (TEKTON_FILE, ["-f", str(bad_tasks)], "InvalidTaskResultReference"),
        "arg": (
            _plant(ARGO_FILE, tmp_path / "arg" / ARGO_FILE.name, "- --depth\n", "- --deep\n"),
            [],
            "unrecognized arguments: --deep",
        ),
        "image not passed": (
            _plant(TEKTON_FILE, tmp_path / "image" / TEKTON_FILE.name, no_image, ""),
            ["-f", str(REPO_ROOT / "tasks")],
            "ErrImagePull: image ghcr.io/taskyard/train:",
        ),
    }
    for case, (path, extra, why) in cases.items():
        home = tmp_path / "home" / case.replace(" ", "-")
        proc, run = _file_run(path, home, url, ci_images, *extra)
        assert proc.returncode == 1, f"{case}: the run did not fail\n{proc.stdout}"
        reasons = [t.reason for t in run.tasks.values() if t.state == "Failed"]
        assert any(why in r for r in reasons), f"{case}: {reasons}"


def test_security_context_is_honoured(ci_images: dict[str, str], tmp_path: Path) -> None:
    """runAsUser sets the uid a step runs as; runAsNonRoot with uid 0 never starts."""
    import yaml

    def task(name: str, uid: int, non_root: bool) -> dict:
        sec = {"runAsUser": uid, "runAsNonRoot": non_root}
        return {"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": name},
                "spec": {"results": [{"name": "uid"}], "steps": [{
                    "name": "id", "image": ci_images["steps-image"], "securityContext": sec,
                    "script": "id -u > $(results.uid.path)"}]}}  # fmt: skip

    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "uid"},
                "spec": {"tasks": [{"name": "as-user", "taskRef": {"name": "user"}},
                                   {"name": "as-root", "taskRef": {"name": "root"}}]}}  # fmt: skip
    path = tmp_path / "uid.yaml"
    docs = [pipeline, task("user", 4321, True), task("root", 0, True)]
    path.write_text(yaml.safe_dump_all(docs))
    proc = taskyard("run", str(path), "--executor", "docker",
                    env={**os.environ, "TASKYARD_HOME": str(tmp_path / "home")})  # fmt: skip
    assert proc.returncode == 1
    run = latest_run(tmp_path / "home")
    assert run.tasks["as-user"].results == {"uid": "4321\n"}
    assert "CreateContainerConfigError" in run.tasks["as-root"].reason


def test_the_serve_image_runs_the_rendered_deployment_container_spec(
    images: list[str], docker_env: Dockerd, tmp_path: Path
) -> None:
    """The serve image started with exactly the container spec the deploy step applies
    (command, args, env, port, user, securityContext, probes, the /tmp emptyDir), in a pod-like
    network namespace shared with an MLflow server: readiness flips only once the model is
    loaded, /invocations answers the champion's prediction, /metrics counts the requests."""
    from prometheus_client.parser import text_string_to_metric_families

    from taskyard.kube import manifests
    from tests.serve_pod import PROBE, Pod

    serve = next(t for t in images if "/serve:" in t)
    train = next(t for t in images if "/train:" in t)
    pod = Pod(train, tmp_path)
    try:
        champion = pod.register("iris-classifier")
        spec = manifests.Serving(
            model="iris-classifier", version="1", image=serve, tracking_uri=pod.tracking_uri
        )
        rendered = manifests.deployment(spec)["spec"]["template"]["spec"]
        (ctr,) = rendered["containers"]
        server = pod.start(ctr, rendered)
        ready, live = ctr["readinessProbe"]["httpGet"], ctr["livenessProbe"]["httpGet"]
        assert ready["port"] == live["port"] == ctr["ports"][0]["containerPort"] == 8080
        body = {"dataframe_split": {"columns": champion["columns"], "data": champion["rows"]}}
        out = json.loads(
            pod.python(
                PROBE,
                f"http://127.0.0.1:{ready['port']}{ready['path']}",
                f"http://127.0.0.1:{live['port']}{live['path']}",
                json.dumps(body),
            )
        )
        log = pod.logs(server)
        # Not ready (refused while starting, then 503 while loading) until loaded, then ready.
        first = out["readiness"].index(200)
        assert first > 0 and 503 in out["readiness"][:first], (out["readiness"], log)
        assert 200 in out["liveness"][:first], "liveness answers while the model loads"
        assert out["answers"] == [champion["expected"]] * 3, log
        requests = {
            (s.labels["path"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(out["metrics"])
            for s in f.samples
            if s.name == "taskyard_model_requests_total"
        }
        assert requests[("/invocations", "200")] == 3
        top = docker_top(server)
        assert top and all(user == "65532" for user in top), top  # runAsUser, not root
    finally:
        pod.stop()


def docker_top(name: str) -> list[str]:
    """The uid of every process in the container (docker top needs the pid column to filter)."""
    proc = subprocess.run(
        ["docker", "top", name, "-o", "pid,uid"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split()[1] for line in proc.stdout.splitlines()[1:] if line.strip()]
