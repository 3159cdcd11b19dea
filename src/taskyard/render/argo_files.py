"""The committed Argo files: a WorkflowTemplate per catalog pipeline, the retrain CronWorkflow,
and ``rbac.yaml``: the ServiceAccount the templates run as (:mod:`taskyard.render.argo_rbac`)."""

from __future__ import annotations

from taskyard.catalog import PIPELINES
from taskyard.render import argo, argo_rbac
from taskyard.render.emit import HEADER

FOLDER = "hera"
CRON_PIPELINE = "retrain"
RBAC = f"{FOLDER}/rbac.yaml"


def text(obj: object) -> str:
    """The YAML of a Hera WorkflowTemplate/CronWorkflow, as committed (header first)."""
    return HEADER + obj.to_yaml(allow_unicode=True, width=100)  # type: ignore[attr-defined]


def files() -> dict[str, str]:
    out = {
        f"{FOLDER}/{name}.yaml": text(argo.workflow_template(spec))
        for name, spec in sorted(PIPELINES.items())
    }
    cron = argo.cron_workflow(PIPELINES[CRON_PIPELINE])
    # A folder of its own: `kubectl apply -k hera/` must not start it (render/kustomize.py).
    out[f"{FOLDER}/cron/{CRON_PIPELINE}-cron.yaml"] = text(cron)
    out[RBAC] = HEADER + argo_rbac.text()
    return out
