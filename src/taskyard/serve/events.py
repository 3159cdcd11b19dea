"""GitHub and GitLab push payloads -> one ``Push`` model -> the ``RunRequest``s it asks for.

Pure functions: no I/O, no clock. The HTTP layer authenticates first and calls these second.
Everything read from a payload is type-checked here: a signed but odd payload (``after: null``,
``commits: [{"added": 5}]``, an option-like SHA) is a :class:`PayloadError`, i.e. a 400 with
one line, never a TypeError deeper down.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from taskyard.catalog import PIPELINES
from taskyard.redact import redact_values
from taskyard.serve.config import RepoConfig, Schedule, ServeConfig

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# Schemes a payload URL may name (opt-in only); git-clone applies its own allow-list again.
PAYLOAD_SCHEMES = ("https", "http", "ssh", "git")
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class PayloadError(ValueError):
    """The body is JSON but not a push payload we can read (a 400)."""


class Push(BaseModel):
    """What a push webhook says, whichever forge sent it."""

    model_config = ConfigDict(frozen=True)

    provider: Literal["github", "gitlab"]
    repo: str  # owner/repo or group/project
    clone_url: str | None  # only used with the repo's clone-url-from-payload opt-in
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

    source: Literal["github", "gitlab", "cron", "alertmanager"]
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


def _text(data: dict[str, Any], *path: str, max_len: int = 1024) -> str:
    value = _get(data, *path)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise PayloadError(f"{'.'.join(path)} must be a non-empty string")
    if _CONTROL.search(value.replace(" ", "")):
        raise PayloadError(f"{'.'.join(path)} contains control characters")
    return value


def _sha(data: dict[str, Any], key: str = "after") -> str:
    """The pushed commit: exactly 40 or 64 hex digits (SHA-1 / SHA-256), lower-cased."""
    value = _get(data, key)
    if not isinstance(value, str) or not SHA.fullmatch(value):
        raise PayloadError(f"{key} must be a 40- or 64-hex commit SHA")
    return value.lower()


def _optional_url(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string")
    return value


def _changed(commits: Any) -> tuple[str, ...] | None:
    """The files a push touched; None when the payload lists none (the filter cannot block).

    A malformed list is a 400, not a silent "no files": a path filter must not be bypassed or
    tripped by a field of the wrong type.
    """
    if commits is None:
        return None
    if not isinstance(commits, list):
        raise PayloadError("commits must be a list")
    if not commits:
        return None
    files: set[str] = set()
    for c in commits:
        if not isinstance(c, dict):
            raise PayloadError("each commit must be an object")
        for k in ("added", "modified", "removed"):
            got = c.get(k)
            if got is None:
                continue
            if not isinstance(got, list) or not all(isinstance(f, str) for f in got):
                raise PayloadError(f"commits[].{k} must be a list of strings")
            files.update(got)
    return tuple(sorted(files))


def parse_github_push(data: dict[str, Any]) -> Push:
    """A GitHub ``push`` event (``X-GitHub-Event: push``)."""
    after = _sha(data)
    deleted = data.get("deleted", False)
    if not isinstance(deleted, bool):
        raise PayloadError("deleted must be true or false")
    repository = _get(data, "repository")
    if not isinstance(repository, dict):
        raise PayloadError("repository must be an object")
    return Push(
        provider="github",
        repo=_text(data, "repository", "full_name"),
        clone_url=_optional_url(repository.get("clone_url"), "repository.clone_url"),
        ref=_text(data, "ref"),
        commit=after,
        deleted=deleted or after == ZERO_SHA,
        changed=_changed(data.get("commits")),
    )


def parse_gitlab_push(data: dict[str, Any]) -> Push:
    """A GitLab ``Push Hook`` (``object_kind: push``); ``checkout_sha`` is null on a delete."""
    kind = data.get("object_kind")
    if kind not in (None, "push"):
        raise PayloadError(f"not a push payload (object_kind={str(kind)[:40]!r})")
    after = _sha(data)
    project = _get(data, "project")
    if not isinstance(project, dict):
        raise PayloadError("project must be an object")
    url = _optional_url(project.get("git_http_url"), "project.git_http_url")
    if url is None and isinstance(data.get("repository"), dict):
        url = _optional_url(data["repository"].get("git_http_url"), "repository.git_http_url")
    checkout = data.get("checkout_sha", "")
    if checkout is not None and not isinstance(checkout, str):
        raise PayloadError("checkout_sha must be a string or null")
    return Push(
        provider="gitlab",
        repo=_text(data, "project", "path_with_namespace"),
        clone_url=url,
        ref=_text(data, "ref"),
        commit=after,
        deleted=after == ZERO_SHA or checkout is None,
        changed=_changed(data.get("commits")),
    )


def check_payload_url(url: str | None) -> str:
    """A payload clone URL the opt-in may use: a plain http(s)/ssh/git or scp-like URL."""
    if not url:
        raise PayloadError("the payload names no clone URL (clone-url-from-payload is set)")
    if url.startswith("-") or _CONTROL.search(url) or "::" in url.split("/", 1)[0]:
        raise PayloadError("the payload's clone URL is not a plain URL")
    if _SCP_LIKE.fullmatch(url):
        return url
    if urlsplit(url).scheme not in PAYLOAD_SCHEMES:
        raise PayloadError(f"the payload's clone URL must use one of {', '.join(PAYLOAD_SCHEMES)}")
    return url


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
    """One request per configured pipeline, pinned to the pushed commit.

    ``repo-url`` is the configured one (:meth:`RepoConfig.clone_url`) unless the repository
    opted in to the payload's. The dedup key is normalised: the configured repository name
    lower-cased and the SHA lower-cased, so ``Acme/Model@ABC…`` and ``acme/model@abc…`` are
    one run. Params are stored redacted; :func:`run_params` rebuilds them at submit time.
    """
    assert push.branch is not None
    url = check_payload_url(push.clone_url) if repo.clone_url_from_payload else repo.clone_url()
    return [
        RunRequest(
            source=push.provider,
            delivery=delivery,
            repo=repo.name.lower(),
            branch=push.branch,
            commit=push.commit.lower(),
            pipeline=pipeline,
            params=redact_values(
                pipeline_params(
                    pipeline, {**repo.params, "repo-url": url, "revision": push.commit.lower()}
                )
            ),
            concurrency=repo.concurrency,
        )
        for pipeline in repo.pipelines
    ]


def schedule_params(schedule: Schedule) -> dict[str, str]:
    return pipeline_params(
        schedule.pipeline,
        {**schedule.params, "repo-url": schedule.repo_url, "revision": schedule.revision},
    )


def schedule_name(request: RunRequest) -> str:
    """``cron:<name>@<fire time>`` -> ``<name>``."""
    return request.delivery.removeprefix("cron:").rpartition("@")[0]


class NotConfigured(LookupError):
    """A stored request whose repository or schedule is no longer in the config."""


def run_params(config: ServeConfig, request: RunRequest) -> dict[str, str]:
    """The params a stored request runs with, rebuilt from the config as it is now.

    Why not the stored ones: they are redacted (credentials live only in the config), and the
    clone URL must be the operator's. Only the payload's URL (opt-in) and the commit come from
    the request itself.
    """
    if request.source == "alertmanager":
        from taskyard.serve import alerts  # alerts builds on this module

        return alerts.run_params(config.alertmanager, request)
    if request.source == "cron":
        schedule = config.schedule(schedule_name(request))
        if schedule is None:
            raise NotConfigured(f"schedule {schedule_name(request)!r} is no longer configured")
        return schedule_params(schedule)
    repo = config.repo(request.source, request.repo)
    if repo is None:
        raise NotConfigured(f"repository {request.repo!r} is no longer configured")
    url = request.params.get("repo-url", "") if repo.clone_url_from_payload else repo.clone_url()
    return pipeline_params(
        request.pipeline, {**repo.params, "repo-url": url, "revision": request.commit}
    )


def pipeline_params(pipeline: str, params: dict[str, str]) -> dict[str, str]:
    """Only the params ``pipeline`` declares: one repo config may feed several pipelines."""
    declared = {p.name for p in PIPELINES[pipeline].params}
    return {k: v for k, v in sorted(params.items()) if k in declared}


def body_delivery_id(body: bytes) -> str:
    """A delivery id for senders that send none: the body's hash (a resend dedups)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()
