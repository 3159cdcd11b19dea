"""Artifact Hub metadata: where the Tekton catalog is listed now that Tekton Hub is shut down.

Artifact Hub indexes a Tekton catalog in the directory-based layout ``tekton_files`` writes
(artifacthub/hub ``docs/tekton_tasks_repositories.md``; pipelines follow the same rules,
``docs/tekton_pipelines_repositories.md``): one Artifact Hub repository per folder, ``tasks/``
and ``pipelines/``, each with an ``artifacthub-repo.yml`` at that folder (the tracker reads it
from the repository's base path: ``internal/repo/manager.go``). A package's name, version,
display name, description, tags and min version come from the manifest itself
(``internal/tracker/source/tekton/tekton.go``: ``app.kubernetes.io/version``,
``tekton.dev/displayName``, ``tekton.dev/tags``, ``tekton.dev/pipelines.minVersion``); the
extra ``artifacthub.io/*`` annotations are in ``docs/tekton_annotations.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from taskyard.render.emit import HEADER
from taskyard.render.resolver import CATALOG_SOURCE

FILE = "artifacthub-repo.yml"
FOLDERS = ("tasks", "pipelines")  # one Artifact Hub repository each (kinds tekton-task/-pipeline)
# Artifact Hub's own category list (docs/tekton_annotations.md, artifacthub.io/category).
CATEGORY = "ai-machine-learning"


@dataclass(frozen=True)
class Publisher:
    """Who publishes the catalog; replace the placeholders before adding the repository."""

    name: str = "taskyard maintainers"
    email: str = "maintainers@taskyard.dev"  # Artifact Hub drops maintainers without an email
    # Artifact Hub shows a repository's ID after it is added; pasting it here (and pushing)
    # earns the "Verified publisher" badge. This nil UUID is the placeholder: it verifies nothing.
    repository_id: str = "00000000-0000-0000-0000-000000000000"
    license: str = "Apache-2.0"  # SPDX, as in pyproject.toml
    source_url: str = CATALOG_SOURCE.repo_url.removesuffix(".git")


PUBLISHER = Publisher()


def repo_file(folder: str, publisher: Publisher = PUBLISHER) -> str:
    """``<folder>/artifacthub-repo.yml`` (artifacthub/hub docs/metadata/artifacthub-repo.yml)."""
    head = HEADER + (
        "# Artifact Hub repository metadata for the Tekton "
        f"{folder.rstrip('s')}s in this folder.\n"
        f"# Add the repository on Artifact Hub as {publisher.source_url}/{folder} (kind Tekton "
        f"{folder.rstrip('s')}s),\n"
        "# then replace repositoryID with the ID it shows (the nil UUID is a placeholder).\n"
    )
    body = {
        "repositoryID": publisher.repository_id,
        "owners": [{"name": publisher.name, "email": publisher.email}],
    }
    return head + yaml.safe_dump(body, sort_keys=False)


def annotations(publisher: Publisher = PUBLISHER) -> dict[str, str]:
    """The ``artifacthub.io/*`` annotations every catalog Task and Pipeline should carry.

    Multi-valued ones are YAML strings, as Artifact Hub parses them (docs/tekton_annotations.md).
    """
    return {
        "artifacthub.io/category": CATEGORY,
        "artifacthub.io/license": publisher.license,
        "artifacthub.io/provider": publisher.name,
        "artifacthub.io/maintainers": yaml.safe_dump(
            [{"name": publisher.name, "email": publisher.email}], sort_keys=False
        ),
        "artifacthub.io/links": yaml.safe_dump(
            [
                {"name": "source", "url": publisher.source_url},
                {"name": "support", "url": f"{publisher.source_url}/issues"},
            ],
            sort_keys=False,
        ),
    }


def files() -> dict[str, str]:
    return {f"{folder}/{FILE}": repo_file(folder) for folder in FOLDERS}
