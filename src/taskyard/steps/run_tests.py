"""run-tests: run the project's pytest suite, keep a JUnit report, fail when a test fails.

pytest runs as a real subprocess of the step's own interpreter, its output streamed into the
task log; the counts come from the JUnit XML, not from scraping that log. A project with its own
requirements gets its own environment first (:mod:`taskyard.envs`): the step re-execs itself
with that environment's python, so pytest and the project's imports see the project's pins.
A project without tests fails unless ``--allow-no-tests`` says that is fine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskyard import envs
from taskyard.errors import StepError
from taskyard.steps import _cache, _cli, _mlflow
from taskyard.steps._results import write_result, write_results

TASK_NAME = "run-tests"
# pytest's exit codes (pytest.ExitCode), for the messages of the ones that are not test failures.
EXIT_MEANING = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}
NO_TESTS = 5
MAX_NAMES = 5  # failed tests named in the one-line error; the record keeps more
MAX_RECORDED = 100


@dataclass
class Counts:
    """What the JUnit report says, one entry per test case."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    duration: float = 0.0
    failed_tests: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped


def parse_junit(path: Path) -> Counts:
    """Count test cases in a JUnit XML file (``<testsuites>`` or a bare ``<testsuite>``)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise StepError(f"cannot read the JUnit report {path}: {e}") from None
    counts = Counts()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        counts.duration += float(suite.get("time") or 0)
        for case in suite.iter("testcase"):
            kinds = {child.tag for child in case}
            if kinds & {"failure", "error"}:
                counts.failed += 1
                classname, name = case.get("classname", ""), case.get("name", "?")
                counts.failed_tests.append(f"{classname}::{name}" if classname else name)
            elif "skipped" in kinds:
                counts.skipped += 1
            else:
                counts.passed += 1
    return counts


def short_name(test_id: str) -> str:
    return test_id.rsplit("::", 1)[-1]


def failure_line(counts: Counts) -> str:
    names = [short_name(t) for t in counts.failed_tests[:MAX_NAMES]]
    more = len(counts.failed_tests) - len(names)
    listed = ", ".join(names) + (f" and {more} more" if more > 0 else "")
    return f"{counts.failed} of {counts.total} tests failed: {listed}"


def relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> None:
    source: Path = args.source
    if not source.is_dir():
        raise StepError(f"source workspace {source} does not exist")
    project = envs.project_root(source, args.subdirectory)
    if not project.resolve().is_relative_to(source.resolve()):
        raise StepError(f"subdirectory {args.subdirectory!r} points outside the source workspace")
    if not project.is_dir():
        raise StepError(
            f"project folder {project} does not exist",
            f"did git-clone run with subdirectory {args.subdirectory!r}?",
        )
    envs.reexec_in_project_env(source, args.subdirectory, "run_tests")
    try:
        extra = shlex.split(args.pytest_args)
    except ValueError as e:
        raise StepError(f"cannot split --pytest-args {args.pytest_args!r}: {e}") from None
    report = source / args.report
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)  # a stale report from a previous attempt must not count
    cached = _open_cache(args, source, project)
    if cached is not None and cached.replay():
        return
    if cached is not None:
        cached.prepare()  # the store opens while pytest runs

    # After the re-exec this is the project environment's python: pytest runs with its pins.
    cmd = [sys.executable, "-m", "pytest", f"--junitxml={report.resolve()}", *extra]
    print("+ " + shlex.join(cmd), f"(in {project})", flush=True)
    started = time.monotonic()
    code = subprocess.run(
        cmd, cwd=project, env=_test_env(), stderr=subprocess.STDOUT, check=False
    ).returncode
    wall = time.monotonic() - started

    counts = parse_junit(report) if report.is_file() else Counts()
    report_rel = relative(report, source)
    no_tests = code == NO_TESTS and not counts.failed
    values = {"passed": str(counts.passed), "failed": str(counts.failed), "report": report_rel}
    write_results(values)
    status = "passed" if code == 0 else "no-tests" if no_tests else "failed"
    env = envs.active()
    record: dict[str, Any] = {
        "results": values,
        "status": status,
        "passed": counts.passed,
        "failed": counts.failed,
        "skipped": counts.skipped,
        "total": counts.total,
        "duration": round(counts.duration or wall, 3),
        "failed_tests": counts.failed_tests[:MAX_RECORDED],
        "exit_code": code,
        "subdirectory": args.subdirectory,
        "pytest_args": args.pytest_args,
        "allow_no_tests": args.allow_no_tests,
        "no_tests": no_tests,
        "environment": str(env) if env else "",
    }
    record_path = _cli.write_record(source, TASK_NAME, record)

    if counts.failed:
        raise StepError(failure_line(counts))
    if no_tests:
        if not args.allow_no_tests:
            raise StepError(
                f"no tests collected in {project}",
                "add tests, or set the param allow-no-tests=true to let a project without "
                "tests pass",
            )
        print(f"no tests collected in {project}; passing, as allow-no-tests=true says", flush=True)
        return
    if code != 0:
        meaning = EXIT_MEANING.get(code, "unexpected exit")
        raise StepError(f"pytest stopped with exit code {code} ({meaning}) in {project}")
    print(
        f"{counts.passed} passed, {counts.skipped} skipped in {record['duration']}s; "
        f"report: {report_rel}",
        flush=True,
    )
    if cached is not None:  # only a passing suite is stored: a failure always runs again
        cached.store(values, [record_path, report])


def _test_env() -> dict[str, str]:
    """The project's tests do not see the pipeline's MLflow store or its credentials (the cache
    set them up for this step; a test that logs must not write into the team's registry)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_REGISTRY_"))
        and k != "TASKYARD_MLFLOW_CREDENTIALS"
    }


def _open_cache(args: argparse.Namespace, source: Path, project: Path) -> _cache.StepCache | None:
    """The cache when a tracking URI is at hand; tests never need MLflow, so none is no error."""
    write_result(_cache.FROM_RESULT, "")
    if not args.cache:
        print("cache: off for run-tests (--cache false)", flush=True)
        return None
    try:
        uri = _mlflow.configure()
    except StepError as e:
        print(f"cache: off for run-tests ({e})", flush=True)
        return None
    inputs = {"project": _cache.project_state(project)}
    return _cache.open_cache(TASK_NAME, args, source, inputs, reader=_cache.store_reader(uri))


def build_parser() -> argparse.ArgumentParser:
    p = _cli.parser("run_tests", __doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--subdirectory", default="repo")
    p.add_argument("--pytest-args", default="")
    p.add_argument("--report", default="artifacts/junit.xml")
    p.add_argument(
        "--allow-no-tests", type=_cli.boolean, default=False, help="pass when none are collected"
    )
    _cache.add_flags(p)
    return p


if __name__ == "__main__":
    _cli.main(run, build_parser())
