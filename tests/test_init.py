"""``taskyard init``: a first taskyard.toml for an existing repository, and it trains as written.

The repositories are made here with real git (tests/gitutil.py); the slow test runs the
command ``init`` prints, a real train-eval-deploy run, without touching the config.
"""

from __future__ import annotations

import os
import pty
import random
import select
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from taskyard import project
from tests.cliutil import latest_run, taskyard
from tests.gitutil import Remote

TEST_FILE = """\
import csv
from pathlib import Path


def test_the_data_has_rows():
    rows = list(csv.DictReader((Path(__file__).parents[1] / "data" / "measurements.csv").open()))
    assert len(rows) > 50 and set(rows[0]) == {"width", "height", "depth", "species"}
"""


def measurements(rows: int = 150, seed: int = 7) -> str:
    """Three numeric features and a 3-class integer target that depends on them."""
    rng = random.Random(seed)
    lines = ["width,height,depth,species"]
    for _ in range(rows):
        species = rng.randrange(3)
        width = 1.0 + species + rng.gauss(0, 0.3)
        height = 2.0 + 0.5 * species + rng.gauss(0, 0.3)
        depth = rng.gauss(0, 1)
        lines.append(f"{width:.3f},{height:.3f},{depth:.3f},{species}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TASKYARD_DEBUG")
    }
    out["TASKYARD_HOME"] = str(tmp_path / "home")
    out["COLUMNS"] = "200"
    return out


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def config_of(root: Path) -> dict:
    return tomllib.loads((root / "taskyard.toml").read_text())


@pytest.mark.slow
def test_the_written_config_trains_on_the_first_run(tmp_path: Path, env: dict[str, str]) -> None:
    remote = Remote.create(
        tmp_path / "shapes",
        {"data/measurements.csv": measurements(), "tests/test_data.py": TEST_FILE},
    )
    r = taskyard("init", str(remote.work), "--target", "species", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "predict 'species' (classification) from data/measurements.csv" in r.stdout
    assert "tests: tests/" in r.stdout
    remote.commit({}, "add the taskyard config")  # what the printed `git … commit` does
    (line,) = [x for x in r.stdout.splitlines() if x.strip().startswith("taskyard run ")]
    argv = shlex.split(line)
    assert argv[:3] == ["taskyard", "run", "train-eval-deploy"]
    assert f"repo-url={remote.work.resolve().as_uri()}" in argv
    assert "allow-file-url=true" in argv and "allow-no-tests=true" not in argv
    run = taskyard(*argv[1:], "-p", "keep-serving=false", env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    record = latest_run(Path(env["TASKYARD_HOME"]))
    states = {name: t.state for name, t in record.tasks.items()}
    assert states["test"] == states["train"] == states["evaluate"] == "Succeeded", states
    assert record.results["metric-name"] == "f1_macro"
    assert float(record.results["candidate-score"]) > 0.6


def test_it_loads_with_the_train_steps_loader(tmp_path: Path, env: dict[str, str]) -> None:
    """Non-numeric columns are left out (today's loader refuses them) and said so."""
    root = tmp_path / "Sales Forecast!"
    rows = ["region,units,price,revenue"] + [
        f"{'north' if i % 2 else 'south'},{i},{1.5 + i / 10:.2f},{i * 2.5 + 0.3:.2f}"
        for i in range(40)
    ]
    write(root, {"data.csv": "\n".join(rows) + "\n"})
    r = taskyard("init", str(root), "--target", "revenue", env=env)
    assert r.returncode == 0, r.stderr
    cfg = config_of(root)
    assert cfg["project"]["name"] == "Sales-Forecast"
    assert cfg["data"] == {
        "source": "csv:data.csv",
        "target": "revenue",
        "features": ["units", "price"],
        "test-size": 0.25,
        "seed": 42,
    }
    assert cfg["model"]["task"] == "regression" and cfg["metric"]["name"] == "rmse"
    text = (root / "taskyard.toml").read_text()
    assert "# left out, not numeric: region" in text
    loaded = project.load(root)
    frame = project.load_frame(loaded)
    split = project.holdout(loaded, frame)
    assert list(split.x_train.columns) == ["units", "price"]
    assert "tests: none found" in r.stdout


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["cat", "dog", "cat", "bird"] * 5, "classification"),
        (["0", "1", "1", "0"] * 5, "classification"),
        ([str(i) for i in range(40)], "regression"),
        ([f"{i / 7:.3f}" for i in range(20)], "regression"),
    ],
)
def test_the_task_is_guessed_from_the_target(
    tmp_path: Path, env: dict[str, str], values: list[str], task: str
) -> None:
    rows = ["x,y"] + [f"{i},{v}" for i, v in enumerate(values)]
    write(tmp_path, {"d.csv": "\n".join(rows) + "\n"})
    r = taskyard("init", str(tmp_path), "--target", "y", env=env)
    assert r.returncode == 0, r.stderr
    assert config_of(tmp_path)["model"]["task"] == task


def test_task_flag_wins_but_strings_are_never_regressed(tmp_path: Path, env: dict[str, str]):
    write(tmp_path, {"d.csv": "x,y,z\n" + "".join(f"{i},{i % 2},c{i % 3}\n" for i in range(20))})
    r = taskyard("init", str(tmp_path), "--target", "y", "--task", "regression", env=env)
    assert r.returncode == 0, r.stderr
    assert config_of(tmp_path)["model"]["task"] == "regression"
    assert "given with --task" in (tmp_path / "taskyard.toml").read_text()
    args = ("init", str(tmp_path), "--target", "z", "--task", "regression", "--force")
    r = taskyard(*args, env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --task regression: target 'z' holds strings, not numbers"


def test_data_is_found_outside_venvs_git_and_node_modules(tmp_path: Path, env: dict[str, str]):
    write(
        tmp_path,
        {
            "data/train.csv": "a,b,t\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n",
            ".venv/lib/site.csv": "x\n1\n",
            "node_modules/pkg/fixture.csv": "x\n1\n",
            "env/pyvenv.cfg": "home = /usr\n",
            "env/lib/data.csv": "x\n1\n",
            ".git/info.csv": "x\n1\n",
            "requirements.txt": "scikit-learn\n",
            "src/test_model.py": "def test_x():\n    pass\n",
        },
    )
    r = taskyard("init", str(tmp_path), "--target", "t", env=env)
    assert r.returncode == 0, r.stderr
    assert config_of(tmp_path)["data"]["source"] == "csv:data/train.csv"
    assert "tests: src/test_model.py" in r.stdout and "dependencies: requirements.txt" in r.stdout


@pytest.mark.parametrize(
    ("files", "args", "code", "message"),
    [
        (
            {"d.csv": "a,t\n1,0\n"},
            [],
            2,
            "pass --target COL, the column to predict (columns: a, t)",
        ),
        ({"d.csv": "a,t\n1,0\n"}, ["--target", "z"], 2, "--target 'z' is not a column"),
        ({"a.csv": "a,t\n1,0\n", "b.csv": "a,t\n1,0\n"}, ["--target", "t"], 2, "pass --data"),
        ({"README.md": "hi\n"}, ["--target", "t"], 2, "no CSV file found"),
        ({"d.csv": "a,t\n1,0\n"}, ["--target", "t", "--data", "e.csv"], 2, "no such file"),
        ({"d.csv": "a,t\n1,0\n"}, ["--target", "t", "--name", "bad name!"], 2, "project.name"),
        ({"d.csv": "a,t\nx,0\n"}, ["--target", "t"], 2, "no numeric feature column"),
        ({"d.csv": "a,t\n1,0\n", "taskyard.toml": "x"}, ["--target", "t"], 1, "--force"),
    ],
)
def test_expected_failures_are_one_line(
    tmp_path: Path,
    env: dict[str, str],
    files: dict[str, str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    write(tmp_path, files)
    before = (tmp_path / "taskyard.toml").read_text() if "taskyard.toml" in files else None
    r = taskyard("init", str(tmp_path), *args, env=env)
    assert r.returncode == code, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    after = (tmp_path / "taskyard.toml").read_text() if before is not None else None
    assert after == before  # never overwritten, never half-written
    if before is None:
        assert not (tmp_path / "taskyard.toml").exists()


def test_force_overwrites(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path, {"d.csv": "a,t\n1,0\n2,1\n", "taskyard.toml": "# mine\n"})
    r = taskyard("init", str(tmp_path), "--target", "t", "--force", env=env)
    assert r.returncode == 0, r.stderr
    assert config_of(tmp_path)["data"]["target"] == "t"


class Terminal:
    """The parent side of a pty: read until a text shows up after what was already seen."""

    def __init__(self, fd: int) -> None:
        self.fd, self.text, self.pos = fd, "", 0

    def expect(self, wanted: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.text.find(wanted, self.pos)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {wanted!r} in {self.text!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.text += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    assert wanted in self.text[self.pos :], self.text
        self.pos = found + len(wanted)

    def answer(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")


def test_on_a_terminal_it_asks(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path,
        {"data/a.csv": "p,q\n1,2\n", "data/b.csv": "u,v,target\n1,2,0\n2,3,1\n3,1,0\n"},
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskyard.cli", "init", str(tmp_path)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    term = Terminal(master)
    try:
        term.expect("Which CSV file")
        term.expect("> ")
        term.answer("2")
        term.expect("Which column")
        term.expect("3. target  (default)")  # a column named `target` is offered
        term.expect("> ")
        term.answer("")
        term.expect("next:")
        assert proc.wait(timeout=30) == 0, term.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    cfg = config_of(tmp_path)
    assert cfg["data"]["source"] == "csv:data/b.csv" and cfg["data"]["target"] == "target"
