"""GitHub and GitLab push payloads -> one ``Push`` model -> the ``RunRequest``s it asks for.

Pure functions: no I/O, no clock. The HTTP layer authenticates first and calls these second.
"""

from __future__ import annotations

import fnmatch
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskyard.catalog import PIPELINES
from taskyard.serve.config import RepoConfig

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"


class PayloadError(ValueError):
    """The body is JSON but not a push payload we can read (a 400)."""


class Push(BaseModel):
    """What a push webhook says, whichever forge sent it."""

    model_config = ConfigDict(frozen=True)

    provider: Literal["github", "gitlab"]
    repo: str  # owner/repo or group/project
    clone_url: str
    ref: str
    commit: str  # the new tip; ZERO_SHA for a deleted ref
    deleted: bool
    changed: tuple[str, ...] | None  # None: the payload does not list files

    @property
    def branch(self) -> str | None:
        return self.ref[len(BRANCH_PREFIX) :] if self.ref.startswith(BRANCH_PREFIX) else None


class RunRequest(BaseModel):
    """One pipeline run the listener wants: the unit stored, deduplicated and submitted."""

    model_config = ConfigDict(frozen=True)

    source: Literal["github", "gitlab", "cron"]
    delivery: str
    repo: str
    branch: str
    commit: str  # the exact SHA for pushes; ``cron:<schedule>@<fire time>`` for schedules
    pipeline: str
    params: dict[str, str] = Field(default_factory=dict)
    concurrency: Literal["queue", "latest-wins"] = "queue"

    @property
    def key(self) -> str:
        """The per-(repo, branch) concurrency key."""
        return f"{self.repo}#{self.branch}"


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            raise PayloadError(f"push payload has no {'.'.join(path)}")
        cur = cur[p]
    return cur


def _changed(commits: Any) -> tuple[str, ...] | None:
    if not isinstance(commits, list) or not commits:
        return None
    files: set[str] = set()
    for c in commits:
        if isinstance(c, dict):
            for k in ("added", "modified", "removed"):
                files.update(f for f in c.get(k) or () if isinstance(f, str))
    return tuple(sorted(files))


def parse_github_push(data: dict[str, Any]) -> Push:
    """A GitHub ``push`` event (``X-GitHub-Event: push``)."""
    after = str(_get(data, "after"))
    return Push(
        provider="github",
        repo=str(_get(data, "repository", "full_name")),
        clone_url=str(_get(data, "repository", "clone_url")),
        ref=str(_get(data, "ref")),
        commit=after,
        deleted=bool(data.get("deleted")) or after == ZERO_SHA,
        changed=_changed(data.get("commits")),
    )


def parse_gitlab_push(data: dict[str, Any]) -> Push:
    """A GitLab ``Push Hook`` (``object_kind: push``); ``checkout_sha`` is null on a delete."""
    if data.get("object_kind") not in (None, "push"):
        raise PayloadError(f"not a push payload (object_kind={data.get('object_kind')!r})")
    after = str(_get(data, "after"))
    project = _get(data, "project")
    url = project.get("git_http_url") if isinstance(project, dict) else None
    if not url:
        url = _get(data, "repository", "git_http_url")
    return Push(
        provider="gitlab",
        repo=str(_get(data, "project", "path_with_namespace")),
        clone_url=str(url),
        ref=str(_get(data, "ref")),
        commit=after,
        deleted=after == ZERO_SHA or data.get("checkout_sha", "") is None,
        changed=_changed(data.get("commits")),
    )


def ignore_reason(push: Push, repo: RepoConfig) -> str | None:
    """Why this push starts nothing, or None if it starts the repo's pipelines."""
    if push.deleted:
        return "branch deleted"
    if push.branch is None:
        return f"not a branch push ({push.ref})"
    if not any(fnmatch.fnmatchcase(push.branch, g) for g in repo.branches):
        return f"branch {push.branch!r} is not in the filter"
    if (
        repo.paths
        and push.changed is not None
        and not any(fnmatch.fnmatchcase(f, g) for f in push.changed for g in repo.paths)
    ):
        return "no changed path matches the filter"
    return None


def requests_for(push: Push, repo: RepoConfig, delivery: str) -> list[RunRequest]:
    """One request per configured pipeline, pinned to the pushed commit."""
    assert push.branch is not None
    return [
        RunRequest(
            source=push.provider,
            delivery=delivery,
            repo=push.repo,
            branch=push.branch,
            commit=push.commit,
            pipeline=pipeline,
            params=pipeline_params(
                pipeline,
                {**repo.params, "repo-url": repo.url or push.clone_url, "revision": push.commit},
            ),
            concurrency=repo.concurrency,
        )
        for pipeline in repo.pipelines
    ]


def pipeline_params(pipeline: str, params: dict[str, str]) -> dict[str, str]:
    """Only the params ``pipeline`` declares: one repo config may feed several pipelines."""
    declared = {p.name for p in PIPELINES[pipeline].params}
    return {k: v for k, v in sorted(params.items()) if k in declared}


def body_delivery_id(body: bytes) -> str:
    """A delivery id for senders that send none: the body's hash (a resend dedups)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()
