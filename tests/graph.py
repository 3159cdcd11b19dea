"""The engine-neutral graph of a pipeline, for the parity tests.

Each engine's test turns its rendered documents back into this shape (translating its own
reference syntax into the spec's ``$(...)`` form); the graphs must be equal.
"""

from __future__ import annotations

from typing import Any

from taskyard.spec import PipelineSpec


def spec_graph(p: PipelineSpec) -> dict[str, Any]:
    tasks = {}
    for t in p.all_tasks:
        tasks[t.name] = {
            "task": t.task.name,
            "finally": p.is_finally(t.name),
            "deps": sorted(p.dependencies(t)),
            "when": sorted((w.input, w.operator, tuple(w.values)) for w in t.when),
            "params": dict(sorted(t.params.items())),
            "image": t.task.param("image").default,
            "command": list(t.task.command),
            "args": list(t.task.args),
            "retries": t.retries,
            "timeout": t.timeout,
        }
    return {"name": p.name, "params": sorted(x.name for x in p.params), "tasks": tasks}
