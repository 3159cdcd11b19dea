"""The only place that knows where results go.

Each engine sets ``TASKYARD_RESULT_<NAME>`` to its result path (Tekton:
``$(results.NAME.path)``; Argo: the ``valueFrom.path`` of the output; local: the run folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from taskyard.errors import StepError

# Tekton's budget for ALL results of a task is 4096 bytes: 512 each keeps 7 results under it.
MAX_RESULT_BYTES = 512


def env_name(result: str) -> str:
    return "TASKYARD_RESULT_" + result.upper().replace("-", "_")


def write_result(name: str, value: str) -> None:
    data = str(value).encode()
    if len(data) > MAX_RESULT_BYTES:
        raise StepError(
            f"result {name!r} is {len(data)} bytes; results must stay under {MAX_RESULT_BYTES}",
            "write big values to the workspace and return their path",
        )
    target = os.environ.get(env_name(name))
    if not target:
        return  # run outside an engine (a user calling the CLI by hand): nothing to write
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_results(values: dict[str, str]) -> None:
    for name, value in values.items():
        write_result(name, value)
