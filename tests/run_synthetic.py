"""Small synthetic pipelines for the runner and CLI tests: each task is a ``python -c`` step.

Loadable by the CLI as ``tests/run_synthetic.py:NAME``. Steps record what they did in the
``data`` workspace (``<task>.start`` / ``<task>.end`` timestamps) so tests can check order and
overlap from real files, not from the runner's own record.
"""

from __future__ import annotations

from taskyard.spec import (
    TASKS_STATUS,
    Param,
    PipelineResult,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    Result,
    TaskSpec,
    When,
    Workspace,
    param,
    result,
    task_status,
)

# step: argv = [name, value, sleep, exit-code, data-dir, result-path]
_STEP = """
import os, sys, time
name, value, sleep, code, data, out = sys.argv[1:7]
open(os.path.join(data, name + '.start'), 'w').write(repr(time.time()))
print('step', name, 'value', value, flush=True)
time.sleep(float(sleep))
if out:
    open(out, 'w').write(value)
open(os.path.join(data, name + '.end'), 'w').write(repr(time.time()))
if int(code):
    print('error: step', name, 'failed on purpose', file=sys.stderr)
sys.exit(int(code))
"""

STEP = TaskSpec(
    name="step",
    display_name="synthetic step",
    description="Records start/end in the data workspace, writes its value as a result.",
    image="python:3.11-slim",
    command=("python", "-c", _STEP),
    args=(
        "$(params.name)",
        "$(params.value)",
        "$(params.sleep)",
        "$(params.exit-code)",
        "$(workspaces.data.path)",
        "$(results.out.path)",
    ),
    params=(
        Param(name="name"),
        Param(name="value", default=""),
        Param(name="sleep", default="0"),
        Param(name="exit-code", default="0"),
    ),
    results=(Result(name="out"),),
    workspaces=(Workspace(name="data"),),
)

# A step that fails on its first attempt (leaving a marker file) and succeeds on the next.
FLAKY = TaskSpec(
    name="flaky",
    display_name="flaky step",
    description="Fails once, then succeeds.",
    image="python:3.11-slim",
    command=(
        "python",
        "-c",
        "import os, sys\n"
        "marker = os.path.join(sys.argv[1], 'flaky.marker')\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close(); print('first attempt fails'); sys.exit(1)\n"
        "open(sys.argv[2], 'w').write('ok'); print('second attempt succeeds')\n",
    ),
    args=("$(workspaces.data.path)", "$(results.out.path)"),
    results=(Result(name="out"),),
    workspaces=(Workspace(name="data"),),
)

# Sleeps for long and starts a grandchild that writes its pid, to check group kills.
HANG = TaskSpec(
    name="hang",
    display_name="hanging step",
    description="Starts a grandchild sleeper and sleeps.",
    image="python:3.11-slim",
    command=(
        "python",
        "-c",
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "open(os.path.join(sys.argv[1], 'hang.pid'), 'w').write(str(child.pid))\n"
        "print('hanging', flush=True)\n"
        "time.sleep(60)\n",
    ),
    args=("$(workspaces.data.path)",),
    workspaces=(Workspace(name="data"),),
)

# Writes what it sees (statuses, optional workspace) as results.
SHOW = TaskSpec(
    name="show",
    display_name="show values",
    description="Writes its params as results.",
    image="python:3.11-slim",
    command=(
        "python",
        "-c",
        "import sys\nfor path, value in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    open(path, 'w').write(value)\n",
    ),
    args=(
        "$(results.a.path)",
        "$(params.a)",
        "$(results.b.path)",
        "$(params.b)",
        "$(results.opt-path.path)",
        "$(workspaces.opt.path)",
        "$(results.opt-bound.path)",
        "$(workspaces.opt.bound)",
    ),
    env={"SHOW_A": "$(params.a)"},
    params=(Param(name="a", default=""), Param(name="b", default="")),
    results=(Result(name="a"), Result(name="b"), Result(name="opt-path"), Result(name="opt-bound")),
    workspaces=(Workspace(name="opt", optional=True),),
)

# Declares a result and never writes it.
SILENT = TaskSpec(
    name="silent",
    display_name="silent",
    description="Runs `true`.",
    image="busybox",
    command=("true",),
    results=(Result(name="out"),),
)

DATA = (PipelineWorkspace(name="data"),)


def step(name: str, **kw: object) -> PipelineTask:
    params = {"name": name}
    params.update({k.replace("_", "-"): str(v) for k, v in kw.pop("params", {}).items()})  # type: ignore[union-attr]
    return PipelineTask(name=name, task=STEP, params=params, workspaces={"data": "data"}, **kw)  # type: ignore[arg-type]


def pipeline(name: str, *tasks: PipelineTask, **kw: object) -> PipelineSpec:
    return PipelineSpec(
        name=name,
        display_name=name,
        description=f"synthetic {name}",
        workspaces=kw.pop("workspaces", DATA),  # type: ignore[arg-type]
        tasks=tasks,
        **kw,  # type: ignore[arg-type]
    )


# a -> b (reads a's result) -> c; the value comes from a pipeline param.
CHAIN = pipeline(
    "chain",
    step("a", params={"value": param("greeting")}),
    step("b", params={"value": result("a", "out") + "+b"}),
    step("c", params={"value": result("b", "out") + "+c"}),
    params=(Param(name="greeting"), Param(name="suffix", default="!")),
    results=(PipelineResult(name="final", value=result("c", "out") + param("suffix")),),
)

# Two independent 0.5 s tasks, then one that needs both.
PARALLEL = pipeline(
    "parallel",
    step("left", params={"sleep": "0.5"}),
    step("right", params={"sleep": "0.5"}),
    step("join", run_after=("left", "right")),
)

# gate is when-skipped unless go=yes; after-gate (run_after) still runs; reads-gate (reads its
# result) is skipped, and so is after-reads (run_after a task skipped for missing results).
WHEN = pipeline(
    "when",
    step("gate", when=(When(input=param("go"), values=("yes",)),), params={"value": "g"}),
    step("after-gate", run_after=("gate",)),
    step("reads-gate", params={"value": result("gate", "out")}),
    step("after-reads", run_after=("reads-gate",)),
    params=(Param(name="go", default="no"),),
)

# boom fails; slow (independent, already running) finishes; never (after boom) is not started;
# the finally task sees the aggregate and per-task statuses.
FAILING = pipeline(
    "failing",
    step("slow", params={"sleep": "1"}),
    step("boom", params={"exit-code": "3", "sleep": "0.2"}),
    step("never", run_after=("boom",)),
    finally_=(
        PipelineTask(
            name="final",
            task=SHOW,
            params={"a": TASKS_STATUS, "b": task_status("boom") + "," + task_status("never")},
        ),
    ),
)

# finally after a fully successful run, with an unbound optional workspace.
FINALLY_OK = pipeline(
    "finally-ok",
    step("only"),
    finally_=(
        PipelineTask(
            name="final",
            task=SHOW,
            params={"a": TASKS_STATUS, "b": task_status("only")},
            workspaces={"opt": "extra"},
        ),
    ),
    workspaces=(*DATA, PipelineWorkspace(name="extra", optional=True)),
)

RETRY = pipeline(
    "retry",
    PipelineTask(name="flaky", task=FLAKY, workspaces={"data": "data"}, retries=2),
)

TIMEOUT = pipeline(
    "timeout",
    PipelineTask(name="hang", task=HANG, workspaces={"data": "data"}, timeout=1),
    step("next", run_after=("hang",)),
)

PIPELINE_TIMEOUT = pipeline(
    "pipeline-timeout",
    PipelineTask(name="hang", task=HANG, workspaces={"data": "data"}),
    finally_=(PipelineTask(name="final", task=SHOW, params={"a": TASKS_STATUS}),),
    timeout=1,
)

# The param name the runner fills with the taskyard home's MLflow store.
MLFLOW = pipeline(
    "mlflow",
    PipelineTask(name="show", task=SHOW, params={"a": param("mlflow-tracking-uri")}),
    params=(Param(name="mlflow-tracking-uri", default=""),),
    workspaces=(),
)

# A task that succeeds without writing its declared result, and a consumer of it.
NO_RESULT = pipeline(
    "no-result",
    PipelineTask(name="silent", task=SILENT),
    step("consumer", params={"value": result("silent", "out")}),
)

# Hangs until stopped: for Ctrl-C; the finally task must not start after a cancel.
HANG_FOREVER = pipeline(
    "hang-forever",
    PipelineTask(name="hang", task=HANG, workspaces={"data": "data"}),
    finally_=(PipelineTask(name="final", task=SHOW),),
)
