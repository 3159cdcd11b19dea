"""What the local runner costs per task: a chain of 20 no-op tasks, median of several runs.

    python benchmarks/runner_overhead.py [--tasks 20] [--repeat 7]

Prints the median wall time of a whole run (run folder, run.json rewrites, thread + process per
task), the per-task figure (target: <= 0.05 s/task), and the cost of spawning the same
commands back to back with nothing around them, so the runner's own share is visible.

Two chains: ``true`` (the runner's floor) and ``python -c pass`` (like for like with kfp's
lightweight Python components). When ``kfp`` is importable (it is not in the project venv:
see benchmarks/README.md), the same 20-step chain runs with ``kfp.local`` and its
SubprocessRunner(use_venv=False), and the ratio is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from taskyard.run import Runner
from taskyard.spec import PipelineSpec, PipelineTask, TaskSpec


def chain(command: tuple[str, ...], n: int) -> PipelineSpec:
    task = TaskSpec(
        name="noop", display_name="no-op", description="does nothing", image="x", command=command
    )
    tasks = [PipelineTask(name="t00", task=task)]
    for i in range(1, n):
        tasks.append(PipelineTask(name=f"t{i:02d}", task=task, run_after=(f"t{i - 1:02d}",)))
    return PipelineSpec(
        name="noop-chain", display_name="no-op chain", description="overhead", tasks=tuple(tasks)
    )


def layered(command: tuple[str, ...], n: int, width: int = 50) -> PipelineSpec:
    """``n`` tasks in levels of ``width``; each depends on two tasks of the level before."""
    task = TaskSpec(
        name="noop", display_name="no-op", description="does nothing", image="x", command=command
    )
    tasks = []
    for i in range(n):
        level, slot = divmod(i, width)
        after = ()
        if level:
            prev = (level - 1) * width
            after = tuple(sorted({f"t{prev + slot:04d}", f"t{prev + (slot + 1) % width:04d}"}))
        tasks.append(PipelineTask(name=f"t{i:04d}", task=task, run_after=after))
    return PipelineSpec(
        name="noop-dag", display_name="no-op DAG", description="overhead", tasks=tuple(tasks)
    )


def dag_scaling(sizes: tuple[int, ...], width: int, repeat: int) -> None:
    """How the runner's cost grows with the DAG: per-task time should stay flat (linear)."""
    print(f"\nDAG of `true` tasks, width {width}, max-parallel 8, median of {repeat} runs")
    raw = raw_chain(("true",), 50)
    spawn = medians({"spawn": raw}, repeat)["spawn"] / 50
    first = None
    for n in sizes:
        spec = layered(("true",), n, width)

        def run(spec: PipelineSpec = spec) -> None:
            record = Runner(spec, max_parallel=8).run()
            assert record.succeeded, record.reason

        total = medians({"dag": run}, repeat)["dag"]
        per = total / n
        first = first or per
        print(
            f"{n:4d} tasks: {total:7.3f} s total  {per * 1000:6.2f} ms/task  "
            f"(runner's share {(per - spawn) * 1000:5.2f} ms/task; x{per / first:.2f} of the "
            f"smallest per task)"
        )


def medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each function, run round-robin so load drifts hit all alike."""
    for fn in fns.values():
        fn()  # warm-up: imports, page cache, first run folder
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def taskyard_chain(command: tuple[str, ...], n: int) -> Callable[[], object]:
    spec = chain(command, n)

    def run() -> None:
        record = Runner(spec).run()
        assert record.succeeded, record.reason

    return run


def raw_chain(command: tuple[str, ...], n: int) -> Callable[[], object]:
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]

    def run() -> None:
        for _ in range(n):
            subprocess.run(argv, check=True)

    return run


def kfp_chain(n: int, root: Path) -> Callable[[], object] | None:
    try:
        from kfp import dsl, local
    except ImportError:
        return None
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))

    # No annotations: kfp reads them as its own types, and this module has postponed annotations.
    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def noop():  # type: ignore[no-untyped-def]
        pass

    @dsl.pipeline(name="noop-chain")
    def pipeline():  # type: ignore[no-untyped-def]
        previous = noop()
        for _ in range(n - 1):
            previous = noop().after(previous)

    return pipeline


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """kfp.local prints every task's executor log; keep the benchmark's own lines readable."""
    sys.stdout.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def report(label: str, total: float, n: int, raw: float | None = None) -> None:
    line = f"{label:<34} {total:7.3f} s total  {total / n * 1000:7.1f} ms/task"
    if raw is not None:
        line += f"  (runner's share {(total - raw) / n * 1000:5.1f} ms/task)"
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--dag", type=int, nargs="*", default=[100, 250, 500], help="DAG sizes (width 50)"
    )
    args = parser.parse_args()
    n, repeat = args.tasks, args.repeat
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        os.environ["TASKYARD_HOME"] = str(Path(tmp) / "home")
        print(f"{n}-task chain, median of {repeat} runs, Python {sys.version.split()[0]}")
        commands = {"true": ("true",), "python -c pass": ("python", "-c", "pass")}
        fns: dict[str, Callable[[], object]] = {}
        for label, command in commands.items():
            fns[f"spawn only: {label}"] = raw_chain(command, n)
            fns[f"taskyard run: {label}"] = taskyard_chain(command, n)
        kfp = kfp_chain(n, Path(tmp) / "kfp")
        if kfp is not None:
            logging.disable(logging.CRITICAL)  # kfp.local logs every task at INFO
            fns["kfp.local SubprocessRunner"] = kfp
        with quiet_fds() if kfp is not None else contextlib.nullcontext():
            got = medians(fns, repeat)
        for label in commands:
            raw = got[f"spawn only: {label}"]
            report(f"spawn only: {label}", raw, n)
            report(f"taskyard run: {label}", got[f"taskyard run: {label}"], n, raw)
        per_task = got["taskyard run: true"] / n
        verdict = "ok" if per_task <= 0.05 else "OVER TARGET"
        print(f"per-task overhead (true): {per_task * 1000:.1f} ms (target <= 50 ms: {verdict})")
        if kfp is None:
            print("kfp not importable: skipped the kfp.local comparison")
        else:
            kfp_total = got["kfp.local SubprocessRunner"]
            report("kfp.local SubprocessRunner", kfp_total, n)
            print(
                f"kfp.local / taskyard: {kfp_total / got['taskyard run: python -c pass']:.1f}x "
                f"(both Python steps), {kfp_total / got['taskyard run: true']:.1f}x "
                "(taskyard on true)"
            )
        dag_scaling(tuple(args.dag), width=50, repeat=max(1, repeat // 2))
    return 0 if per_task <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
