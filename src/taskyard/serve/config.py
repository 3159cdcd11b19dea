"""The listener's configuration: which repositories, which pipelines, which schedules.

Loaded from YAML (``.yaml``/``.yml``) or TOML (``.toml``). Secrets never live in the file:
each names an environment variable or a file, read once at load time.

    listen: {host: 127.0.0.1, port: 8080}
    repos:
      - name: acme/churn-model            # GitHub full_name / GitLab path_with_namespace
        provider: github
        secret: {env: TASKYARD_WEBHOOK_SECRET}
        branches: [main, "release/*"]
        paths: ["src/**", "data/**"]      # optional: a push touching none of these is ignored
        pipelines: [ci, train-eval-deploy]
        params: {pytest-args: "-q"}
        concurrency: latest-wins          # or: queue
    schedules:
      - name: nightly
        cron: "0 3 * * *"
        timezone: Europe/Berlin
        repo-url: https://github.com/acme/churn-model.git
        revision: main
        missed: run-once                  # or: skip
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskyard.catalog import PIPELINES
from taskyard.errors import TaskyardError


class ServeError(TaskyardError):
    """The listener cannot start: a bad config file, a missing secret, a busy port."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SecretRef(_Model):
    """Where a webhook secret comes from: an environment variable or a file (never inline)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret names exactly one of `env` or `file`")
        return self

    def resolve(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env, "")
            if not value:
                raise ServeError(f"webhook secret: environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            value = self.file.expanduser().read_text().strip()
        except OSError as e:
            raise ServeError(f"webhook secret: cannot read {self.file}: {e.strerror}") from e
        if not value:
            raise ServeError(f"webhook secret: {self.file} is empty")
        return value


def _check_pipeline(name: str) -> str:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r} (known: {', '.join(sorted(PIPELINES))})")
    return name


class RepoConfig(_Model):
    """One repository whose pushes start pipelines."""

    name: str = Field(description="GitHub `owner/repo` or GitLab `group/project`.")
    provider: Literal["github", "gitlab"] = "github"
    secret: SecretRef
    url: str | None = Field(
        default=None, description="Clone URL override; default: the one in the payload."
    )
    branches: tuple[str, ...] = Field(default=("main",), description="fnmatch globs.")
    paths: tuple[str, ...] = Field(default=(), description="fnmatch globs; empty: any change.")
    pipelines: tuple[str, ...] = ("ci",)
    params: dict[str, str] = Field(default_factory=dict)
    concurrency: Literal["queue", "latest-wins"] = "queue"

    @field_validator("pipelines")
    @classmethod
    def _pipelines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a repository starts at least one pipeline")
        return tuple(_check_pipeline(p) for p in v)


class Schedule(_Model):
    """A cron schedule that starts a pipeline (``retrain`` by default)."""

    name: str
    cron: str
    timezone: str = "UTC"
    pipeline: str = "retrain"
    repo_url: str = Field(alias="repo-url")
    revision: str = "main"
    params: dict[str, str] = Field(default_factory=dict)
    missed: Literal["run-once", "skip"] = "run-once"
    concurrency: Literal["queue", "latest-wins"] = "latest-wins"

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return _check_pipeline(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown timezone {v!r}") from e
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r}")
        return v

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (aware), in the schedule's zone."""
        from croniter import croniter

        return croniter(self.cron, moment.astimezone(self.zone())).get_next(datetime)


class Listen(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1 << 20, alias="max-body-bytes", gt=0)


class ServeConfig(_Model):
    """The whole listener configuration."""

    listen: Listen = Field(default_factory=Listen)
    repos: tuple[RepoConfig, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    workers: int = Field(default=2, ge=1, le=64, description="Runs at the same time.")
    max_pending: int = Field(
        default=10_000, alias="max-pending", gt=0, description="Backlog bound; beyond: 503."
    )
    submitter: Literal["cli", "noop"] = "cli"

    @model_validator(mode="after")
    def _unique(self) -> ServeConfig:
        for what, names in (
            ("repository", [(r.provider, r.name) for r in self.repos]),
            ("schedule", [s.name for s in self.schedules]),
        ):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"duplicate {what}: {sorted(dupes)}")
        return self

    def repo(self, provider: str, name: str) -> RepoConfig | None:
        for r in self.repos:
            if r.provider == provider and r.name.lower() == name.lower():
                return r
        return None


def load(path: Path) -> ServeConfig:
    """Read and validate a config file; every problem is one ServeError line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ServeError(f"cannot read config {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ServeError(
            f"config {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {e}"
        ) from e
    try:
        return ServeConfig.model_validate(data or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ServeError(f"config {path}: {where}: {first['msg']}") from e
