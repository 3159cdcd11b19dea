"""A runner for the kill tests in tests/test_warm_executor.py and tests/test_warm_kept.py.

Run as ``python -m tests.warm_driver DATA [--idle S] [--grace S]``: one long task (tests.warm_step
through the steps CLI, sleeping with a grandchild, writing both pids to ``DATA/pids``) under a
warm executor. Without ``--idle`` the helper is the run's own; with it, the home's kept one. The
tests SIGKILL this process and check what it leaves behind.
"""

from __future__ import annotations

import argparse

from taskyard.run import Runner
from taskyard.run.executor import SubprocessExecutor
from taskyard.spec import PipelineSpec, PipelineTask, PipelineWorkspace, TaskSpec, Workspace

SLEEPER = TaskSpec(
    name="sleeper", display_name="sleeper", description="sleeps with a grandchild",
    image="python:3.11-slim",
    command=("python", "-m", "tests.warm_step", "--steps-cli", "--sleep", "60",
             "--pids", "$(workspaces.data.path)/pids"),
    workspaces=(Workspace(name="data"),),
)  # fmt: skip
PIPE = PipelineSpec(
    name="sleepy", display_name="sleepy", description="one long task",
    workspaces=(PipelineWorkspace(name="data"),),
    tasks=(PipelineTask(name="sleep", task=SLEEPER, workspaces={"data": "data"}),),
)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--idle", type=float, default=None)
    p.add_argument("--grace", type=float, default=None)
    args = p.parse_args()
    extra = {k: v for k, v in (("warm_idle", args.idle), ("grace", args.grace)) if v is not None}
    ex = SubprocessExecutor(warm=True, warm_modules=("tests.warm_step",), **extra)
    # The step must start warm: wait for the helper rather than let the runner fall back.
    assert ex.warm.ready(120), ex.warm.why
    Runner(PIPE, {}, {"data": args.data}, executor=ex).run()


if __name__ == "__main__":
    main()
