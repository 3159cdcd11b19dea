"""The run store: folders, atomic records, listing newest first, lookup by id or prefix."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from taskyard.errors import RunError
from taskyard.run import RunStore, run_pipeline
from taskyard.run.store import (
    ABANDONED,
    SUCCEEDED,
    RunRecord,
    TaskRecord,
    new_run_id,
    process_start,
)
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


def _running(run: RunRecord, **fields: object) -> RunRecord:
    run.status = "Running"
    run.tasks = {
        "done": TaskRecord(name="done", task="t", state="Succeeded", started=1.0, ended=2.0),
        "busy": TaskRecord(name="busy", task="t", state="Running", started=2.0),
        "later": TaskRecord(name="later", task="t"),
    }
    for key, value in fields.items():
        setattr(run, key, value)
    run.save()
    return run


def test_a_dead_runner_s_record_is_rewritten_once_as_abandoned() -> None:
    store = RunStore()
    run = _running(store.create("p"), pid=2**22 + 12345)  # above the default pid_max
    listed = store.list()[0]
    assert listed.status == ABANDONED and listed.reason == "the runner process died (killed?)"
    data = json.loads((Path(run.dir) / "run.json").read_text())
    assert data["status"] == ABANDONED and data["ended"] is not None
    assert {n: (t["state"], t["reason"]) for n, t in data["tasks"].items()} == {
        "done": ("Succeeded", ""),
        "busy": ("Cancelled", "runner died"),
        "later": ("Cancelled", "runner died"),
    }
    assert data["tasks"]["busy"]["ended"] is not None and data["tasks"]["later"]["ended"] is None
    ended = data["ended"]
    assert store.get(run.id).ended == ended  # terminal now: not rewritten again


def test_a_reused_pid_counts_as_dead_and_a_live_runner_is_left_alone() -> None:
    store = RunStore()
    me = process_start(os.getpid())
    assert me is not None
    live = _running(store.create("live"))  # this process, with its own start time
    reused = _running(store.create("reused"), pid_start=me - 1)  # our pid, another process
    other_host = _running(store.create("elsewhere"), pid=2**22 + 1, host="another-machine")
    assert store.get(live.id).status == "Running"
    assert store.get(reused.id).status == ABANDONED
    assert store.get(other_host.id).status == "Running"  # cannot be judged from here
    old = json.loads((Path(live.dir) / "run.json").read_text())
    del old["pid_start"], old["host"]  # a record from before these fields
    old["pid"] = 2**22 + 2
    (Path(live.dir) / "run.json").write_text(json.dumps(old))
    assert store.get(live.id).status == ABANDONED


def test_process_start_reads_field_22() -> None:
    proc = subprocess.Popen(["sleep", "5"])
    try:
        mine, child = process_start(os.getpid()), process_start(proc.pid)
        assert mine is not None and child is not None and child >= mine
    finally:
        proc.kill()
        proc.wait()
    assert process_start(2**22 + 3) is None


def test_run_json_stores_secrets_redacted_and_keeps_them_in_memory() -> None:
    run = RunStore().create("p")
    url = "https://bob:hunter2@git.example.com/x.git"
    run.params = {"repo-url": url, "n": "1"}
    run.results = {"url": url}
    run.reason = f"cannot clone {url}"
    run.tasks = {"t": TaskRecord(name="t", task="t", results={"u": url}, reason=url)}
    run.save()
    text = (Path(run.dir) / "run.json").read_text()
    assert "hunter2" not in text and "https://***@git.example.com/x.git" in text
    assert run.params["repo-url"] == url  # the runner binds the real value
    assert RunStore().get(run.id).params == {
        "repo-url": "https://***@git.example.com/x.git",
        "n": "1",
    }


def test_a_save_of_the_changed_tasks_stores_what_a_full_save_stores() -> None:
    """The runner names the tasks it changed; the others keep their JSON, running ones are
    re-encoded anyway (their duration moves): the file is the same as a full encode."""
    run = RunStore().create("p")
    run.tasks = {
        "a": TaskRecord(name="a", task="t", state="Succeeded", started=1.0, ended=2.0),
        "b": TaskRecord(name="b", task="t", state="Running", started=2.0),
        "c": TaskRecord(name="c", task="t"),
    }
    run.save()

    def stored() -> dict:
        return json.loads((Path(run.dir) / "run.json").read_text())["tasks"]

    def steady(tasks: dict) -> dict:  # a running task's duration is the clock's
        return {n: {k: v for k, v in t.items() if k != "duration" or t["state"] != "Running"}
                for n, t in tasks.items()}  # fmt: skip

    run.tasks["c"].state, run.tasks["c"].started = "Running", 3.0
    run.tasks["a"].results["x"] = "1"  # changed and named
    run.save({"a", "c"})
    assert steady(stored()) == steady(json.loads(json.dumps(run.to_json()["tasks"])))
    assert stored()["a"]["results"] == {"x": "1"}

    run.tasks["b"].state, run.tasks["b"].ended = "Failed", 5.0  # running before: looked at
    run.save(set())
    assert stored()["b"]["state"] == "Failed" and stored()["b"]["duration"] == 3.0
    run.tasks["d"] = TaskRecord(name="d", task="t")  # a task not encoded yet: a full pass
    run.save(set())
    assert list(stored()) == ["a", "b", "c", "d"]
