"""The step cache (steps/_cache.py): what the key holds, and a hit across engines.

The key tests change one input at a time and check that the key changes with it, and that it
does not change with anything else (run folders, result paths, the tracking URI, flags that do
not change the work). The engine tests run the *rendered* step twice against one MLflow store,
as Tekton and Argo would run its container (the argv and env of the render, with the mount
points mapped to folders), so a hit proves the same cache serves every engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from taskyard.catalog import TASKS
from taskyard.render import argo_files, tekton_files
from taskyard.spec.task import CACHE_PARAM, CACHE_RESULT
from taskyard.steps import _cache, _store_read
from taskyard.steps import evaluate as evaluate_step
from taskyard.steps import train as train_step
from taskyard.steps._results import env_name
from tests.gitutil import git_env
from tests.mlflowutil import log_sklearn_model, migrated_store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wine-classifier"
TINY = "n_estimators=10,max_depth=3"


# Fixed dates: two checkouts of the same files are the same commit, as two clones of one remote.
DATES = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def git(cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", *argv], cwd=cwd, env=git_env(**DATES), capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def checkout(root: Path) -> Path:
    """A source workspace whose ``repo/`` is a git checkout of the example (as git-clone makes)."""
    repo = root / "repo"
    shutil.copytree(
        EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "artifacts")
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example")
    return root


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return migrated_store(tmp_path, monkeypatch, tmp_path_factory)


def train_key(ws: Path, *argv: str, data: str = "d1") -> str:
    args = train_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", *argv]
    )
    inputs = {"project": _cache.project_state(ws / "repo"), "data": data}
    return _cache.key_of(_cache.material("train", args, inputs))


# ---- the key --------------------------------------------------------------------------------
def test_the_key_changes_with_each_input(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(_cache.IMAGE_ENV, raising=False)
    ws = checkout(tmp_path / "a")
    base = train_key(ws, "--overrides", TINY)
    changed = {
        "a param": train_key(ws, "--overrides", "n_estimators=11,max_depth=3"),
        "an input result (commit param)": train_key(ws, "--overrides", TINY, "--commit", "abc"),
        "the data's content hash": train_key(ws, "--overrides", TINY, data="d2"),
    }
    monkeypatch.setenv(_cache.IMAGE_ENV, "ghcr.io/x/train@sha256:" + "1" * 64)
    changed["the image digest"] = train_key(ws, "--overrides", TINY)
    monkeypatch.setenv(_cache.IMAGE_ENV, "ghcr.io/x/train@sha256:" + "2" * 64)
    changed["another image digest"] = train_key(ws, "--overrides", TINY)
    monkeypatch.delenv(_cache.IMAGE_ENV)
    monkeypatch.setattr(_cache, "code_hash", lambda: "another step code")
    changed["the step code"] = train_key(ws, "--overrides", TINY)
    monkeypatch.undo()
    monkeypatch.delenv(_cache.IMAGE_ENV, raising=False)

    repo = ws / "repo"
    (repo / "NOTES.md").write_text("untracked\n")
    changed["an untracked file"] = train_key(ws, "--overrides", TINY)
    git(repo, "add", "NOTES.md")
    git(repo, "commit", "-q", "-m", "notes")
    changed["a new commit"] = train_key(ws, "--overrides", TINY)
    with open(repo / "taskyard.toml", "a") as f:
        f.write("\n# an uncommitted edit\n")
    changed["an uncommitted edit"] = train_key(ws, "--overrides", TINY)

    keys = [base, *changed.values()]
    assert len(set(keys)) == len(keys), {k: v[:12] for k, v in changed.items()}


def test_the_key_ignores_what_does_not_change_the_work(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(_cache.IMAGE_ENV, raising=False)
    a, b = checkout(tmp_path / "a"), tmp_path / "b"
    shutil.copytree(a, b)  # another run's workspace: same clone, another folder
    base = train_key(a, "--overrides", TINY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv(env_name("run-id"), str(tmp_path / "elsewhere" / "run-id"))
    monkeypatch.setenv(_cache.IMAGE_ENV, "ghcr.io/taskyard/train:0.1.0")  # a tag is no digest
    (a / "repo" / ".git" / "info").mkdir(exist_ok=True)
    with open(a / "repo" / ".git" / "info" / "exclude", "a") as f:
        f.write("*.log\n")
    (a / "repo" / "ignored.log").write_text("git ignores it\n")
    same = [
        train_key(b, "--overrides", TINY),
        train_key(a, "--overrides", TINY, "--debug"),
        train_key(a, "--overrides", TINY, "--cache-max-age", "1h", "--cache", "false"),
        train_key(a, "--overrides", TINY),
    ]
    assert set(same) == {base}


def test_a_folder_outside_git_is_keyed_by_its_content(tmp_path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b\n1,2\n")
    first = _cache.project_state(folder)
    (folder / "data.csv").write_text("a,b\n1,3\n")  # same name, other content
    assert set(first) == {"tree"} and _cache.project_state(folder) != first


def _readers(uri: str) -> dict[str, _store_read.Reader]:
    db = Path(uri.removeprefix("sqlite:///"))
    return {"client": _store_read.ClientReader(), "sqlite": _store_read.SqliteReader(db)}


def test_evaluate_keys_the_champion_it_judges_against(tmp_path, store) -> None:
    """Same candidate, same data: no champion, v1, and v1 re-registered from another run
    (a deleted and re-created model reuses the number) are three different decisions; the
    SQLite reader and the mlflow client key each of them alike."""
    from mlflow import MlflowClient

    ws = checkout(tmp_path / "ws")
    uri, _ = log_sklearn_model(seed=0)
    args = evaluate_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", "--model-uri", uri]
    )
    g = evaluate_step.gate(ws, "repo", "taskyard.toml", "m", "champion", "", "")
    client = MlflowClient()
    readers = _readers(store)

    def key(champion: str | None) -> str:
        inputs = [evaluate_step._inputs(r, g, uri, champion) for r in readers.values()]
        keys = {_cache.key_of(_cache.material("evaluate", args, i)) for i in inputs}
        assert len(keys) == 1, "the two readers disagree"
        return keys.pop()

    def score_key(champion: str | None) -> str:
        inputs = [evaluate_step._inputs(r, g, uri, champion) for r in readers.values()]
        keys = {evaluate_step.score_key(_cache.material("evaluate", args, i)) for i in inputs}
        assert len(keys) == 1, "the two readers disagree"
        return keys.pop()

    def registered_from(name: str, candidate: str) -> bool:
        said = {evaluate_step.is_registered_from(r, name, "1", candidate) for r in readers.values()}
        assert len(said) == 1, "the two readers disagree"
        return said.pop()

    def candidate_key(candidate: str) -> str:
        a = evaluate_step.build_parser().parse_args(
            ["--source", str(ws), "--subdirectory", "repo", "--model-uri", candidate]
        )
        inputs = [evaluate_step._inputs(r, g, candidate, None) for r in readers.values()]
        keys = {_cache.key_of(_cache.material("evaluate", a, i)) for i in inputs}
        assert len(keys) == 1, "the two readers disagree"
        return keys.pop()

    none = key(None)
    client.create_registered_model("m")
    client.create_model_version("m", uri, uri.split("/")[1])
    first = key("1")
    by_number = candidate_key("models:/m/1")
    assert registered_from("m", uri)
    client.delete_registered_model("m")
    other, other_run = log_sklearn_model(seed=1)
    client.create_registered_model("m")
    client.create_model_version("m", other, other_run)
    assert len({none, first, key("1")}) == 3
    assert key("1") == key("1")
    # a candidate named by version number is keyed by what that version is now
    assert candidate_key("models:/m/1") != by_number
    # The candidate's score does not depend on the champion: one score key for all three.
    assert score_key(None) == score_key("1") != none
    assert not registered_from("m", uri) and registered_from("m", other)
    # registered as promote does (MLflow 3: the source is the logged model, models:/m-…)
    import mlflow

    mlflow.register_model(uri, "m2")
    assert client.get_model_version("m2", "1").source.startswith("models:/m-")
    assert registered_from("m2", uri) and not registered_from("m2", other)
    assert not registered_from("m2", uri.replace("/model", "/other-path"))


def test_the_sqlite_reader_answers_as_the_mlflow_client(tmp_path, store) -> None:
    """Entries (finished only, newest first, max age), run states, aliases, versions and
    logged models, read from the store's tables, are the client's answers, deleted things
    included."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    ws = checkout(tmp_path / "a")
    first, _ = train(ws)
    second, _ = train(ws, "--overrides", "n_estimators=11,max_depth=3")
    args = train_step.build_parser().parse_args(["--source", str(ws), "--overrides", TINY])
    cache = _cache.open_cache("train", args, ws, {"project": "p", "data": "d"})
    client.create_run(cache._experiment(), tags={_cache.KEY_TAG: "k"})  # RUNNING: not an entry
    client.create_registered_model("m")
    for r in (first, second):
        client.create_model_version("m", r["model-uri"], r["run-id"])
    client.set_registered_model_alias("m", "champion", "2")
    client.delete_model_version("m", "1")
    client.delete_run(first["run-id"])
    logged = mlflow.models.get_model_info(second["model-uri"]).model_id
    answers = {}
    for name, r in _readers(store).items():
        entries = [
            r.entries(_cache.EXPERIMENT, _cache.STEP_TAG, "train", oldest, 5)
            for oldest in (None, 0, 2**60)
        ]
        answers[name] = (
            [[(e.run_id, e.tags, e.start_time) for e in found] for found in entries],
            r.entries(_cache.EXPERIMENT, _cache.KEY_TAG, "k", None, 5),
            r.entries("no-such-experiment", _cache.KEY_TAG, "k", None, 5),
            [r.run_active(x) for x in (first["run-id"], second["run-id"], "0" * 32)],
            [r.alias_version(n, a) for n, a in (("m", "champion"), ("m", "x"), ("n", "champion"))],
            r.version("m", "2"),
            r.logged_model(logged),
        )
    assert answers["sqlite"] == answers["client"]
    found, running, none, active, aliases, version, model = answers["sqlite"]
    assert model == {"run": second["run-id"], "name": "model"}
    assert len(found[0]) == 2 and found[0] == found[1] and found[2] == []
    assert found[0][0][2] >= found[0][1][2]
    assert running == [] and none == [] and active == [False, True, False]
    assert aliases == ["2", None, None] and version["run"] == second["run-id"]
    gone = mlflow.models.get_model_info(first["model-uri"]).model_id
    client.delete_logged_model(gone)
    for r in _readers(store).values():  # a deleted one is the client's error, both ways
        with pytest.raises(Exception, match=r"(?i)not found|does not exist"):
            r.version("m", "1")
        with pytest.raises(Exception, match=r"(?i)not found|does not exist"):
            r.logged_model(gone)


def test_a_store_the_sqlite_reader_does_not_know_is_read_by_the_client(tmp_path, store) -> None:
    """A schema without the columns it reads (an MLflow it was not written for) or a file that
    is no database: the client answers, from the real store."""
    ws = checkout(tmp_path / "a")
    first, _ = train(ws)
    odd = tmp_path / "odd.db"
    conn = sqlite3.connect(odd)
    conn.execute("create table runs (run_uuid text, state text)")
    conn.commit()
    conn.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    for db in (odd, junk):
        r = _store_read.SqliteReader(db)
        assert r.run_active(first["run-id"]) is True
        assert [e.run_id for e in r.entries(_cache.EXPERIMENT, _cache.STEP_TAG, "train", None, 5)]


def test_a_hit_on_the_local_store_does_not_import_mlflow(tmp_path, store) -> None:
    """A replayed train step reads the SQLite store itself: mlflow's import (seconds) is for
    the work, and a hit does none."""
    ws = checkout(tmp_path / "a")
    train(ws)
    probe = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('taskyard.steps.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('mlflow imported:', 'mlflow' in sys.modules)\n"
    )
    argv = ["--source", str(ws), "--subdirectory", "repo", "--overrides", TINY]
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": store}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cache: hit" in done.stdout and "mlflow imported: False" in done.stdout, done.stdout


def test_max_age_parses_and_refuses_nonsense() -> None:
    assert _cache.parse_age("") is None
    assert _cache.parse_age("90m") == 5400 and _cache.parse_age("2d") == 172800
    assert _cache.parse_age("30") == 30
    with pytest.raises(Exception, match="not a duration"):
        _cache.parse_age("a week")


# ---- hits and misses, the step in-process -----------------------------------------------------
def train(ws: Path, *argv: str) -> tuple[dict, str]:
    """Run train in-process; return its results (from the record) and what it printed."""
    import contextlib
    import io

    args = train_step.build_parser().parse_args(
        ["--source", str(ws), "--subdirectory", "repo", "--overrides", TINY, *argv]
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train_step.run(args)
    record = json.loads((ws / "artifacts" / "train.json").read_text())
    return record["results"], out.getvalue()


def train_runs() -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("wine-classifier")
    return client.search_runs([exp.experiment_id], "tags.`taskyard.step` = 'train'")


def test_a_hit_replays_results_and_record_and_trains_nothing(tmp_path, store) -> None:
    first, said = train(checkout(tmp_path / "a"))
    assert "cache: miss" in said and "cache: stored" in said
    other = checkout(tmp_path / "b")  # the next run's workspace
    again, said = train(other)
    assert "cache: hit" in said
    assert again == first  # the record was restored into the new workspace
    assert len(train_runs()) == 1


def test_changed_data_content_under_the_same_name_misses(tmp_path, store) -> None:
    """Data outside git: the content hash, not the file name or the commit, decides."""
    ws = checkout(tmp_path / "a")
    config = (ws / "repo" / "taskyard.toml").read_text()
    data = tmp_path / "outside.csv"
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame.to_csv(data, index=False)
    source = re.sub(r"(?m)^source = .*$", f'source = "csv:{data}"', config, count=1)
    assert source != config, "the example's config has no data.source line"
    (ws / "repo" / "taskyard.toml").write_text(source)
    git(ws / "repo", "commit", "-qam", "data outside the repo")
    train(ws)
    _, said = train(ws)
    assert "cache: hit" in said
    frame.loc[0, frame.columns[0]] += 1.0
    frame.to_csv(data, index=False)
    _, said = train(ws)
    assert "cache: miss" in said and len(train_runs()) == 2


def test_off_max_age_and_deleted_runs_compute_again(tmp_path, store) -> None:
    from mlflow import MlflowClient

    ws = checkout(tmp_path / "a")
    first, _ = train(ws)
    _, said = train(ws, "--cache", "false")
    assert "cache: off" in said and "stored" not in said
    _, said = train(ws, "--cache-max-age", "0s")
    assert "cache: miss" in said
    _, said = train(ws, "--cache-max-age", "1h")
    assert "cache: hit" in said
    MlflowClient().delete_run(first["run-id"])
    newest = max(train_runs(), key=lambda r: r.info.start_time)
    MlflowClient().delete_run(newest.info.run_id)
    again, said = train(ws)
    assert "points at something deleted" in said and "cache: miss" in said
    assert again["run-id"] not in (first["run-id"], newest.info.run_id)


def test_an_entry_that_never_finished_is_never_replayed(tmp_path, store) -> None:
    """A step killed while storing leaves a RUNNING entry: no lookup may return it."""
    from mlflow import MlflowClient

    ws = checkout(tmp_path / "a")
    args = train_step.build_parser().parse_args(["--source", str(ws), "--overrides", TINY])
    cache = _cache.open_cache("train", args, ws, {"project": "p", "data": "d"})
    client = MlflowClient()
    exp = _cache.StepCache._experiment(cache)
    client.create_run(exp, tags={_cache.KEY_TAG: cache.key, _cache.RESULT_TAG + "run-id": "x"})
    assert cache.lookup() is None


# ---- the rendered step, as Tekton and Argo run its container ----------------------------------
def _tekton_step(values: dict[str, str], ws: Path, results: Path) -> tuple[list[str], dict]:
    """The train Task's step argv and env, substituted as Tekton does (params, paths)."""
    task = TASKS["train"]
    doc = yaml.safe_load(tekton_files.files()[f"tasks/train/{task.version}/train.yaml"])
    step = doc["spec"]["steps"][0]
    given = {p["name"]: p.get("default", "") for p in doc["spec"]["params"]} | values

    def sub(text: str) -> str:
        text = re.sub(r"\$\(params\.([\w-]+)\)", lambda m: given[m.group(1)], text)
        text = re.sub(r"\$\(results\.([\w-]+)\.path\)", lambda m: str(results / m.group(1)), text)
        text = text.replace("$(workspaces.source.path)", str(ws))
        return text.replace("$(workspaces.mlflow.path)", "")

    env = {e["name"]: sub(e["value"]) for e in step.get("env", [])}
    return [sub(a) for a in (*step["command"], *step["args"])], env


def _argo_step(values: dict[str, str], ws: Path, results: Path) -> tuple[list[str], dict]:
    """The train template of the rendered WorkflowTemplate, its mount points mapped here."""
    doc = yaml.safe_load(argo_files.files()["hera/retrain.yaml"])
    template = next(t for t in doc["spec"]["templates"] if t["name"] == "train")
    c = template["container"]
    given = {p["name"]: p.get("default", "") for p in template["inputs"]["parameters"]} | values

    def sub(text: str) -> str:
        text = re.sub(r"\{\{inputs\.parameters\.([\w-]+)\}\}", lambda m: given[m.group(1)], text)
        text = text.replace("/workspace/source", str(ws)).replace("/workspace/mlflow", "")
        return text.replace("/tmp/taskyard/results", str(results))

    env = {e["name"]: sub(e["value"]) for e in c.get("env", [])}
    return [sub(a) for a in (*c["command"], *c["args"])], env


def _run(argv: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "TASKYARD_HOME": str(home)}
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    done = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _results(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_one_cache_serves_the_tekton_and_the_argo_render(tmp_path) -> None:
    """train as rendered for Tekton, then for Tekton again and for Argo, each in a new
    workspace, against one MLflow store: computed once, replayed twice, across engines."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    # A pinned image, as on a cluster: its digest (not this checkout's code) keys the task.
    image = "ghcr.io/taskyard/train@sha256:" + "ab" * 32
    values = {"overrides": TINY, "mlflow-tracking-uri": uri, "commit": "c0ffee", "image": image}
    seen = []
    for i, step in enumerate((_tekton_step, _tekton_step, _argo_step)):
        ws, results = checkout(tmp_path / f"ws{i}"), tmp_path / f"results{i}"
        results.mkdir()
        argv, env = step(values, ws, results)
        done = _run(argv, env, tmp_path / "home")
        seen.append((done.stdout, _results(results)))
    (said0, first), (said1, second), (said2, third) = seen
    assert "cache: miss" in said0 and first[CACHE_RESULT] == ""
    assert "cache: hit" in said1 and "cache: hit" in said2
    entry = second[CACHE_RESULT]
    assert entry and third[CACHE_RESULT] == entry
    for got in (second, third):
        assert {k: v for k, v in got.items() if k != CACHE_RESULT} == {
            k: v for k, v in first.items() if k != CACHE_RESULT
        }
    # and the pipeline switch reaches the step: cache=false computes a new run
    ws, results = checkout(tmp_path / "ws-off"), tmp_path / "results-off"
    results.mkdir()
    argv, env = _tekton_step({**values, CACHE_PARAM: "false"}, ws, results)
    done = _run(argv, env, tmp_path / "home")
    assert "cache: off" in done.stdout
    assert _results(results)["run-id"] != first["run-id"]


def test_no_cache_turns_off_every_cached_task_of_any_pipeline() -> None:
    from taskyard.catalog import PIPELINES
    from taskyard.run.load import without_cache
    from taskyard.spec import PipelineSpec

    spec = PIPELINES["train-eval-deploy"]
    cached = {pt.name for pt in spec.all_tasks if pt.task.cache}
    assert cached == {"test", "train", "evaluate"}
    assert all(spec.get(n).params[CACHE_PARAM] == "$(params.cache)" for n in cached)
    off = without_cache(spec)
    assert {pt.name for pt in off.all_tasks if pt.params.get(CACHE_PARAM) == "false"} == cached
    assert not any(CACHE_PARAM in pt.params for pt in off.all_tasks if pt.name not in cached)
    # a fork that never bound the switch: the task's own default is overridden all the same
    fork = PipelineSpec(
        name="fork",
        display_name="fork",
        description="train only",
        workspaces=spec.workspaces,
        tasks=(spec.get("train").model_copy(update={"params": {"commit": "x"}, "run_after": ()}),),
    )
    assert without_cache(fork).get("train").params[CACHE_PARAM] == "false"


def test_promote_and_deploy_never_cache_and_a_cached_task_keeps_the_contract() -> None:
    from taskyard.errors import SpecError
    from taskyard.spec import TaskSpec

    assert not TASKS["promote"].cache and not TASKS["deploy"].cache
    for name in ("run-tests", "train", "train-gpu", "evaluate"):
        task = TASKS[name]
        assert task.cache and CACHE_RESULT in task.result_names
        assert "--cache" in task.args and task.env[_cache.IMAGE_ENV] == "$(params.image)"
    with pytest.raises(SpecError, match="cache: true needs param 'cache'"):
        TaskSpec(name="t", display_name="t", description="d", image="i", command=("x",), cache=True)


def test_the_run_table_shows_a_replayed_task_as_cached() -> None:
    from rich.console import Console

    from taskyard.run.progress import task_table
    from taskyard.run.store import SUCCEEDED, RunRecord, TaskRecord

    run = RunRecord.__new__(RunRecord)
    run.tasks = {
        "train": TaskRecord("train", "train", state=SUCCEEDED, results={CACHE_RESULT: "e1"}),
        "evaluate": TaskRecord("evaluate", "evaluate", state=SUCCEEDED, results={CACHE_RESULT: ""}),
    }
    console = Console(width=200, record=True)
    console.print(task_table(run))
    rows = {line.split()[0]: line for line in console.export_text().splitlines()[1:] if line}
    assert "Cached" in rows["train"] and "from cache entry e1" in rows["train"]
    assert "Succeeded" in rows["evaluate"] and "Cached" not in rows["evaluate"]
