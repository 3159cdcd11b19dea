"""Which ServiceAccount each task runs as: the one map the Tekton, Argo and namespace renders share.

One ServiceAccount per task kind (:mod:`taskyard.render.namespace` renders them):

- ``clone`` (``git-clone``): reads the repository, never the API server;
- ``ml`` (``run-tests``, ``train``, ``train-gpu``, ``evaluate``, ``promote``, and any task of a
  project's own): MLflow only, never the API server;
- ``deploy``: the only one with a token and a Role (Deployments, Services, InferenceServices);
- ``report``: writes the run's summary, never the API server.

Pure data, no imports of the renderers (they all import this).
"""

from __future__ import annotations

from collections.abc import Mapping

PART_OF_KEY = "app.kubernetes.io/part-of"
PART_OF = "taskyard"
# On every pipeline pod: the Tekton Pipelines/Tasks and the Argo templates' podMetadata carry it.
POD_LABELS: Mapping[str, str] = {PART_OF_KEY: PART_OF}

CLONE, ML, DEPLOY, REPORT = "clone", "ml", "deploy", "report"
ACCOUNTS: Mapping[str, str] = {
    CLONE: "taskyard-clone",
    ML: "taskyard-ml",
    DEPLOY: "taskyard-deploy",
    REPORT: "taskyard-report",
}
# Only the deploy kind calls the API server; the others' accounts mount no token.
TOKEN_KINDS = frozenset({DEPLOY})
DEFAULT_KIND = ML
# Catalog task name -> kind; any other task (a project's own) is DEFAULT_KIND.
TASK_KINDS: Mapping[str, str] = {
    "git-clone": CLONE,
    "run-tests": ML,
    "train": ML,
    "train-gpu": ML,
    "evaluate": ML,
    "promote": ML,
    "deploy": DEPLOY,
    "report": REPORT,
}
DEFAULT_ACCOUNT = ACCOUNTS[DEFAULT_KIND]
DEPLOY_ACCOUNT = ACCOUNTS[DEPLOY]


def kind_of(task: str) -> str:
    """The kind of a task, by its (catalog) task name."""
    return TASK_KINDS.get(task, DEFAULT_KIND)


def account_of(task: str) -> str:
    """The ServiceAccount a task's pods run as, by its (catalog) task name."""
    return ACCOUNTS[kind_of(task)]


def mounts_token(task: str) -> bool:
    """Whether the task's pods get an API token (only the deploy kind's)."""
    return kind_of(task) in TOKEN_KINDS


def tasks_of(kind: str) -> tuple[str, ...]:
    """The catalog tasks of a kind, in catalog order."""
    return tuple(t for t, k in TASK_KINDS.items() if k == kind)
