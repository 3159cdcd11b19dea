"""What fires which pipeline on a cluster: the plan both trigger renderers share.

Pure data. The same behaviour as ``taskyard serve`` (docs/triggers.md): pushes to a branch run
``ci`` (every branch) and ``train-eval-deploy`` (``main``); a nightly schedule runs ``retrain``
and a six-hourly one ``drift-retrain``; Alertmanager's drift alert (docs/monitoring.md) runs
``drift-retrain`` on the model server's window of inputs; branch deletes never run anything.
Every run on a cluster gets the plan's model name and MLflow server (:func:`run_values`): left
empty, each pod would log to its own throw-away store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from taskyard.errors import RenderError
from taskyard.render import yamlfmt
from taskyard.render.emit import HEADER
from taskyard.render.values import CATALOG, Values

if TYPE_CHECKING:
    from taskyard.spec import PipelineSpec

ZERO_SHA = "0" * 40
PART_OF = "taskyard"
SECRET_NAME = "taskyard-webhook"  # a Secret the user creates: key `secret` = the webhook secret
SECRET_KEY = "secret"
# What every cluster run of a pipeline declaring them must get from the operator, never "".
CLUSTER_VALUES = ("model-name", "mlflow-tracking-uri")
# A Secret the user creates for Alertmanager's webhook: key `token` = the bearer token that
# Alertmanager's `http_config.authorization.credentials_file` holds (deploy/monitoring/).
ALERT_SECRET_NAME = "taskyard-alertmanager"
ALERT_SECRET_KEY = "token"
DRIFT_ALERT = "TaskyardModelDataDrift"
# What detect-drift compares on an alert: the window of the model server that fired it.
WINDOW_PATH = "/monitoring/window"
# The alert's `instance` label as Prometheus writes it (`host:port`, `[v6]:port`): checked before
# it becomes part of that URL, on both engines (RE2 and Python agree on this subset).
INSTANCE_RE = r"^[A-Za-z0-9][A-Za-z0-9.-]*:[0-9]+$|^\[[0-9A-Fa-f:.]+\]:[0-9]+$"
_REPO_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")


@dataclass(frozen=True)
class PushTrigger:
    pipeline: str
    branches: tuple[str, ...]  # globs; `*` matches across `/` (like fnmatch in taskyard serve)
    paths: tuple[str, ...] = ()  # globs; empty: any change


@dataclass(frozen=True)
class CronTrigger:
    name: str
    pipeline: str
    schedule: str
    timezone: str
    repo_url: str
    revision: str


@dataclass(frozen=True)
class AlertTrigger:
    """A firing Alertmanager alert (by ``alertname``) that starts ``pipeline`` on the plan's
    repository at ``revision``, with ``current`` = the alerting server's drift window."""

    name: str
    alertname: str
    pipeline: str
    revision: str = "main"


@dataclass(frozen=True)
class Plan:
    push: tuple[PushTrigger, ...]
    cron: tuple[CronTrigger, ...]
    alerts: tuple[AlertTrigger, ...] = ()
    # The repository, model, MLflow server the triggers name (the catalog: placeholders).
    values: Values = CATALOG
    # The pipelines the triggers run, by name; None: the catalog's.
    pipelines: Mapping[str, PipelineSpec] | None = None

    @property
    def repo_url(self) -> str:
        """The repository the GitHub EventSource names (Argo Events requires one)."""
        return self.values.repo_url

    def pipeline(self, name: str) -> PipelineSpec:
        if self.pipelines is not None:
            return self.pipelines[name]
        from taskyard.catalog import PIPELINES

        return PIPELINES[name]


DEFAULT = Plan(
    push=(
        PushTrigger("ci", ("*",)),
        PushTrigger("train-eval-deploy", ("main",)),
    ),
    cron=(
        CronTrigger(
            name="nightly-retrain",
            pipeline="retrain",
            schedule="0 3 * * *",
            timezone="UTC",
            repo_url=CATALOG.repo_url,
            revision="main",
        ),
        CronTrigger(
            name="drift-check",
            pipeline="drift-retrain",
            schedule="30 */6 * * *",
            timezone="UTC",
            repo_url=CATALOG.repo_url,
            revision="main",
        ),
    ),
    alerts=(AlertTrigger("model-drift", DRIFT_ALERT, "drift-retrain"),),
)


def required_values(spec: PipelineSpec) -> set[str]:
    """The :data:`CLUSTER_VALUES` a run of ``spec`` must be given: those it declares, except
    an MLflow URI that only run-tests reads, for its cache (ci): without one, tests run
    uncached (steps/run_tests.py), which is no silent per-pod store."""
    from taskyard.spec import param

    needed = {p.name for p in spec.params} & set(CLUSTER_VALUES)
    uri = "mlflow-tracking-uri"
    users = [pt for pt in spec.all_tasks if param(uri) in pt.params.values()]
    if users and all(pt.task.command[-1:] == ("taskyard.steps.run_tests",) for pt in users):
        needed.discard(uri)
    return needed


def run_values(plan: Plan, pipeline: str) -> dict[str, str]:
    """Model name, MLflow URI and ``-p`` params of every run of ``pipeline``: those it declares.

    A declared :data:`CLUSTER_VALUES` param left empty is a render error, not a run that
    silently logs to a per-pod SQLite store.
    """
    declared = {p.name for p in plan.pipeline(pipeline).params}
    out = {k: v for k, v in plan.values.pinned_params().items() if k in declared}
    needed = required_values(plan.pipeline(pipeline))
    for name in (n for n in CLUSTER_VALUES if n in needed):
        if not out.get(name, "").strip():
            raise RenderError(f"pipeline {pipeline!r}: the triggers need a value for {name!r}")
    return out


def workspace_secrets(plan: Plan, pipeline: str) -> dict[str, str]:
    """Optional workspace -> the Secret a trigger binds to it (those the pipeline declares)."""
    optional = {w.name for w in plan.pipeline(pipeline).workspaces if w.optional}
    return {ws: secret for ws, secret in plan.values.workspace_secrets if ws in optional}


def repo_path(url: str) -> str:
    """``https://github.com/acme/model.git`` -> ``acme/model`` (GitHub ``full_name``, GitLab
    ``path_with_namespace``); scp-like ``git@host:acme/model.git`` too."""
    parts = urlsplit(url)
    path = parts.path if parts.scheme else url.partition(":")[2]
    path = path.strip("/").removesuffix(".git")
    if not _REPO_PATH.fullmatch(path):
        raise RenderError(f"cannot tell the repository's owner/name from {url!r}")
    return path


def repo_regex(url: str) -> str:
    """An anchored, case-insensitive RE2 for the repository's ``owner/name`` (GitHub keeps the
    case a repository was created with; URLs are often typed in lower case)."""
    return "(?i)^" + _escape(repo_path(url)) + "$"


def glob_regex(globs: tuple[str, ...], prefix: str = "") -> str:
    """An anchored RE2 (Go) / Python regex matching any glob: ``*`` -> ``.*``, ``?`` -> ``.``."""
    alts = ["".join(_GLOB.get(c, "\\" + c if c in _META else c) for c in g) for g in globs]
    return f"^{_escape(prefix)}({'|'.join(alts)})$"


_GLOB = {"*": ".*", "?": "."}
_META = set("\\.+()[]{}|^$")


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _META else c for c in text)


def to_text(docs: list[dict[str, Any]]) -> str:
    """One committed file: the generated-file header, then the documents."""
    body = "---\n".join(yamlfmt.dump(d) for d in docs)
    return HEADER + body
