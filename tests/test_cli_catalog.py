"""``taskyard pipelines NAME`` / ``taskyard tasks NAME``, and the CLI package's shape."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from taskyard.catalog import PIPELINES, TASKS
from tests.cliutil import taskyard

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "taskyard" / "cli"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TASKYARD_HOME": str(tmp_path / "home"), "COLUMNS": "250"}


def _rows(stdout: str) -> dict[str, list[str]]:
    """First word of each line -> the line's columns (two or more spaces apart)."""
    out = {}
    for line in stdout.splitlines():
        cols = [c.strip() for c in line.split("  ") if c.strip()]
        if cols:
            out.setdefault(cols[0], cols)
    return out


def test_a_pipeline_in_full(env: dict[str, str]) -> None:
    r = taskyard("pipelines", "train-eval-deploy", env=env)
    assert r.returncode == 0, r.stderr
    spec = PIPELINES["train-eval-deploy"]
    text = " ".join(r.stdout.split())
    rows = _rows(r.stdout)
    for p in spec.params:  # every param: name, type, default, description
        row = rows[p.name]
        default = "(required)" if p.required else (p.default or '""')
        assert row[1:3] == [(p.enum and "one of " + ", ".join(p.enum)) or p.type, default], row
        assert " ".join(p.description.split()) in text
    order = [rows[str(i)][1] for i in range(1, len(spec.tasks) + 1)]
    assert order == spec.order()
    assert rows["finally"][1:3] == ["report", "report"]
    for w in spec.workspaces:
        assert rows[w.name][1] == ("yes" if w.optional else "no")
    for res in spec.results:
        assert rows[res.name][1] == res.value
    assert "run it: taskyard run train-eval-deploy -p KEY=VALUE" in r.stdout


def test_a_task_in_full(env: dict[str, str]) -> None:
    r = taskyard("tasks", "train", env=env)
    assert r.returncode == 0, r.stderr
    spec = TASKS["train"]
    rows = _rows(r.stdout)
    for p in spec.params:
        assert rows[p.name][1] == ((p.enum and "one of " + ", ".join(p.enum)) or p.type)
        assert rows[p.name][2] == ("(required)" if p.required else (p.default or '""'))
    for res in spec.results:
        assert res.name in rows
    for w in spec.workspaces:
        assert rows[w.name][1:3] == ["yes" if w.optional else "no", "yes" if w.read_only else "no"]
    assert "python -m taskyard.steps.train" in r.stdout


def test_a_fork_in_full(env: dict[str, str]) -> None:
    r = taskyard("pipelines", "tests/run_synthetic.py:CHAIN", env=env)
    assert r.returncode == 0, r.stderr
    assert _rows(r.stdout)["greeting"][1:3] == ["string", "(required)"]
    assert "run it: taskyard run tests/run_synthetic.py:CHAIN" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pipelines", "train-eval-deplo"], "error: unknown pipeline 'train-eval-deplo' (known: "),
        (["tasks", "trian"], "error: unknown task 'trian' (known: deploy, detect-drift, evaluate"),
        (
            ["pipelines", "tests/run_synthetic.py:NOPE"],
            "error: tests/run_synthetic.py has no attribute",
        ),
    ],
)
def test_unknown_names_are_one_line_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    r = taskyard(*args, env=env)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(message), line
    if args[0] == "pipelines" and ":" not in args[1]:
        assert all(name in line for name in PIPELINES)


def test_without_a_name_the_tables_stay(env: dict[str, str]) -> None:
    r = taskyard("pipelines", env=env)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split()[:4] == ["pipeline", "what", "tasks", "required"]
    assert r.stdout.rstrip().endswith("run one: taskyard run NAME -p KEY=VALUE …")


# ---- the package --------------------------------------------------------------------------------
COMMAND_MODULES = sorted(p.stem for p in CLI.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _cli_imports(module: str) -> set[str]:
    """The ``taskyard.cli`` modules ``module`` imports; "" stands for the package itself."""
    out = set()
    for node in ast.walk(ast.parse((CLI / f"{module}.py").read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module == "taskyard.cli":
            names = [f"taskyard.cli.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name == "taskyard.cli" or name.startswith("taskyard.cli."):
                sub = name.removeprefix("taskyard.cli").removeprefix(".").split(".")[0]
                out.add(sub if sub in COMMAND_MODULES else "")
    return out


def test_no_command_module_imports_the_package_or_makes_a_cycle() -> None:
    """``cli/__init__`` imports the command modules; none imports it, nor each other in a ring."""
    graph = {m: _cli_imports(m) for m in COMMAND_MODULES}
    assert {m for m, deps in graph.items() if "" in deps} == set()
    assert graph["_common"] == set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        for dep in graph[module]:
            visit(dep, (*path, module))

    for module in graph:
        visit(module, ())


def test_each_module_imports_alone() -> None:
    """In a fresh interpreter, any command module first: the order never matters."""
    import subprocess

    for module in sorted(p.stem for p in CLI.glob("*.py") if p.stem != "__main__"):
        name = "taskyard.cli" if module == "__init__" else f"taskyard.cli.{module}"
        proc = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr


def test_the_old_modules_are_gone() -> None:
    for old in ("cli.py", "cli_extra.py", "cli_images.py"):
        assert not (ROOT / "src" / "taskyard" / old).exists()


def test_module_and_console_script(env: dict[str, str]) -> None:
    from taskyard import __version__

    r = taskyard("--version", env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"taskyard {__version__}")
    import subprocess

    script = Path(sys.executable).parent / "taskyard"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout.strip()) == (0, f"taskyard {__version__}")
