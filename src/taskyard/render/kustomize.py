"""A ``kustomization.yaml`` per install set, so ``kubectl apply -k DIR`` installs exactly one set.

``kubectl apply -f tasks/ -R`` also applies ``samples/``, whose runs use ``generateName`` (which
``apply`` refuses), and ``-f hera/`` used to install the retrain CronWorkflow on top of the
Argo Events calendar. A set lists its files explicitly and names the sets it needs as bases.

Kustomize facts relied on (checked with ``kubectl kustomize``, kustomize v5.5): a *file*
resource must lie in or below the kustomization's folder ("security; file … is not in or below
…"), while a *folder* resource (another kustomization) may lie anywhere, e.g. ``../tasks``; an
object without ``metadata.name`` (``generateName`` only) is an error. So each set lives in the
folder holding its files, and a CronWorkflow gets a folder of its own (``hera/cron/``).

Files are picked by rule from what the other engines render, so a new file (``hera/rbac.yaml``,
a split-off trigger file) joins its folder's set with no change here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from taskyard.errors import RenderError
from taskyard.render.emit import HEADER

FILE = "kustomization.yaml"
API = "kustomize.config.k8s.io/v1beta1"
# Folders whose every YAML file (directly inside) is one set; subfolders are sets of their own.
FOLDER_ROOTS = ("hera", "triggers/tekton", "triggers/argo-events", "deploy")
# What a set needs installed with it (bases, relative to the set's folder).
BASES: Mapping[str, tuple[str, ...]] = {
    "tasks": (),
    "pipelines": ("../tasks",),
    "resolver": (),  # the git resolver fetches the tasks at run time
    "hera": (),
    "hera/cron": (),  # after `hera`: kustomize cannot build a folder on the one containing it
    "hera/cluster": (),  # cluster-scoped: the namespaced RBAC goes into each namespace apart
    "triggers/tekton": ("../../pipelines",),
    "triggers/argo-events": ("../../hera",),
    "deploy": (),  # the namespace and cluster services the pipelines run beside
}
# The tektoncd/catalog layout: <folder>/<name>/<version>/<name>.yaml (samples/ left out).
_CATALOG = re.compile(r"^(tasks|pipelines|resolver)/([^/]+)/[^/]+/\2\.yaml$")
CRON_KINDS = frozenset({"CronWorkflow"})


@dataclass(frozen=True)
class InstallSet:
    folder: str
    bases: tuple[str, ...]
    files: tuple[str, ...]  # repo-relative

    @property
    def resources(self) -> list[str]:
        return [*self.bases, *(posixpath.relpath(f, self.folder) for f in self.files)]


def install_sets(rendered: Mapping[str, str]) -> list[InstallSet]:
    """The sets over ``rendered`` (repo-relative path -> text), checked for apply-ability."""
    members: dict[str, list[str]] = {}
    for rel in sorted(rendered):
        folder = _set_folder(rel)
        if folder is not None:
            members.setdefault(folder, []).append(rel)
    sets = [InstallSet(folder, _bases(folder), tuple(files)) for folder, files in members.items()]
    for s in sets:
        _check(s, rendered)
    return sorted(sets, key=lambda s: s.folder)


def _set_folder(rel: str) -> str | None:
    if not rel.endswith(".yaml") or rel.endswith("/" + FILE):
        return None
    m = _CATALOG.match(rel)
    if m:
        return m.group(1)
    folder = posixpath.dirname(rel)
    if any(folder == r or folder.startswith(r + "/") for r in FOLDER_ROOTS):
        return folder
    return None


def _bases(folder: str) -> tuple[str, ...]:
    """A subfolder not in :data:`BASES` needs what its root needs (re-rooted), never the root
    itself: kustomize refuses a folder that contains the one being built ("cycle detected")."""
    if folder in BASES:
        return BASES[folder]
    root = next(r for r in FOLDER_ROOTS if folder.startswith(r + "/"))
    up = "../" * (folder.count("/") - root.count("/"))
    return tuple(posixpath.normpath(up + b) for b in BASES[root])


def _check(s: InstallSet, rendered: Mapping[str, str]) -> None:
    cron_ok = s.folder.endswith("/cron")
    for rel in s.files:
        for doc in yaml.safe_load_all(rendered[rel]):
            if not doc:
                continue
            meta = doc.get("metadata") or {}
            if "name" not in meta:
                raise RenderError(
                    f"{rel}: {doc.get('kind')} has no metadata.name (generateName?): "
                    f"`kubectl apply -k {s.folder}` would refuse it"
                )
            if doc.get("kind") in CRON_KINDS and not cron_ok:
                raise RenderError(
                    f"{rel}: a {doc['kind']} in the {s.folder!r} set; schedules go in a "
                    "'<folder>/cron/' set of their own (installed once, never twice by accident)"
                )


def text(s: InstallSet) -> str:
    doc = {"apiVersion": API, "kind": "Kustomization", "resources": s.resources}
    about = f"# Install set `{s.folder}`: kubectl apply -k {s.folder} (see docs/distribution.md)\n"
    return HEADER + about + yaml.safe_dump(doc, sort_keys=False)


def files(rendered: Mapping[str, str]) -> dict[str, str]:
    return {f"{s.folder}/{FILE}": text(s) for s in install_sets(rendered)}
