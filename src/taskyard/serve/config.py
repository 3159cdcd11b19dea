"""The listener's configuration: which repositories, which pipelines, which schedules.

Loaded from YAML (``.yaml``/``.yml``) or TOML (``.toml``). Secrets never live in the file:
each names an environment variable or a file, read once at load time.

    listen:
      host: 127.0.0.1
      port: 8080
      max-body-bytes: 1048576
      request-timeout: 10        # seconds for a whole request (headers + body), not per read
      threads: 16                # the bounded pool for the blocking part (auth, parse, commit)
      max-connections: 1000      # open connections + requests in flight; beyond: 503
      backlog: 2048              # the kernel's listen queue (>= 128)
    repos:
      - name: acme/churn-model            # GitHub full_name / GitLab path_with_namespace
        provider: github
        secret: {env: TASKYARD_WEBHOOK_SECRET}
        url: https://github.com/acme/churn-model.git   # optional: what is cloned
        host: https://github.com          # optional: url = <host>/<name>.git when url is unset
        clone-url-from-payload: false     # opt-in: clone the URL the payload names
        branches: [main, "release/*"]
        paths: ["src/**", "data/**"]      # optional: a push touching none of these is ignored
        pipelines: [ci, train-eval-deploy]
        params: {pytest-args: "-q"}
        concurrency: latest-wins          # or: queue
    alertmanager:                         # Alertmanager's webhook: POST /alerts/alertmanager
      bearer-token: {env: TASKYARD_ALERT_TOKEN}  # or basic-auth: {username: u, password: {file: f}}
      routes:
        - name: wine-drift
          alertname: TaskyardModelDataDrift
          labels: {model: wine-classifier}          # every one must match the alert's labels
          pipeline: drift-retrain
          repo-url: https://github.com/acme/churn-model.git
          revision: main
          params: {current: "http://${labels.instance}/monitoring/window"}
    schedules:
      - name: nightly
        cron: "0 3 * * *"
        timezone: Europe/Berlin
        repo-url: https://github.com/acme/churn-model.git
        revision: main
        missed: run-once                  # or: skip

**The operator decides what is cloned.** A push runs with ``repo-url`` = the repository's
``url`` if set, else ``<host>/<name>.git`` (``host`` defaults to ``https://github.com`` for
GitHub and ``https://gitlab.com`` for GitLab). The payload's ``clone_url`` /
``git_http_url`` is only used with ``clone-url-from-payload: true``: whoever holds the webhook
secret could otherwise make the listener clone (and run the tests of) any repository.

**Credentials** in a configured URL (``https://user:token@host/…``) stay in this config: the
event store keeps params redacted, and the dispatcher re-derives ``repo-url`` (and the other
params) from the config as it is when the run starts (:func:`taskyard.serve.events.run_params`).
"""

from __future__ import annotations

import os
import re
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


DEFAULT_HOSTS = {"github": "https://github.com", "gitlab": "https://gitlab.com"}


def _check_pipeline(name: str) -> str:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r} (known: {', '.join(sorted(PIPELINES))})")
    return name


class RepoConfig(_Model):
    """One repository whose pushes start pipelines."""

    name: str = Field(description="GitHub `owner/repo` or GitLab `group/project`.")
    provider: Literal["github", "gitlab"] = "github"
    secret: SecretRef
    url: str | None = Field(default=None, description="What is cloned; default: <host>/<name>.git.")
    host: str | None = Field(
        default=None,
        description="Forge base URL for the derived clone URL (github.com / gitlab.com).",
    )
    clone_url_from_payload: bool = Field(
        default=False,
        alias="clone-url-from-payload",
        description="Opt-in: clone the URL the (signed) payload names instead.",
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

    @field_validator("url", "host")
    @classmethod
    def _no_option(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or v.startswith("-")):
            raise ValueError(f"{v!r} is not a URL")
        return v

    def clone_url(self) -> str:
        """What the operator configured to be cloned: ``url``, else ``<host>/<name>.git``."""
        if self.url:
            return self.url
        host = self.host or DEFAULT_HOSTS[self.provider]
        return f"{host.rstrip('/')}/{self.name}.git"


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
    """The HTTP side. The bounds are what keep a burst or a slow client from hurting others."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1 << 20, alias="max-body-bytes", gt=0)
    request_timeout: float = Field(
        default=10.0,
        alias="request-timeout",
        gt=0,
        description="Deadline for a whole request (headers + body) from its first byte.",
    )
    keep_alive_timeout: float = Field(
        default=5.0, alias="keep-alive-timeout", gt=0, description="Idle time between requests."
    )
    threads: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Worker threads for the blocking part of a webhook (HMAC, parse, commit).",
    )
    max_connections: int = Field(
        default=1000,
        alias="max-connections",
        ge=1,
        description="Open connections / requests in flight (uvicorn limit_concurrency); "
        "beyond: 503.",
    )
    backlog: int = Field(default=2048, ge=128, description="The kernel's listen queue.")


LABEL_REF = re.compile(r"\$\{labels\.([A-Za-z_][A-Za-z0-9_]*)\}")


class BasicAuth(_Model):
    username: str = Field(min_length=1)
    password: SecretRef


class AlertRoute(_Model):
    """Which firing alerts start which pipeline, on which repository."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    alertname: str = Field(min_length=1)
    labels: dict[str, str] = Field(
        default_factory=dict, description="Label equality matchers, all of which must hold."
    )
    pipeline: str = "drift-retrain"
    repo_url: str = Field(alias="repo-url")
    revision: str = "main"
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Pipeline params; `${labels.NAME}` is replaced by the alert's label NAME.",
    )
    concurrency: Literal["queue", "latest-wins"] = "latest-wins"

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return _check_pipeline(v)

    def templated(self) -> set[str]:
        """The params whose value comes from the alert's labels."""
        return {k for k, v in self.params.items() if LABEL_REF.search(v)}


class AlertmanagerConfig(_Model):
    """Alertmanager's webhook receiver: ``POST /alerts/alertmanager``.

    Authenticated like Alertmanager's ``http_config`` can: ``authorization`` (a bearer token)
    or ``basic_auth`` (prometheus/common config/http_config.go), never unauthenticated.
    """

    bearer_token: SecretRef | None = Field(default=None, alias="bearer-token")
    basic_auth: BasicAuth | None = Field(default=None, alias="basic-auth")
    routes: tuple[AlertRoute, ...] = ()

    @model_validator(mode="after")
    def _one_auth(self) -> AlertmanagerConfig:
        if (self.bearer_token is None) == (self.basic_auth is None):
            raise ValueError("alertmanager: set exactly one of bearer-token or basic-auth")
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate alert route: {dupes}")
        return self

    def route(self, name: str) -> AlertRoute | None:
        return next((r for r in self.routes if r.name == name), None)


class ServeConfig(_Model):
    """The whole listener configuration."""

    listen: Listen = Field(default_factory=Listen)
    repos: tuple[RepoConfig, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    alertmanager: AlertmanagerConfig | None = None
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

    def schedule(self, name: str) -> Schedule | None:
        return next((s for s in self.schedules if s.name == name), None)


def load(path: Path) -> ServeConfig:
    """Read and validate a config file; every problem is ONE ServeError line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ServeError(f"cannot read config {path}: {why}") from e
    kind = "TOML" if path.suffix == ".toml" else "YAML"
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ServeError(f"config {path} is not valid {kind}: {_syntax(e)}") from e
    try:
        return ServeConfig.model_validate(data or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ServeError(_one_line(f"config {path}: {where}: {first['msg']}")) from e


def _syntax(e: Exception) -> str:
    """A parser error as one line: PyYAML's str() spans several (context, caret, problem)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if isinstance(e, yaml.YAMLError) and problem and mark is not None:
        return _one_line(f"{problem} at line {mark.line + 1}, column {mark.column + 1}")
    return _one_line(str(e))


def _one_line(text: str) -> str:
    return " ".join(text.split())
