"""The run store: folders, atomic records, listing newest first, lookup by id or prefix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from taskyard.errors import RunError
from taskyard.run import RunStore, run_pipeline
from taskyard.run.store import SUCCEEDED, RunRecord, new_run_id
from tests import run_synthetic as syn


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_run_id_format() -> None:
    run_id = new_run_id("train-eval-deploy", now=0)
    name, date, clock, tag = run_id.rsplit("-", 3)
    assert name == "train-eval-deploy" and len(date) == 8 and len(clock) == 6
    assert int(tag, 16) >= 0 and len(tag) == 4


def test_create_makes_the_folders(home: Path) -> None:
    run = RunStore().create("p")
    assert Path(run.dir).parent == home / "runs"
    assert sorted(p.name for p in Path(run.dir).iterdir()) == ["logs", "results", "workspaces"]


def test_record_round_trip_and_atomic_save() -> None:
    run = RunStore().create("p")
    run.params = {"a": "1"}
    run.save()
    assert [p.name for p in Path(run.dir).iterdir() if p.name.startswith(".")] == []
    loaded = RunStore().get(run.id)
    assert loaded.params == {"a": "1"} and loaded.id == run.id and loaded.status == run.status


def test_list_newest_first_and_lookup() -> None:
    first = run_pipeline(syn.CHAIN, {"greeting": "one"})
    second = run_pipeline(syn.WHEN)
    store = RunStore()
    assert [r.id for r in store.list()] == [second.id, first.id]
    assert store.get("latest").id == second.id
    assert store.get("chain-").id == first.id  # a unique prefix
    got = store.get(first.id)
    assert got.status == SUCCEEDED and got.tasks["c"].results == {"out": "one+b+c"}
    assert store.log(got, "b").read_text().startswith("step b value one+b")
    with pytest.raises(RunError, match="no run 'nope'"):
        store.get("nope")
    with pytest.raises(RunError, match="has no task 'zzz'"):
        store.log(got, "zzz")
    with pytest.raises(RunError, match="never started"):
        store.log(second, "gate")  # when-skipped: no log


def test_ambiguous_prefix_and_unreadable_folders(home: Path) -> None:
    store = RunStore()
    a, b = store.create("same"), store.create("same")
    a.save()
    b.save()
    (home / "runs" / "junk").mkdir()
    (home / "runs" / "half").mkdir()
    (home / "runs" / "half" / "run.json").write_text("{not json")
    assert {r.id for r in store.list()} == {a.id, b.id}
    with pytest.raises(RunError, match="ambiguous"):
        store.get("same-")


def test_abandoned_run_is_shown_as_such() -> None:
    run = RunStore().create("p")
    run.status = "Running"
    run.pid = 2**22 + 12345  # above pid_max's default: no such process
    run.save()
    data = json.loads((Path(run.dir) / "run.json").read_text())
    assert RunRecord.from_json(data).display_status() == "Abandoned"
    run.pid = os.getpid()
    assert run.display_status() == "Running"
