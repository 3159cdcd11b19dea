"""``taskyard init [DIR]``: a first ``taskyard.toml`` for an existing repository.

It looks at the repository (CSV files, tests, a requirements file), takes the target column from
``--target`` (or asks, on a terminal), guesses the task from that column, and writes a commented
config in today's format (:class:`taskyard.project.ProjectConfig`) that trains as it stands:
numeric feature columns only (the CSV loader refuses others), a random forest, the task's
default metric. It validates what it wrote with the same model the train step uses, then prints
the commands to run and render the pipeline.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taskyard.cli._common import UsageError
from taskyard.errors import TaskyardError

CONFIG = "taskyard.toml"
# Never searched for data or tests: VCS, environments, caches, dependencies, build output.
SKIP_DIRS = {"node_modules", "__pycache__", "venv", "env", "site-packages", "build", "dist"}
TARGET_NAMES = ("target", "label", "labels", "y", "class", "outcome")
# A numeric target with at most this many distinct integral values is taken as classes.
MAX_CLASSES = 20
MAX_ROWS = 200_000  # rows read to type the columns (the loader reads them all)
COMMENT_AT = 48


@dataclass
class Repo:
    """What ``init`` found in the repository."""

    root: Path
    csvs: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)


@dataclass
class Column:
    name: str
    numeric: bool = True
    integral: bool = True
    missing: int = 0
    values: set[str] = field(default_factory=set)  # distinct values, up to MAX_CLASSES + 1


def add_init(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="write a taskyard.toml for an existing repository",
        description=(
            "Inspect DIR (default: the current folder) for CSV data, tests and requirements, "
            "and write a commented taskyard.toml that trains on the first "
            "`taskyard run train-eval-deploy`. Asks for what flags leave open when run on a "
            "terminal; without one, --target is required."
        ),
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="default: .")
    p.add_argument("--target", metavar="COL", help="the column to predict")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="the CSV file (relative to DIR), or a data.source such as python:pkg.mod:load",
    )
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="default: guessed from the target column",
    )
    p.add_argument("--name", help="the project and registered model name (default: DIR's name)")
    p.add_argument("--force", action="store_true", help=f"overwrite an existing {CONFIG}")
    p.set_defaults(func=cmd_init)


# ---- inspecting the repository ------------------------------------------------------------------
def _skipped(dirpath: Path, name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS or (dirpath / name / "pyvenv.cfg").exists()


def _is_test(name: str) -> bool:
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def inspect_repo(root: Path) -> Repo:
    """CSV files, test files and requirement files, by path relative to ``root``."""
    repo = Repo(root=root)
    if (root / "tests").is_dir() or (root / "test").is_dir():
        repo.tests.append("tests/" if (root / "tests").is_dir() else "test/")
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _skipped(here, d))
        for name in sorted(filenames):
            rel = (here / name).relative_to(root).as_posix()
            if name.lower().endswith(".csv"):
                repo.csvs.append(rel)
            elif _is_test(name) and not (repo.tests and rel.startswith(repo.tests[0])):
                repo.tests.append(rel)
    repo.requirements = [n for n in ("requirements.txt", "pyproject.toml") if (root / n).is_file()]
    return repo


def read_columns(path: Path) -> tuple[list[Column], int]:
    """Each column's type as pandas would read it (numeric or not), and the rows read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise UsageError(f"{path.name} is empty: no header row")
            cols = [Column(name.strip()) for name in header]
            rows = 0
            for row in reader:
                if rows >= MAX_ROWS:
                    break
                rows += 1
                for col, value in zip(cols, row, strict=False):
                    _observe(col, value.strip())
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if rows == 0:
        raise UsageError(f"{path.name} has a header but no rows")
    return cols, rows


def _observe(col: Column, value: str) -> None:
    if value == "" or value.lower() in ("nan", "na", "n/a", "null"):
        col.missing += 1
        return
    if len(col.values) <= MAX_CLASSES:
        col.values.add(value)
    if not col.numeric:
        return
    try:
        number = float(value)
    except ValueError:
        col.numeric = col.integral = False
        return
    if not number.is_integer():
        col.integral = False


def guess_task(target: Column) -> tuple[str, str]:
    """classification for strings or few integral values, else regression; and why."""
    distinct = len(target.values)
    many = f"more than {MAX_CLASSES}" if distinct > MAX_CLASSES else str(distinct)
    if not target.numeric:
        return "classification", f"{target.name!r} holds strings ({many} distinct values)"
    if target.integral and distinct <= MAX_CLASSES:
        return "classification", f"{target.name!r} holds {distinct} distinct whole numbers"
    kind = "whole numbers" if target.integral else "numbers"
    return "regression", f"{target.name!r} holds {many} distinct {kind}"


# ---- asking (only on a terminal) ----------------------------------------------------------------
def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ask(question: str, choices: Sequence[str], default: str) -> str:
    """A choice by name or number; Enter takes the default."""
    print(question)
    for i, c in enumerate(choices, 1):
        print(f"  {i}. {c}{'  (default)' if c == default else ''}")
    while True:
        try:
            answer = input("> ").strip()
        except EOFError:
            raise UsageError("no answer given") from None
        if not answer:
            return default
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1]
        if answer in choices:
            return answer
        print(f"  not one of the {len(choices)} above: a number or a name")


# ---- choosing ----------------------------------------------------------------------------------
def _data_source(args: argparse.Namespace, repo: Repo) -> tuple[str, Path | None]:
    """``data.source`` and, for a CSV, its file."""
    if args.data:
        if re.match(r"^(python|sklearn):.+", args.data):
            return args.data, None
        rel = args.data.removeprefix("csv:")
        path = (repo.root / rel).resolve()
        if not path.is_file():
            raise UsageError(f"--data {args.data}: no such file under {repo.root}")
        if not path.is_relative_to(repo.root):
            raise UsageError(f"--data {args.data} is outside {repo.root}: the clone would lack it")
        return f"csv:{path.relative_to(repo.root).as_posix()}", path
    if not repo.csvs:
        raise UsageError(
            f"no CSV file found under {repo.root}",
            "pass --data PATH, or --data python:pkg.module:load for a loader of your own",
        )
    chosen = repo.csvs[0]
    if len(repo.csvs) > 1:
        if not _interactive():
            shown = ", ".join(repo.csvs[:10]) + (" …" if len(repo.csvs) > 10 else "")
            raise UsageError(f"{len(repo.csvs)} CSV files found ({shown}): pass --data PATH")
        chosen = _ask("Which CSV file holds the training data?", repo.csvs, repo.csvs[0])
    return f"csv:{chosen}", repo.root / chosen


def _target(args: argparse.Namespace, names: list[str]) -> str:
    if args.target:
        if names and args.target not in names:
            raise UsageError(
                f"--target {args.target!r} is not a column (columns: {', '.join(names)})"
            )
        return args.target
    if not names or not _interactive():
        shown = f" (columns: {', '.join(names)})" if names else ""
        raise UsageError(f"pass --target COL, the column to predict{shown}")
    default = next((n for n in names if n.lower() in TARGET_NAMES), names[-1])
    return _ask("Which column should the model predict?", names, default)


def project_name(args: argparse.Namespace, root: Path) -> str:
    """``--name`` as given (checked by the config), else the folder's name made valid."""
    if args.name:
        return args.name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-._")[:100]
    return name or "model"


# ---- writing -----------------------------------------------------------------------------------
def _line(text: str, comment: str = "") -> str:
    if not comment:
        return text
    return (
        f"{text.ljust(COMMENT_AT - 1)} # {comment}"
        if len(text) < COMMENT_AT
        else (f"{text}  # {comment}")
    )


def _toml(value: object) -> str:
    """A TOML value: JSON's string and list syntax is TOML's for these."""
    return json.dumps(value, ensure_ascii=False)


def render_config(
    *,
    name: str,
    source: str,
    target: str,
    features: list[str] | None,
    skipped: list[str],
    task: str,
    why: str,
    no_tests_note: bool,
) -> str:
    """The commented ``taskyard.toml`` (today's keys only)."""
    from taskyard.ml.metrics import METRICS, default_metric
    from taskyard.project import DEFAULT_ESTIMATORS

    metrics = ", ".join(m for m, spec in METRICS.items() if spec.task == task)
    lines = [
        "# How taskyard trains and judges this project (read by the train and evaluate tasks).",
        "# Written by `taskyard init`; edit it freely. Each key is explained next to it.",
        "",
        "[project]",
        _line(f"name = {_toml(name)}", "the registered model name in MLflow"),
        "",
        "[data]",
        _line(f"source = {_toml(source)}", 'or "python:pkg.module:load", "sklearn:load_wine"'),
        _line(f"target = {_toml(target)}", "the column to predict"),
    ]
    if features is not None:
        lines.append(_line(f"features = {_toml(features)}", "numeric columns only"))
    if skipped:
        lines.append(
            f"# left out, not numeric: {', '.join(skipped)} -- encode them in a data loader "
            '(source = "python:…") to use them'
        )
    lines += [
        _line("test-size = 0.25", "the holdout the candidate is judged on"),
        _line("seed = 42", "the same split and model on every run"),
        "",
        "[model]",
        _line('framework = "sklearn"', "sklearn | xgboost | torch"),
        _line(f"task = {_toml(task)}", f"guessed: {why}"),
        _line(f"estimator = {_toml(DEFAULT_ESTIMATORS[task])}", "any scikit-learn estimator"),
        "",
        "[model.params]",
        _line("n_estimators = 100", "the estimator's own keyword arguments"),
        "",
        "[metric]",
        _line(f"name = {_toml(default_metric(task))}", metrics),
        "",
        "[evaluate]",
        _line("# min-score = 0.8", "the candidate must reach at least this"),
        _line("min-improvement = 0.0", "and beat the champion by at least this"),
    ]
    if no_tests_note:
        lines += [
            "",
            "# No tests found: run-tests needs -p allow-no-tests=true until you add some.",
        ]
    return "\n".join(lines) + "\n"


def _validate(text: str) -> None:
    """What the train step will say about the config, said now (a bug here, not the user's)."""
    from pydantic import ValidationError

    from taskyard.project import ProjectConfig

    try:
        ProjectConfig.model_validate(tomllib.loads(text))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"the config would not load: {where}: {first['msg']}") from None


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{args.dir} is not a folder")
    config = root / CONFIG
    if config.exists() and not args.force:
        raise TaskyardError(f"{config} exists; pass --force to overwrite it")
    repo = inspect_repo(root)
    source, csv_path = _data_source(args, repo)
    features: list[str] | None = None
    skipped: list[str] = []
    notes: list[str] = []
    col: Column | None = None
    if csv_path is not None:
        cols, rows = read_columns(csv_path)
        by_name = {c.name: c for c in cols}
        target = _target(args, list(by_name))
        col = by_name[target]
        task, why = guess_task(col)
        if col.missing:
            notes.append(f"{target!r} has {col.missing} empty cells: train refuses missing targets")
        others = [c for c in cols if c.name != target]
        skipped = [c.name for c in others if not c.numeric]
        if skipped:
            features = [c.name for c in others if c.numeric]
            if not features:
                raise UsageError(
                    f"{csv_path.name}: no numeric feature column besides {target!r}",
                    'encode the columns in a data loader and pass --data "python:pkg.mod:load"',
                )
        n_features = len(features) if features is not None else len(others)
        found = f"{rows} rows, {n_features} feature columns"
    else:
        target = _target(args, [])
        task, why = "classification", "the default (pass --task to choose)"
        found = "a loader of your own"
    if args.task:
        if args.task == "regression" and col is not None and not col.numeric:
            raise UsageError(f"--task regression: target {target!r} holds strings, not numbers")
        task, why = args.task, "given with --task"
    text = render_config(
        name=project_name(args, root),
        source=source,
        target=target,
        features=features,
        skipped=skipped,
        task=task,
        why=why,
        no_tests_note=not repo.tests and _allows_no_tests(),
    )
    _validate(text)
    config.write_text(text)
    print(
        f"wrote {config}: predict {target!r} ({task}) from {source.removeprefix('csv:')}, {found}"
    )
    print(f"tests: {', '.join(repo.tests[:3]) if repo.tests else 'none found'}")
    if repo.requirements:
        print(f"dependencies: {', '.join(repo.requirements)}")
    for note in notes:
        print(f"note: {note}")
    no_tests = not repo.tests and _allows_no_tests()
    for line in _next_steps(root, csv_path, no_tests=no_tests, name=project_name(args, root)):
        print(line)
    return 0


def _allows_no_tests() -> bool:
    """Whether train-eval-deploy has the switch that lets a project without tests pass."""
    from taskyard.catalog import PIPELINES

    return any(p.name == "allow-no-tests" for p in PIPELINES["train-eval-deploy"].params)


def _next_steps(root: Path, csv_path: Path | None, *, no_tests: bool, name: str) -> list[str]:
    top = _git(root, "rev-parse", "--show-toplevel")
    lines = ["", "next:"]
    if top is None:
        lines.append("  git init && git add -A && git commit -m 'Add the project'")
    else:
        lines.append(f"  git -C {root} add {CONFIG} && git -C {root} commit -m 'Add {CONFIG}'")
        if csv_path is not None and _git(root, "check-ignore", "-q", str(csv_path)) is not None:
            lines.append(f"  (git ignores {csv_path.name}: the pipeline's clone will not have it)")
        if Path(top).resolve() != root:
            rel = root.relative_to(Path(top).resolve()).as_posix()
            lines.append(
                f"  (the project is in {rel}/ of its repository: see the subdirectory param)"
            )
    local = (Path(top).resolve() if top else root).as_uri()
    extra = " -p allow-no-tests=true" if no_tests else ""
    lines.append(
        f"  taskyard run train-eval-deploy -p repo-url={local} -p allow-file-url=true{extra}"
    )
    remote = (_git(root, "remote", "get-url", "origin") if top else None) or "<your git URL>"
    lines.append(
        f"  taskyard render --pipeline train-eval-deploy --repo-url {remote} "
        f"--model-name {name} --mlflow-tracking-uri <your MLflow server URL> --out deploy/"
    )
    return lines
