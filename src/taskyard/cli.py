"""``taskyard``: run pipelines locally, look at past runs, list the catalog, render, open the UI.

Every expected failure prints ``error: <one line>`` on stderr: exit 2 for usage errors (bad
flags, unknown pipeline/param/workspace), 1 for failures (a failed run, a drifted render),
130 for Ctrl-C. ``--debug`` adds the traceback.

Commands register themselves in :data:`COMMANDS`; a new one (``demo``, ``deployments``) is a
function ``add(sub, common)`` that adds its sub-parser and sets ``func=handler``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskyard import __version__
from taskyard.cli_extra import add_demo, add_deployments, add_executor_flag, add_serve
from taskyard.cli_images import add_images
from taskyard.errors import TaskyardError
from taskyard.render.emit import ENGINES

if TYPE_CHECKING:
    from taskyard.run.store import RunRecord


class UsageError(TaskyardError):
    """A bad command line: exit 2, as argparse does."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _out() -> Console:
    return Console(highlight=False)


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


# ---- run ---------------------------------------------------------------------------------------
def _add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a pipeline locally",
        description=(
            "Run a pipeline on this machine, each task as a subprocess. PIPELINE is a catalog "
            "name, path/to/file.py:ATTR or package.module:ATTR. A pipeline param "
            "`mlflow-tracking-uri` left unset points at the taskyard home's SQLite store."
        ),
    )
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="pipeline param (repeatable)"
    )
    p.add_argument(
        "--workspace",
        action="append",
        metavar="NAME=PATH",
        help="bind a pipeline workspace to an existing folder (default: a folder in the run)",
    )
    p.add_argument("--max-parallel", type=int, default=4, metavar="N", help="default: 4")
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id (default: made up); for supervisors that track the run's folder",
    )
    add_executor_flag(p)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    return execute(
        args.pipeline,
        pairs(args.param, "-p"),
        pairs(args.workspace, "--workspace"),
        max_parallel=args.max_parallel,
        executor=args.executor,
        run_id=args.run_id,
    )


def execute(
    pipeline: str,
    params: dict[str, str],
    workspaces: dict[str, str],
    max_parallel: int,
    executor: str = "subprocess",
    run_id: str | None = None,
) -> int:
    """Run a pipeline with live progress; the exit code of ``taskyard run``."""
    from taskyard.redact import redact
    from taskyard.run import Runner, load_pipeline
    from taskyard.run.progress import Progress
    from taskyard.run.store import CANCELLED, SUCCEEDED

    chosen = None
    if executor == "docker":  # no daemon is the machine's problem (exit 1), not a usage error
        from taskyard.run.docker import DockerExecutor

        chosen = DockerExecutor()
        chosen.check()
    try:
        spec = load_pipeline(pipeline)
        runner = Runner(
            spec,
            params,
            workspaces,
            max_parallel=max_parallel,
            executor=chosen,
            observer=Progress(Console(stderr=False)),
            run_id=run_id,
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


# ---- runs --------------------------------------------------------------------------------------
def _add_runs(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="past runs, newest first")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default: 20)")
    p.set_defaults(func=_cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="show")
    show = runs_sub.add_parser("show", parents=[common], help="one run's tasks, results, logs")
    show.add_argument("run_id", metavar="ID", help="a run id, a unique prefix, or `latest`")
    show.add_argument("--log", metavar="TASK", help="print that task's log")
    show.set_defaults(func=_cmd_runs_show)


def _cmd_runs(args: argparse.Namespace) -> int:
    from taskyard.run.progress import runs_table
    from taskyard.run.store import RunStore

    store = RunStore()
    runs = store.list()
    if not runs:
        print(f"no runs yet in {store.root}")
        return 0
    _out().print(runs_table(runs[: args.limit]))
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    from taskyard.redact import redact
    from taskyard.run.progress import summary
    from taskyard.run.store import RunStore

    store = RunStore()
    run = store.get(args.run_id)
    if args.log:
        sys.stdout.write(redact(store.log(run, args.log).read_text(errors="replace")))
        sys.stdout.flush()
        return 0
    con = _out()
    con.print(f"[bold]{escape(run.pipeline)}[/] run [bold]{escape(run.id)}[/]")
    con.print(f"[dim]folder:[/] {escape(run.dir)}")
    for key, value in run.params.items():  # stored redacted; redacted again for older records
        con.print(f"[dim]param[/] {escape(key)} = {escape(redact(value))}")
    for key, value in run.workspaces.items():
        con.print(f"[dim]workspace[/] {escape(key)} = {escape(value or '(unbound)')}")
    con.print()
    summary(run, con)
    return 0


# ---- catalog listings --------------------------------------------------------------------------
def _listing(columns: list[str]) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0, overflow="fold")
    return table


def _add_catalog(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub.add_parser("tasks", parents=[common], help="the catalog's tasks").set_defaults(
        func=_cmd_tasks
    )
    sub.add_parser("pipelines", parents=[common], help="the catalog's pipelines").set_defaults(
        func=_cmd_pipelines
    )


def _cmd_tasks(args: argparse.Namespace) -> int:
    from taskyard.catalog import TASKS

    table = _listing(["task", "what", "required params", "results"])
    for t in TASKS.values():
        required = ", ".join(p.name for p in t.params if p.required)
        results = ", ".join(r.name for r in t.results)
        table.add_row(t.name, t.display_name, required, results)
    _out().print(table)
    return 0


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from taskyard.catalog import PIPELINES

    table = _listing(["pipeline", "what", "tasks", "required params"])
    for p in PIPELINES.values():
        tasks = " → ".join(p.order())
        if p.finally_:
            tasks += "; finally " + ", ".join(t.name for t in p.finally_)
        required = ", ".join(x.name for x in p.params if x.required)
        table.add_row(p.name, p.display_name, tasks, required)
    con = _out()
    con.print(table)
    con.print("[dim]run one: taskyard run NAME -p KEY=VALUE …[/]")
    return 0


# ---- ui ----------------------------------------------------------------------------------------
def _add_ui(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="the MLflow UI on the local store")
    p.add_argument("--port", type=int, default=5000, help="default: 5000")
    p.set_defaults(func=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    import importlib.util

    from taskyard.home import default_tracking_uri
    from taskyard.steps._mlflow import artifact_root

    if importlib.util.find_spec("mlflow") is None:
        raise TaskyardError("mlflow is not installed", "pip install 'taskyard[train]'")
    uri = default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    root = artifact_root(uri)
    if root:
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", root]
    # One worker: a UI for one person; mlflow's default of 4 is heavy on a laptop.
    cmd += ["--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store: {uri}); Ctrl-C to stop")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# ---- render ------------------------------------------------------------------------------------
def _add_render(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "render",
        parents=[common],
        help="write the Tekton/Argo files from the definitions",
        description="Rewrite the rendered engine files under the current folder.",
    )
    p.add_argument("--check", action="store_true", help="fail if committed files differ")
    p.add_argument("--engine", choices=sorted(ENGINES), help="only this engine")
    p.set_defaults(func=_cmd_render)


def _cmd_render(args: argparse.Namespace) -> int:
    from taskyard.render import emit

    root = Path.cwd()
    engines = [args.engine] if args.engine else None
    if args.check:
        bad = emit.drift(root, engines)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise TaskyardError(
                f"{len(bad)} rendered file(s) differ from the definitions: {shown}",
                "run `taskyard render`",
            )
        print("rendered files are up to date")
        return 0
    written = emit.write(root, engines)
    print(f"rendered {len(written)} files under {root}")
    return 0


Registrar = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]
COMMANDS: list[Registrar] = [
    _add_run,
    add_demo,
    _add_runs,
    add_deployments,
    add_serve,
    _add_catalog,
    _add_ui,
    _add_render,
    add_images,
]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser = _Parser(
        prog="taskyard",
        description="ML CI/CD tasks defined once in Python: run locally, render to Tekton/Argo.",
    )
    parser.add_argument("--version", action="version", version=f"taskyard {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the listener owns its flags, --help included
        try:
            from taskyard.serve.app import serve_main
        except ImportError as e:
            print(f"error: taskyard serve: {e} (pip install 'taskyard[serve]')", file=sys.stderr)
            return 1
        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    debug = args.debug or bool(os.environ.get("TASKYARD_DEBUG"))
    try:
        return args.func(args)
    except TaskyardError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
