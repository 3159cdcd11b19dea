"""The committed Argo files: a WorkflowTemplate per catalog pipeline, the retrain CronWorkflow."""

from __future__ import annotations

from taskyard.catalog import PIPELINES
from taskyard.render import argo
from taskyard.render.emit import HEADER

FOLDER = "hera"
CRON_PIPELINE = "retrain"


def text(obj: object) -> str:
    """The YAML of a Hera WorkflowTemplate/CronWorkflow, as committed (header first)."""
    return HEADER + obj.to_yaml(allow_unicode=True, width=100)  # type: ignore[attr-defined]


def files() -> dict[str, str]:
    out = {
        f"{FOLDER}/{name}.yaml": text(argo.workflow_template(spec))
        for name, spec in sorted(PIPELINES.items())
    }
    cron = argo.cron_workflow(PIPELINES[CRON_PIPELINE])
    out[f"{FOLDER}/{CRON_PIPELINE}-cron.yaml"] = text(cron)
    return out
