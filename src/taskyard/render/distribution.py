"""The ``distribution`` engine: the files an operator installs or indexes the catalog from.

- ``resolver/<name>/<version>/<name>.yaml``: each catalog Pipeline with its tasks referenced
  through the Tekton git resolver at the release tag (:mod:`taskyard.render.resolver`);
- ``hera/cluster/<name>.yaml``: each WorkflowTemplate as a ClusterWorkflowTemplate
  (:mod:`taskyard.render.cluster`);
- ``tasks/artifacthub-repo.yml``, ``pipelines/artifacthub-repo.yml``: Artifact Hub metadata
  (:mod:`taskyard.render.artifacthub`);
- a ``kustomization.yaml`` per install set over everything rendered, the other engines' files
  included (:mod:`taskyard.render.kustomize`).

Runs after the other engines in ``emit.ENGINES`` and reads their renders, never the disk.
"""

from __future__ import annotations

import importlib

from taskyard.catalog import PIPELINES
from taskyard.render import artifacthub, cluster, emit, kustomize, resolver, tekton_files

NAME = "distribution"


def own_files() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in PIPELINES.values():
        out[resolver.path(p)] = emit.HEADER + tekton_files.to_yaml(resolver.pipeline(p))
        out[cluster.path(p)] = emit.HEADER + cluster.text(cluster.cluster_workflow_template(p))
    out.update(artifacthub.files())
    return out


def _others() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, module in emit.ENGINES.items():
        if name != NAME:
            out.update(importlib.import_module(module).files())
    return out


def files() -> dict[str, str]:
    own = own_files()
    return {**own, **kustomize.files({**_others(), **own})}
