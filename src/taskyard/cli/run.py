"""``taskyard run`` and ``taskyard runs [show]``: run a pipeline here, look at past runs."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from taskyard.cli._common import UsageError, add_executor_flag, add_param_flag, out, pairs
from taskyard.errors import TaskyardError

if TYPE_CHECKING:
    from taskyard.run.store import RunRecord


def is_yaml(ref: str) -> bool:
    """A rendered file to run as its engine would (taskyard.engines), not a catalog pipeline.
    Decided here: importing the engines costs a catalog run ~80 ms it does not need."""
    return ref.endswith((".yaml", ".yml"))


def add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a pipeline locally",
        description=(
            "Run a pipeline on this machine, each task as a subprocess. PIPELINE is a catalog "
            "name, path/to/file.py:ATTR or package.module:ATTR. A pipeline param "
            "`mlflow-tracking-uri` left unset points at the taskyard home's SQLite store. "
            "PIPELINE may also be a rendered FILE.yaml (a Tekton v1 Pipeline/PipelineRun or an "
            "Argo WorkflowTemplate/Workflow): it runs as written, with its engine's semantics "
            "(use --executor docker to run each step in its image)."
        ),
    )
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        help="FILE.yaml runs: more files or folders holding the Tasks/templates it references "
        "(default: the catalog's tasks/ folder the file sits in)",
    )
    p.add_argument(
        "--git-repo",
        action="append",
        metavar="URL=PATH",
        help="FILE.yaml runs: a local clone that git-resolver references to URL read from",
    )
    add_param_flag(p)
    p.add_argument(
        "--workspace",
        action="append",
        metavar="NAME=PATH",
        help="bind a pipeline workspace to an existing folder (default: a folder in the run)",
    )
    p.add_argument("--max-parallel", type=int, default=4, metavar="N", help="default: 4")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="compute every cached task (tests, train, evaluate) and store nothing "
        "(docs/caching.md); a FILE.yaml run gets -p cache=false",
    )
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id (default: made up); for supervisors that track the run's folder",
    )
    p.add_argument(
        "--trigger",
        action="append",
        metavar="KEY=VALUE",
        help="what started the run, kept in its record (supervisors: source, delivery, alert)",
    )
    add_executor_flag(p)
    add_warm_flag(p)
    p.set_defaults(func=cmd_run)


def add_warm_flag(p: argparse.ArgumentParser) -> None:
    """``--warm/--no-warm``, shared by ``taskyard run`` and ``taskyard demo``."""
    p.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subprocess executor: fork `python -m taskyard.steps.…` steps from an "
        "interpreter that has mlflow, pandas and scikit-learn loaded (default: on; same "
        "argv, env, cwd and exit codes; kept for the next run of this home for "
        "TASKYARD_WARM_IDLE seconds, default 600, 0: per run; run/warm.py)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    return execute(
        args.pipeline,
        pairs(args.param, "-p"),
        pairs(args.workspace, "--workspace"),
        max_parallel=args.max_parallel,
        executor=args.executor,
        warm=args.warm,
        run_id=args.run_id,
        trigger=pairs(args.trigger, "--trigger"),
        files=args.file,
        git_repos=pairs(args.git_repo, "--git-repo"),
        no_cache=args.no_cache,
    )


def execute(
    pipeline: str,
    params: dict[str, str],
    workspaces: dict[str, str],
    max_parallel: int,
    executor: str = "subprocess",
    run_id: str | None = None,
    files: list[str] | None = None,
    git_repos: dict[str, str] | None = None,
    trigger: dict[str, str] | None = None,
    warm: bool = False,
    no_cache: bool = False,
) -> int:
    """Run a pipeline with live progress; the exit code of ``taskyard run``.

    ``warm``: catalog pipelines on the subprocess executor fork their steps from a warm
    interpreter, stopped when the run ends (off by default for callers other than the CLI).
    """
    if files and not is_yaml(pipeline):
        raise UsageError("-f/--file is for FILE.yaml runs only")
    chosen = None
    if executor == "docker":  # no daemon is the machine's problem (exit 1), not a usage error
        from taskyard.run.docker import DockerExecutor

        chosen = DockerExecutor()
        chosen.check()
    elif warm and not is_yaml(pipeline):
        from taskyard.run.executor import SubprocessExecutor

        try:
            chosen = SubprocessExecutor(warm=True)
        except ValueError as e:  # TASKYARD_WARM_IDLE
            raise UsageError(str(e)) from None
    try:
        return _execute(pipeline, params, workspaces, max_parallel, executor, run_id, files,
                        git_repos, trigger, chosen, no_cache)  # fmt: skip
    finally:
        close = getattr(chosen, "close", None)
        if close is not None:
            close()


def _execute(
    pipeline: str,
    params: dict[str, str],
    workspaces: dict[str, str],
    max_parallel: int,
    executor: str,
    run_id: str | None,
    files: list[str] | None,
    git_repos: dict[str, str] | None,
    trigger: dict[str, str] | None,
    chosen: Any,
    no_cache: bool = False,
) -> int:
    from taskyard.redact import redact
    from taskyard.run import Runner, load_pipeline
    from taskyard.run.load import without_cache
    from taskyard.run.progress import Progress
    from taskyard.run.store import CANCELLED, SUCCEEDED

    progress = Progress(Console(stderr=False))
    try:
        if is_yaml(pipeline):
            if no_cache:
                params = {**params, "cache": "false"}
            runner = _file_runner(
                pipeline, params, workspaces, executor, files or [], git_repos or {},
                max_parallel, progress, run_id,
            )  # fmt: skip
        else:
            spec = load_pipeline(pipeline)
            if no_cache:
                spec = without_cache(spec)
            runner = Runner(
                spec,
                params,
                workspaces,
                max_parallel=max_parallel,
                executor=chosen,
                observer=progress,
                run_id=run_id,
                trigger=trigger,
            )
    except TaskyardError as e:
        raise UsageError(redact(str(e))) from e  # a bad param value may carry a secret URL
    terminated = []

    def on_term(signum: int, frame: object) -> None:
        # Tasks run in their own sessions: a SIGTERM to this process (a supervisor such as
        # `taskyard serve` stopping us) must stop them too, exactly as Ctrl-C does.
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        record = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if record.status == SUCCEEDED:
        return 0
    # Like every expected failure: one `error:` line on stderr, after the summary.
    if record.status == CANCELLED:
        how = f"terminated ({signal.Signals(terminated[0]).name})" if terminated else "interrupted"
        print(f"error: run {record.id} cancelled: {how}", file=sys.stderr)
        return 128 + terminated[0] if terminated else 130
    print(f"error: run {record.id} failed: {redact(failure(record))}", file=sys.stderr)
    return 1


class _FileRun:
    """A rendered file's run, checked up front, started by :meth:`run` like a Runner."""

    def __init__(self, start: Callable[[], RunRecord]) -> None:
        self.run = start


def _file_runner(
    path: str,
    params: dict[str, str],
    workspaces: dict[str, str],
    executor: str,
    files: list[str],
    git_repos: dict[str, str],
    max_parallel: int,
    observer: object,
    run_id: str | None,
) -> _FileRun:
    from pathlib import Path

    from taskyard.engines import prepare, run_file

    extra = [Path(f) for f in files]
    prepare(Path(path), params, workspaces, extra, git_repos)  # a bad file: one line, exit 2
    return _FileRun(
        lambda: run_file(
            Path(path),
            params,
            workspaces,
            executor=executor,
            extra=extra,
            git_repos=git_repos,
            max_parallel=max_parallel,
            observer=observer,  # type: ignore[arg-type]
            run_id=run_id,
        )
    )


def failure(record: RunRecord) -> str:
    """Why a run failed, in one line: its first failed task (DAG before finally) and reason."""
    from taskyard.run.store import FAILED

    failed = [t for t in record.tasks.values() if t.state == FAILED]
    failed.sort(key=lambda t: t.finally_)
    if record.reason.startswith("PipelineRunTimeout") or not failed:
        return record.reason or record.status
    first = failed[0]
    line = f"task {first.name!r} failed"
    if first.reason:
        line += f": {first.reason}"
    if len(failed) > 1:
        line += f" (and {len(failed) - 1} more)"
    return " ".join(line.split())  # one line, whatever the reason held


def add_runs(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="past runs, newest first")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default: 20)")
    p.set_defaults(func=cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="show")
    show = runs_sub.add_parser("show", parents=[common], help="one run's tasks, results, logs")
    show.add_argument("run_id", metavar="ID", help="a run id, a unique prefix, or `latest`")
    show.add_argument("--log", metavar="TASK", help="print that task's log")
    show.set_defaults(func=cmd_runs_show)


def cmd_runs(args: argparse.Namespace) -> int:
    from taskyard.run.progress import runs_table
    from taskyard.run.store import RunStore

    store = RunStore()
    runs = store.list()
    if not runs:
        print(f"no runs yet in {store.root}")
        return 0
    out().print(runs_table(runs[: args.limit]))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from taskyard.redact import redact
    from taskyard.run.progress import summary
    from taskyard.run.store import RunStore

    store = RunStore()
    run = store.get(args.run_id)
    if args.log:
        sys.stdout.write(redact(store.log(run, args.log).read_text(errors="replace")))
        sys.stdout.flush()
        return 0
    con = out()
    con.print(f"[bold]{escape(run.pipeline)}[/] run [bold]{escape(run.id)}[/]")
    con.print(f"[dim]folder:[/] {escape(run.dir)}")
    for key, value in run.trigger.items():
        con.print(f"[dim]trigger[/] {escape(key)} = {escape(redact(value))}")
    for key, value in run.params.items():  # stored redacted; redacted again for older records
        con.print(f"[dim]param[/] {escape(key)} = {escape(redact(value))}")
    for key, value in run.workspaces.items():
        con.print(f"[dim]workspace[/] {escape(key)} = {escape(value or '(unbound)')}")
    con.print()
    summary(run, con)
    return 0
