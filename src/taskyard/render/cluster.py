"""ClusterWorkflowTemplate variants of the Argo WorkflowTemplates: one install for every namespace.

argo-workflows ``docs/cluster-workflow-templates.md``: a ClusterWorkflowTemplate is a
cluster-scoped WorkflowTemplate with the same ``spec``; a Workflow runs it with
``workflowTemplateRef: {name: …, clusterScope: true}``. Built by post-processing
:func:`taskyard.render.argo.workflow_template`, so both variants stay one definition.
"""

from __future__ import annotations

from typing import Any

import yaml

from taskyard.render import argo
from taskyard.spec import PipelineSpec

FOLDER = "hera/cluster"
KIND = "ClusterWorkflowTemplate"


def path(p: PipelineSpec) -> str:
    return f"{FOLDER}/{p.name}.yaml"


def cluster_workflow_template(p: PipelineSpec, opts: argo.Options | None = None) -> dict[str, Any]:
    """The pipeline's WorkflowTemplate as a ClusterWorkflowTemplate (no namespace: cluster-wide)."""
    doc = argo.workflow_template(p, opts).to_dict()
    doc["kind"] = KIND
    doc["metadata"].pop("namespace", None)
    return doc


def text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
