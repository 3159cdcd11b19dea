"""What a person sees during and after a run: a live table on a terminal, plain lines in CI.

Both forms end with the same summary table (task, state, attempts, duration, results, reason)
and the pipeline's results; ``taskyard runs show`` prints that summary for a past run.

A live run's record holds real values; everything shown here is redacted (taskyard.redact).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskyard.redact import redact
from taskyard.run.store import (
    ABANDONED,
    CACHED,
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    RunRecord,
    TaskRecord,
)

STYLE = {
    PENDING: "dim",
    RUNNING: "cyan",
    SUCCEEDED: "green",
    FAILED: "bold red",
    SKIPPED: "yellow",
    CANCELLED: "magenta",
    ABANDONED: "magenta",
    CACHED: "green",
}
MAX_RESULT_CHARS = 48


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _state(state: str) -> Text:
    return Text(state, style=STYLE.get(state, ""))


def _attempts(t: TaskRecord) -> str:
    if not t.attempts:
        return ""
    return f"{t.attempts}/{t.retries + 1}" if t.retries else str(t.attempts)


def _short(value: str) -> str:
    value = redact(value).strip().replace("\n", " ")
    return value if len(value) <= MAX_RESULT_CHARS else value[: MAX_RESULT_CHARS - 1] + "…"


def _results(results: dict[str, str]) -> str:
    return "\n".join(f"{k}={_short(v)}" for k, v in results.items())


def _reason(t: TaskRecord) -> str:
    if t.cached_from and not t.reason:
        return f"from cache entry {t.cached_from}"
    return t.reason


def _is_trial(t: TaskRecord) -> bool:
    return t.name.endswith("]") and "[" in t.name


def task_table(run: RunRecord, *, live: bool = False, results: bool = True) -> Table:
    """Every task of the run; ``live`` shows running durations and hides results."""
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("task")
    table.add_column("state")
    table.add_column("attempt" if live else "attempts", justify="right")
    table.add_column("duration", justify="right")
    results = results and not live
    if results:
        table.add_column("results", overflow="fold")
    table.add_column("reason", overflow="fold")
    for t in run.tasks.values():
        name = f"{t.name} [dim](finally)[/]" if t.finally_ else t.name
        if _is_trial(t):  # one combination of a matrixed task, under it (run/runner.py)
            name = f"[dim]└[/] {t.name}"
        row = [name, _state(t.shown_state), _attempts(t), fmt_duration(t.duration)]
        if results:
            row.append(escape(_results(t.results)))
        row.append(Text(redact(_reason(t)), style="dim"))
        table.add_row(*row)
    return table


def summary(run: RunRecord, console: Console) -> None:
    """The table printed at the end of a run and by ``taskyard runs show``.

    Per-task results only fit a wide console; the pipeline results below carry the key facts.
    """
    console.print(task_table(run, results=console.width >= 120))
    if run.results:
        console.print()
        console.print("[bold]pipeline results[/]")
        for k, v in run.results.items():
            console.print(f"  {k} = {escape(_short(v))}", highlight=False)
    console.print()
    status = run.display_status()
    reason = f" ({redact(run.reason)})" if run.reason and run.reason != status else ""
    line = Text.assemble(
        (status, STYLE.get(status, "")),
        f"{reason} in {fmt_duration(run.duration)} — run {run.id}",
    )
    console.print(line)
    console.print(f"[dim]logs: {escape(str(run.path / 'logs'))}[/]", highlight=False)


class Progress:
    """An Observer for the runner: a live table on a TTY, one line per state change otherwise."""

    def __init__(self, console: Console | None = None, live: bool | None = None) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._run: RunRecord | None = None
        self._shown: dict[str, tuple[str, int]] = {}

    def started(self, run: RunRecord) -> None:
        self._run = run
        self.console.print(
            f"[bold]{escape(run.pipeline)}[/] run [bold]{escape(run.id)}[/]"
            f" [dim]({escape(run.dir)})[/]",
            highlight=False,
        )
        if self.live:
            self._live = Live(
                get_renderable=lambda: task_table(run, live=True),
                console=self.console,
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()

    def changed(self, run: RunRecord, task: str) -> None:
        if self._live is not None:
            self._live.refresh()
            return
        t = run.tasks[task]
        key = (t.state, t.attempts)
        if self._shown.get(task) == key:
            return
        self._shown[task] = key
        stamp = time.strftime("%H:%M:%S")
        detail = ""
        if t.state == RUNNING and t.retries:
            detail = f" attempt {_attempts(t)}"
        elif t.state in TERMINAL:
            detail = f" {fmt_duration(t.duration)}" if t.attempts else ""
            if reason := _reason(t):
                detail += f" ({redact(reason)})"
        state = t.shown_state
        self.console.print(
            Text.assemble(f"{stamp} {t.name} ", (state, STYLE.get(state, "")), detail),
            highlight=False,
        )

    def finished(self, run: RunRecord) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print()
        summary(run, self.console)


def runs_table(runs: list[RunRecord]) -> Table:
    """``taskyard runs``: newest first; the reason column only when a run has one to show."""

    def reason(r: RunRecord) -> str:
        return "" if r.reason in (r.status, "Succeeded", "Completed") else r.reason

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("run", no_wrap=True)
    table.add_column("pipeline", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    with_reason = any(reason(r) for r in runs)
    if with_reason:
        table.add_column("reason", overflow="fold", min_width=12)
    for r in runs:
        row: list[str | Text] = [
            r.id,
            r.pipeline,
            _state(r.display_status()),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)),
            fmt_duration(r.duration),
        ]
        if with_reason:
            row.append(Text(redact(reason(r)), style="dim"))
        table.add_row(*row)
    return table
