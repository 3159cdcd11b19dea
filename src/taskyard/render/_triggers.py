"""What fires which pipeline on a cluster: the plan both trigger renderers share.

Pure data. The same behaviour as ``taskyard serve`` (docs/triggers.md): pushes to a branch run
``ci`` (every branch) and ``train-eval-deploy`` (``main``); a nightly schedule runs ``retrain``;
branch deletes never run anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from taskyard.render.emit import HEADER
from taskyard.render.values import CATALOG, Values

if TYPE_CHECKING:
    from taskyard.spec import PipelineSpec

ZERO_SHA = "0" * 40
PART_OF = "taskyard"
SECRET_NAME = "taskyard-webhook"  # a Secret the user creates: key `secret` = the webhook secret
SECRET_KEY = "secret"


@dataclass(frozen=True)
class PushTrigger:
    pipeline: str
    branches: tuple[str, ...]  # globs; `*` matches across `/` (like fnmatch in taskyard serve)
    paths: tuple[str, ...] = ()  # globs; empty: any change


@dataclass(frozen=True)
class CronTrigger:
    name: str
    pipeline: str
    schedule: str
    timezone: str
    repo_url: str
    revision: str


@dataclass(frozen=True)
class Plan:
    push: tuple[PushTrigger, ...]
    cron: tuple[CronTrigger, ...]
    # The repository, model, MLflow server the triggers name (the catalog: placeholders).
    values: Values = CATALOG
    # The pipelines the triggers run, by name; None: the catalog's.
    pipelines: Mapping[str, PipelineSpec] | None = None

    @property
    def repo_url(self) -> str:
        """The repository the GitHub EventSource names (Argo Events requires one)."""
        return self.values.repo_url

    def pipeline(self, name: str) -> PipelineSpec:
        if self.pipelines is not None:
            return self.pipelines[name]
        from taskyard.catalog import PIPELINES

        return PIPELINES[name]


DEFAULT = Plan(
    push=(
        PushTrigger("ci", ("*",)),
        PushTrigger("train-eval-deploy", ("main",)),
    ),
    cron=(
        CronTrigger(
            name="nightly-retrain",
            pipeline="retrain",
            schedule="0 3 * * *",
            timezone="UTC",
            repo_url=CATALOG.repo_url,
            revision="main",
        ),
    ),
)


def glob_regex(globs: tuple[str, ...], prefix: str = "") -> str:
    """An anchored RE2 (Go) / Python regex matching any glob: ``*`` -> ``.*``, ``?`` -> ``.``."""
    alts = ["".join(_GLOB.get(c, "\\" + c if c in _META else c) for c in g) for g in globs]
    return f"^{_escape(prefix)}({'|'.join(alts)})$"


_GLOB = {"*": ".*", "?": "."}
_META = set("\\.+()[]{}|^$")


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _META else c for c in text)


class _Dumper(yaml.SafeDumper):
    """Block style, list items indented, multi-line strings as ``|`` blocks, no anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_text(docs: list[dict[str, Any]]) -> str:
    """One committed file: the generated-file header, then the documents."""
    body = "---\n".join(
        yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100_000)
        for d in docs
    )
    return HEADER + body
