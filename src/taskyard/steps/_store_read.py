"""What a cache lookup reads from the MLflow store: entries, run states, aliases, versions.

Two readers answer the same questions. :class:`ClientReader` asks the ``mlflow`` client, which
works for every store (an MLflow server on a cluster, SQLite off it). :class:`SqliteReader`
reads the taskyard home's SQLite store directly, read-only.

Why write the second one ourselves: ``import mlflow`` costs 2.4 s and its SQLAlchemy store
another ~0.5 s per process (measured in benchmarks/main_job.py), and a step that replays its
cache does nothing else. Reading four of MLflow's tables with the standard library's ``sqlite3``
makes a cache hit a matter of milliseconds. It reads only, checks the tables and columns it
needs before the first query, and hands any question it cannot answer (an unknown schema, a
locked or broken file, artifacts that are not local files) to the client, so the answer is
MLflow's in every case; the writes (storing an entry) always go through the client.
The tables are those of ``mlflow/store/tracking/dbmodels/models.py`` and
``mlflow/store/model_registry/dbmodels/models.py`` (``experiments``, ``runs``, ``tags``,
``model_versions``, ``registered_model_aliases``, MLflow 3's ``logged_models``); ``workspace``
columns (MLflow 3.x) are matched to the default workspace, the only one a local store uses.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

# MLflow's marker for a version deleted from the registry (model_registry/__init__.py).
DELETED_STAGE = "Deleted_Internal"
DEFAULT_WORKSPACE = "default"
# What the queries below use, table by table: a store without them is read by the client.
NEEDED = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {"run_uuid", "experiment_id", "status", "start_time", "lifecycle_stage",
             "artifact_uri"},
    "tags": {"key", "value", "run_uuid"},
    "model_versions": {"name", "version", "source", "run_id", "current_stage"},
    "registered_model_aliases": {"name", "alias", "version"},
}  # fmt: skip


@dataclass
class Entry:
    run_id: str
    tags: dict[str, str]
    start_time: int  # epoch milliseconds


class Reader(Protocol):
    def entries(self, experiment: str, tag: str, value: str, oldest_ms: int | None,
                limit: int) -> list[Entry]: ...  # fmt: skip
    def run_active(self, run_id: str) -> bool: ...
    def alias_version(self, name: str, alias: str) -> str | None: ...
    def version(self, name: str, version: str) -> dict[str, str]: ...
    def logged_model(self, model_id: str) -> dict[str, str]: ...
    def copy_artifacts(self, run_id: str, path: str, target: Path) -> None: ...


class ClientReader:
    """The mlflow client's answers (any store)."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient()
        return self._client

    def entries(
        self, experiment: str, tag: str, value: str, oldest_ms: int | None, limit: int
    ) -> list[Entry]:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None or exp.lifecycle_stage != "active":
            return []
        where = f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'"
        if oldest_ms is not None:
            where += f" and attributes.start_time >= {oldest_ms}"
        runs = self.client.search_runs(
            [exp.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=limit
        )
        return [Entry(r.info.run_id, dict(r.data.tags), r.info.start_time) for r in runs]

    def run_active(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # gone or unreadable: not something to replay
            return False

    def alias_version(self, name: str, alias: str) -> str | None:
        from taskyard.steps._mlflow import current_alias

        return current_alias(self.client, name, alias)

    def version(self, name: str, version: str) -> dict[str, str]:
        mv = self.client.get_model_version(name, version)
        return {"version": str(version), "source": mv.source or "", "run": mv.run_id or ""}

    def logged_model(self, model_id: str) -> dict[str, str]:
        lm = self.client.get_logged_model(model_id)
        return {"run": lm.source_run_id or "", "name": lm.name or ""}

    def copy_artifacts(self, run_id: str, path: str, target: Path) -> None:
        import tempfile

        if not self.client.list_artifacts(run_id, path):
            return
        with tempfile.TemporaryDirectory(prefix="taskyard-cache-") as tmp:
            _copy_tree(Path(self.client.download_artifacts(run_id, path, tmp)), target)


class Unreadable(Exception):
    """The SQLite store is not one this reader knows: ask the client."""


class SqliteReader:
    """MLflow's SQLite store read directly; what it cannot answer goes to the client."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.fallback = ClientReader()
        self._conn: sqlite3.Connection | None = None
        self._workspace: dict[str, bool] = {}

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=10)  # fmt: skip
                for table, columns in NEEDED.items():
                    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if not columns <= have:
                        raise Unreadable(f"{table} lacks {sorted(columns - have)}")
                    self._workspace[table] = "workspace" in have
            except sqlite3.Error as e:
                raise Unreadable(str(e)) from e
            self._conn = conn
        return self._conn

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        try:
            return self._connect().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise Unreadable(str(e)) from e

    def _scope(self, table: str, alias: str = "") -> str:
        col = f"{alias}.workspace" if alias else "workspace"
        return f" and {col} = '{DEFAULT_WORKSPACE}'" if self._workspace.get(table) else ""

    def entries(
        self, experiment: str, tag: str, value: str, oldest_ms: int | None, limit: int
    ) -> list[Entry]:
        try:
            self._connect()
            sql = (
                "select r.run_uuid, r.start_time from runs r"
                " join experiments e on e.experiment_id = r.experiment_id"
                " join tags t on t.run_uuid = r.run_uuid"
                " where e.name = ? and e.lifecycle_stage = 'active'"
                f"{self._scope('experiments', 'e')}"
                " and r.lifecycle_stage = 'active' and r.status = 'FINISHED'"
                " and t.key = ? and t.value = ?"
            )
            args: list[Any] = [experiment, tag, value]
            if oldest_ms is not None:
                sql += " and r.start_time >= ?"
                args.append(oldest_ms)
            sql += " order by r.start_time desc limit ?"
            found = self._rows(sql, *args, limit)
            out = []
            for run_id, start in found:
                tags = dict(self._rows("select key, value from tags where run_uuid = ?", run_id))
                out.append(Entry(run_id, tags, int(start or 0)))
            return out
        except Unreadable:
            return self.fallback.entries(experiment, tag, value, oldest_ms, limit)

    def run_active(self, run_id: str) -> bool:
        try:
            rows = self._rows("select lifecycle_stage from runs where run_uuid = ?", run_id)
        except Unreadable:
            return self.fallback.run_active(run_id)
        return bool(rows) and rows[0][0] == "active"

    def alias_version(self, name: str, alias: str) -> str | None:
        try:
            rows = self._rows(
                "select version from registered_model_aliases where name = ? and alias = ?"
                + self._scope("registered_model_aliases"),
                name,
                alias,
            )
        except Unreadable:
            return self.fallback.alias_version(name, alias)
        return str(rows[0][0]) if rows else None

    def version(self, name: str, version: str) -> dict[str, str]:
        try:
            rows = self._rows(
                "select source, run_id from model_versions where name = ? and version = ?"
                f" and current_stage != '{DELETED_STAGE}'" + self._scope("model_versions"),
                name,
                int(version),
            )
        except (Unreadable, ValueError):
            rows = []
        if not rows:  # the client's answer, or its error, for anything unexpected
            return self.fallback.version(name, version)
        source, run = rows[0]
        return {"version": str(version), "source": source or "", "run": run or ""}

    def logged_model(self, model_id: str) -> dict[str, str]:
        """MLflow 3's logged model (a version's ``models:/m-…`` source): the run that logged
        it and the name it was logged under. A deleted one, or a store without the table, is
        the client's answer (its error)."""
        try:
            rows = self._rows(
                "select source_run_id, name from logged_models where model_id = ?"
                " and lifecycle_stage != 'deleted'",
                model_id,
            )
        except Unreadable:
            rows = []
        if not rows:
            return self.fallback.logged_model(model_id)
        run, name = rows[0]
        return {"run": run or "", "name": name or ""}

    def copy_artifacts(self, run_id: str, path: str, target: Path) -> None:
        try:
            rows = self._rows("select artifact_uri from runs where run_uuid = ?", run_id)
        except Unreadable:
            rows = []
        root = _local_path(rows[0][0]) if rows and rows[0][0] else None
        if root is None:  # not a local folder (s3://, mlflow-artifacts:/…): the client fetches
            self.fallback.copy_artifacts(run_id, path, target)
            return
        folder = root / path
        if folder.is_dir():
            _copy_tree(folder, target)


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _files(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file())


def _copy_tree(folder: Path, target: Path) -> None:
    for path in _files(folder):
        dest = target / path.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)


def reader(uri: str) -> Reader:
    """The fastest reader that gives MLflow's answers for ``uri``."""
    # The client would read another registry, or another workspace: let it.
    registry = os.environ.get("MLFLOW_REGISTRY_URI", "").strip()
    other = (registry and registry != uri) or os.environ.get(
        "MLFLOW_WORKSPACE", DEFAULT_WORKSPACE
    ).strip() not in ("", DEFAULT_WORKSPACE)
    if uri.startswith("sqlite:///") and not other:
        db = Path(uri.removeprefix("sqlite:///"))
        return SqliteReader(db) if db.is_file() else EmptyStore()
    return ClientReader()


class EmptyStore(ClientReader):
    """A SQLite store not created yet holds nothing: a lookup need not create it (a step that
    stores, after its work, does)."""

    def entries(self, *args: Any, **kwargs: Any) -> list[Entry]:
        return []

    def run_active(self, run_id: str) -> bool:
        return False

    def alias_version(self, name: str, alias: str) -> str | None:
        return None
