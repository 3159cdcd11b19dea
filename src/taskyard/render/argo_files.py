"""The committed Argo files: a WorkflowTemplate per catalog pipeline, a CronWorkflow per
catalog schedule (``retrain`` nightly, ``drift-retrain`` six-hourly: the trigger plan's, which
Tekton's CronJobs share), and ``rbac.yaml``: the ServiceAccount the templates run as
(:mod:`taskyard.render.argo_rbac`)."""

from __future__ import annotations

from taskyard.catalog import PIPELINES
from taskyard.render import argo, argo_rbac
from taskyard.render._triggers import DEFAULT
from taskyard.render.emit import HEADER

FOLDER = "hera"
RBAC = f"{FOLDER}/rbac.yaml"


def text(obj: object) -> str:
    """The YAML of a Hera WorkflowTemplate/CronWorkflow, as committed (header first)."""
    return HEADER + obj.to_yaml(allow_unicode=True, width=100)  # type: ignore[attr-defined]


def cron_options(pipeline: str) -> argo.CronOptions:
    """The catalog schedule of ``pipeline`` (the hera/*_cron.py programs' default too)."""
    schedules = tuple(c.schedule for c in DEFAULT.cron if c.pipeline == pipeline)
    return argo.CronOptions(schedules=schedules) if schedules else argo.CronOptions()


def files() -> dict[str, str]:
    out = {
        f"{FOLDER}/{name}.yaml": text(argo.workflow_template(spec))
        for name, spec in sorted(PIPELINES.items())
    }
    for pipeline in sorted({c.pipeline for c in DEFAULT.cron}):
        cron = argo.cron_workflow(PIPELINES[pipeline], cron_options(pipeline))
        # A folder of its own: `kubectl apply -k hera/` must not start it (render/kustomize.py).
        out[f"{FOLDER}/cron/{pipeline}-cron.yaml"] = text(cron)
    out[RBAC] = HEADER + argo_rbac.text()
    return out
