"""``taskyard tasks [NAME]`` and ``taskyard pipelines [NAME]``: the catalog, and one entry of it.

Without NAME a table of the catalog; with NAME everything a user needs to call it: each param
with its type, default and description, the results, the workspaces, and for a pipeline its
tasks in the order they run. A pipeline NAME may also be a fork (``file.py:ATTR``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape

from taskyard.cli._common import UsageError, listing, out
from taskyard.spec import Param, PipelineSpec, TaskSpec, When


def add_catalog(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "tasks",
        parents=[common],
        help="the catalog's tasks",
        description="List the catalog's tasks, or show one task's params, results, workspaces.",
    )
    t.add_argument("name", nargs="?", metavar="NAME", help="a task to show in full")
    t.set_defaults(func=cmd_tasks)
    p = sub.add_parser(
        "pipelines",
        parents=[common],
        help="the catalog's pipelines",
        description=(
            "List the catalog's pipelines, or show one in full: its tasks in order, params, "
            "workspaces and results. NAME is a catalog name or path/to/file.py:ATTR."
        ),
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a pipeline to show in full")
    p.set_defaults(func=cmd_pipelines)


def _unknown(kind: str, name: str, known: Mapping[str, object]) -> UsageError:
    return UsageError(f"unknown {kind} {name!r} (known: {', '.join(sorted(known))})")


def cmd_tasks(args: argparse.Namespace) -> int:
    from taskyard.catalog import TASKS

    if args.name:
        if args.name not in TASKS:
            raise _unknown("task", args.name, TASKS)
        show_task(TASKS[args.name], out())
        return 0
    table = listing(["task", "what", "required params", "results"])
    for t in TASKS.values():
        required = ", ".join(p.name for p in t.params if p.required)
        results = ", ".join(r.name for r in t.results)
        table.add_row(t.name, t.display_name, required, results)
    out().print(table)
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    from taskyard.catalog import PIPELINES

    if args.name:
        show_pipeline(_pipeline(args.name, PIPELINES), out(), ref=args.name)
        return 0
    table = listing(["pipeline", "what", "tasks", "required params"])
    for p in PIPELINES.values():
        tasks = " → ".join(p.order())
        if p.finally_:
            tasks += "; finally " + ", ".join(t.name for t in p.finally_)
        required = ", ".join(x.name for x in p.params if x.required)
        table.add_row(p.name, p.display_name, tasks, required)
    con = out()
    con.print(table)
    con.print("[dim]run one: taskyard run NAME -p KEY=VALUE …[/]")
    return 0


def _pipeline(name: str, catalog: Mapping[str, PipelineSpec]) -> PipelineSpec:
    if ":" not in name:
        if name not in catalog:
            raise _unknown("pipeline", name, catalog)
        return catalog[name]
    from taskyard.errors import TaskyardError
    from taskyard.run import load_pipeline

    try:
        return load_pipeline(name)
    except TaskyardError as e:
        raise UsageError(str(e)) from e


def _type(p: Param) -> str:
    return "one of " + ", ".join(p.enum) if p.enum else p.type


def _default(p: Param) -> str:
    if p.required:
        return "(required)"
    return p.default or '""'


def _params(con: Console, params: Sequence[Param]) -> None:
    con.print("[bold]params[/]" + ("" if params else " none"))
    if not params:
        return
    table = listing(["name", "type", "default", "description"])
    for p in params:
        table.add_row(*_cells(f"{p.name}", _type(p), _default(p), p.description))
    con.print(table)


def _header(con: Console, name: str, version: str, display: str, description: str) -> None:
    con.print(f"[bold]{escape(name)}[/] {escape(version)} — {escape(display)}")
    if description:
        con.print(escape(" ".join(description.split())))
    con.print()


def show_task(t: TaskSpec, con: Console) -> None:
    """One task in full: the step it runs, then params, results, workspaces."""
    _header(con, t.name, t.version, t.display_name, t.description)
    image = t.param("image").default if "image" in t.param_names else t.image
    con.print(f"[bold]runs[/] {escape(' '.join(t.command))}  [dim]in[/] {escape(image or '')}")
    gpu = f", gpu {t.resources.gpu}" if t.resources.gpu else ""
    con.print(f"[bold]network[/] {'yes' if t.network else 'no'}{gpu}")
    con.print()
    _params(con, t.params)
    con.print()
    con.print("[bold]results[/]" + ("" if t.results else " none"))
    if t.results:
        table = listing(["name", "description"])
        for r in t.results:
            table.add_row(*_cells(f"{r.name}", r.description))
        con.print(table)
    con.print()
    con.print("[bold]workspaces[/]" + ("" if t.workspaces else " none"))
    if t.workspaces:
        table = listing(["name", "optional", "read-only", "description"])
        for w in t.workspaces:
            table.add_row(*_cells(f"{w.name}", _yes(w.optional), _yes(w.read_only), w.description))
        con.print(table)


def show_pipeline(p: PipelineSpec, con: Console, ref: str = "") -> None:
    """One pipeline in full: tasks in run order, then params, workspaces, results."""
    _header(con, p.name, p.version, p.display_name, p.description)
    con.print("[bold]tasks[/] (in order)")
    table = listing(["#", "task", "runs", "after", "when"])
    for i, name in enumerate(p.order(), 1):
        pt = p.get(name)
        after = ", ".join(sorted(p.dependencies(pt))) or "-"
        table.add_row(*_cells(f"{i}", name, pt.task.name, after, _when(pt.when)))
    for pt in p.finally_:
        table.add_row(*_cells("finally", pt.name, pt.task.name, "all tasks", _when(pt.when)))
    con.print(table)
    con.print()
    _params(con, p.params)
    con.print()
    con.print("[bold]workspaces[/]" + ("" if p.workspaces else " none"))
    if p.workspaces:
        table = listing(["name", "optional", "description"])
        for w in p.workspaces:
            table.add_row(*_cells(f"{w.name}", _yes(w.optional), w.description))
        con.print(table)
    con.print()
    con.print("[bold]results[/]" + ("" if p.results else " none"))
    if p.results:
        table = listing(["name", "value", "description"])
        for r in p.results:
            table.add_row(*_cells(f"{r.name}", r.value, r.description))
        con.print(table)
    con.print()
    con.print(f"[dim]run it: taskyard run {escape(ref or p.name)} -p KEY=VALUE …[/]")


def _when(when: Sequence[When]) -> str:
    return "; ".join(f"{w.input} {w.operator} {', '.join(w.values)}" for w in when) or "-"


def _cells(*texts: str) -> list[str]:
    """Table cells as plain text: a description's ``[x]`` is not rich markup."""
    return [escape(" ".join(t.split())) for t in texts]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
