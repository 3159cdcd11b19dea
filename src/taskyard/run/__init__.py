"""The local runner: a pipeline's DAG as local processes, with Tekton's semantics.

``Runner(spec, params, workspaces).run()`` returns the :class:`RunRecord` that is also stored
as ``run.json`` in the run folder ``<taskyard home>/runs/<run-id>/`` (see
:mod:`taskyard.run.store`); ``taskyard run`` is the same thing with a progress display.

What a local run fills in for the user:
- params: ``-p`` values over the spec's defaults; a pipeline param ``mlflow-tracking-uri``
  that the user did not pass gets :func:`taskyard.home.default_tracking_uri` (the env's
  ``MLFLOW_TRACKING_URI`` if set, else the SQLite store under the taskyard home), so every
  run on one machine logs to the one store that ``taskyard ui`` shows;
- workspaces: required pipeline workspaces not bound with ``--workspace NAME=PATH`` get a
  fresh folder in the run; optional ones stay unbound (``$(workspaces.W.path)`` is "" and
  ``$(workspaces.W.bound)`` is "false"), as in a PipelineRun that omits them;
- ``$(context.pipelineRun.name)`` is the run id; ``$(results.R.path)`` is
  ``<run>/results/<task>/R``; ``python`` as a step's command[0] is the runner's interpreter;
- a task requesting GPUs on a host without them follows ``Resources.gpu_fallback``: ``cpu``
  runs it anyway (noted in its log and reason), ``error`` fails it.
"""

from taskyard.run.executor import Executor, Invocation, Layout, Process, SubprocessExecutor
from taskyard.run.load import load_pipeline
from taskyard.run.runner import Observer, Runner, resolve_params, resolve_workspaces, run_pipeline
from taskyard.run.store import RunRecord, RunStore, TaskRecord

__all__ = [
    "Executor",
    "Invocation",
    "Layout",
    "Observer",
    "Process",
    "RunRecord",
    "RunStore",
    "Runner",
    "SubprocessExecutor",
    "TaskRecord",
    "load_pipeline",
    "resolve_params",
    "resolve_workspaces",
    "run_pipeline",
]
