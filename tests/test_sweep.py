"""The sweep: a matrix in the spec, its fan-out on Tekton, Argo and the local runner, select-best.

Fast checks use synthetic steps and a real SQLite MLflow store; the end-to-end sweep over the
bundled example (2x2 grid, best trial promoted through the normal gate) is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.catalog import PIPELINES, TASKS
from taskyard.errors import SpecError, StepError
from taskyard.render import argo, tekton
from taskyard.run import run_pipeline
from taskyard.run.store import FAILED, SKIPPED, SUCCEEDED
from taskyard.spec import (
    Param,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    Result,
    TaskSpec,
    refs,
    result,
)
from taskyard.spec.refs import array_param, results
from tests import run_synthetic as syn
from tests import schemas, tekton_check

SWEEP = PIPELINES["sweep"]
GRID = [
    "n_estimators=50,max_depth=2",
    "n_estimators=50,max_depth=8",
    "n_estimators=200,max_depth=2",
    "n_estimators=200,max_depth=8",
]


# ---- the spec ----------------------------------------------------------------------------------
# Takes an array (Tekton: one arg per item; Argo, local: one JSON list) and writes it as JSON.
COLLECT = TaskSpec(
    name="collect",
    display_name="collect",
    description="Writes the items it got as a JSON list.",
    image="python:3.11-slim",
    command=(
        "python",
        "-c",
        "import json, sys\n"
        "out, items = sys.argv[1], sys.argv[2:]\n"
        "if len(items) == 1 and items[0].startswith('['):\n"
        "    items = json.loads(items[0])\n"
        "open(out, 'w').write(json.dumps(items))\n",
    ),
    args=("$(results.out.path)", array_param("items")),
    params=(Param(name="items"),),
    results=(Result(name="out"),),
)


def fan(
    matrix: dict[str, tuple[str, ...]],
    consumer: str | None = None,
    params: dict[str, str] | None = None,
    **kw: Any,
) -> PipelineSpec:
    """a (matrixed) -> b reading a's results (``consumer``: its binding)."""
    base = {k: v for k, v in {"name": "a", "sleep": "0.3"}.items() if k not in matrix}
    tasks = [
        PipelineTask(
            name="a",
            task=syn.STEP,
            matrix=matrix,
            params=base if params is None else params,
            workspaces={"data": "data"},
            **kw,
        )
    ]
    if consumer is not None:
        tasks.append(PipelineTask(name="b", task=COLLECT, params={"items": consumer}))
    return PipelineSpec(
        name="fan",
        display_name="fan",
        description="fan-out",
        workspaces=(PipelineWorkspace(name="data"),),
        tasks=tuple(tasks),
    )


def test_combinations_are_the_cross_product_first_param_slowest() -> None:
    pt = fan({"value": ("x", "y"), "sleep": ("0", "1")}).get("a")
    assert pt.combinations() == [
        {"value": "x", "sleep": "0"},
        {"value": "x", "sleep": "1"},
        {"value": "y", "sleep": "0"},
        {"value": "y", "sleep": "1"},
    ]
    assert SWEEP.get("train").combinations() == [{"overrides": o} for o in GRID]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: fan({"nope": ("1",)}), "matrix.nope is not a param"),
        (lambda: fan({"name": ("1",)}, params={"name": "a"}), "both in params and in matrix"),
        (lambda: fan({"value": ()}), "has no values"),
        (lambda: fan({"value": ("$(params.x)",)}), "literals"),
        (lambda: fan({"value": tuple(map(str, range(257)))}), "256"),
        (lambda: fan({"value": ("1", "2")}, result("a", "out")), "array param"),
        (lambda: fan({"value": ("1", "2")}, "x" + results("a", "out")), "array param"),
    ],
)
def test_matrix_errors(build, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build()


def test_array_refs_need_a_matrixed_producer_and_an_array_param() -> None:
    with pytest.raises(SpecError, match="has no matrix"):
        fan({}, results("a", "out"))
    with pytest.raises(SpecError, match="takes it as a string"):
        fan({"value": ("1", "2")}).model_copy()  # fine alone ...
        PipelineSpec.model_validate(
            {
                **fan({"value": ("1", "2")}).model_dump(by_alias=True),
                "tasks": [
                    fan({"value": ("1", "2")}).model_dump(by_alias=True)["tasks"][0],
                    {
                        "name": "b",
                        "task": syn.STEP.model_dump(),
                        "params": {"name": "b", "value": results("a", "out")},
                        "workspaces": {"data": "data"},
                    },
                ],
            }
        )  # ... but an array into a string param is refused
    # select-best's run-ids is an array param: it takes only a fanned-out task's results
    spec = SWEEP.model_dump(by_alias=True)
    sb = next(t for t in spec["tasks"] if t["name"] == "select-best")
    sb["params"]["run-ids"] = result("clone", "commit")
    with pytest.raises(SpecError, match="array param"):
        PipelineSpec.model_validate(spec)
    assert refs.parse("tasks.t.results.r[*]") == refs.Ref("task-result", "r", "t", array=True)
    assert refs.parse("params.p[*]").text == "$(params.p[*])"


# ---- the local runner ----------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def test_trials_run_in_parallel_and_results_are_arrays_in_order(home: Path) -> None:
    spec = fan({"value": ("w", "x", "y", "z")}, results("a", "out"))
    run = run_pipeline(spec, max_parallel=2)
    assert run.status == SUCCEEDED
    assert json.loads(run.tasks["a"].results["out"]) == ["w", "x", "y", "z"]
    # b got the JSON list as one string, as Argo passes it
    assert json.loads(run.tasks["b"].results["out"]) == ["w", "x", "y", "z"]
    trials = [run.tasks[f"a[{i}]"] for i in range(4)]
    assert [t.state for t in trials] == [SUCCEEDED] * 4
    assert [t.reason for t in trials] == ["value=w", "value=x", "value=y", "value=z"]
    assert run.tasks["a"].reason == "4 trials"
    folder = Path(run.dir)
    assert (folder / "results/a.2/out").read_text() == "y"
    assert "step a value z" in (folder / "logs/a.3.log").read_text()
    assert "a[1] (value=x)" in (folder / "logs/a.log").read_text()
    # at most two at a time: the third started after one of the first two ended
    spans = sorted((t.started, t.ended) for t in trials)
    assert all(sum(s <= start < e for s, e in spans) <= 2 for start, _ in spans)
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05


def test_a_failed_trial_fails_the_task_once_all_are_done(home: Path) -> None:
    spec = fan({"exit-code": ("0", "1", "0")}, results("a", "out"))
    run = run_pipeline(spec, max_parallel=3)
    assert run.status == FAILED
    assert [run.tasks[f"a[{i}]"].state for i in range(3)] == [SUCCEEDED, FAILED, SUCCEEDED]
    assert run.tasks["a"].state == FAILED
    assert run.tasks["a"].reason.startswith("trial a[1] failed: step a failed on purpose")
    assert run.tasks["b"].state == SKIPPED
    assert run.reason == "Failed: task a failed"


def test_trials_not_started_after_a_failure_are_skipped(home: Path) -> None:
    run = run_pipeline(fan({"exit-code": ("1", "0", "0")}), max_parallel=1)
    assert [run.tasks[f"a[{i}]"].state for i in range(3)] == [FAILED, SKIPPED, SKIPPED]
    assert run.tasks["a"].state == FAILED


def test_each_trial_retries_on_its_own(home: Path) -> None:
    run = run_pipeline(fan({"exit-code": ("0", "1")}, retries=1), max_parallel=2)
    assert [run.tasks[f"a[{i}]"].attempts for i in range(2)] == [1, 2]


# ---- select-best (real MLflow, SQLite in tmp_path) -----------------------------------------------
@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from tests.mlflowutil import use_store

    return use_store(monkeypatch, tmp_path / "home")


def _trial(metric: float | None, name: str = "f1_macro") -> str:
    import mlflow

    from taskyard.steps import _mlflow

    exp = _mlflow.experiment("sweep-tests")
    tags = {"taskyard.model_name": "m", "taskyard.data_hash": "abc", "taskyard.commit": "c" * 40}
    with mlflow.start_run(experiment_id=exp, tags=tags) as r:
        if metric is not None:
            mlflow.log_metric(name, metric)
        return r.info.run_id


def _select(tmp_path: Path, *ids: str, metric: str = "f1_macro") -> dict[str, str]:
    from taskyard.steps import select_best

    out = tmp_path / "results"
    out.mkdir(exist_ok=True)
    names = [r.name for r in TASKS["select-best"].results]
    env = {f"TASKYARD_RESULT_{n.upper().replace('-', '_')}": str(out / n) for n in names}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        args = select_best.build_parser().parse_args(
            ["--source", str(tmp_path), "--metric-name", metric, "--", *ids]
        )
        select_best.run(args)
    return {n: (out / n).read_text() for n in names if (out / n).exists()}


def test_select_best_picks_by_direction_ties_first_and_nests_the_trials(
    store: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    ids = [_trial(0.9), _trial(0.95), _trial(0.95), _trial(0.8)]
    got = _select(tmp_path, json.dumps(ids))  # Argo's / the local runner's form
    assert got["run-id"] == ids[1]
    assert got["model-uri"] == f"runs:/{ids[1]}/model"
    assert (got["model-name"], got["metric-name"], got["data-hash"]) == ("m", "f1_macro", "abc")
    assert got["metric-value"] == "0.95"
    client = MlflowClient()
    parent = client.get_run(got["sweep-run-id"])
    assert parent.info.run_name == "sweep-cccccccc"
    assert parent.data.tags["taskyard.best_run_id"] == ids[1]
    assert {client.get_run(i).data.tags["mlflow.parentRunId"] for i in ids} == {parent.info.run_id}
    # rmse: smaller is better; Tekton's form (one arg per id)
    low = [_trial(3.0, "rmse"), _trial(1.0, "rmse")]
    assert _select(tmp_path, *low, metric="rmse")["run-id"] == low[1]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (lambda: [], "no trials"),
        (lambda: ["[]"], "no trials"),
        (lambda: [_trial(0.9), "0" * 32], "does not exist"),
        (lambda: [_trial(0.9), _trial(None)], "has no metric 'f1_macro'"),
        (lambda: ['["a",'], "not a JSON list"),
    ],
)
def test_select_best_errors_are_one_line(store: str, tmp_path: Path, ids, message: str) -> None:
    with pytest.raises(StepError, match=message) as e:
        _select(tmp_path, *ids())
    assert "\n" not in str(e.value)


# ---- renders -----------------------------------------------------------------------------------
TEKTON_SCHEMAS = "tekton-v1.15.0/v1-openapiv3"
ARGO_SCHEMA = "argo-workflows-v4.1.2/schema.json"


def _tekton_docs() -> dict[str, dict[str, Any]]:
    return {pt.task.name: tekton.task(pt.task) for pt in SWEEP.all_tasks}


def test_tekton_render_is_strict_valid_with_a_matrix_and_an_array_param() -> None:
    pipeline = tekton.pipeline(SWEEP)
    for doc in [pipeline, tekton.pipelinerun_sample(SWEEP), *_tekton_docs().values()]:
        path = schemas.schema_path(f"{TEKTON_SCHEMAS}/{doc['kind']}.json")
        assert schemas.errors(schemas.strict_validator(path), doc) == [], doc["metadata"]
    train = next(t for t in pipeline["spec"]["tasks"] if t["name"] == "train")
    assert train["matrix"] == {"params": [{"name": "overrides", "value": GRID}]}
    assert "overrides" not in {p["name"] for p in train["params"]}
    best = next(t for t in pipeline["spec"]["tasks"] if t["name"] == "select-best")
    assert {"name": "run-ids", "value": "$(tasks.train.results.run-id[*])"} in best["params"]
    assert pipeline["metadata"]["annotations"]["tekton.dev/pipelines.minVersion"] == "0.53.0"
    task = tekton.task(TASKS["select-best"])
    (run_ids,) = [p for p in task["spec"]["params"] if p["name"] == "run-ids"]
    assert run_ids["type"] == "array" and "default" not in run_ids
    assert task["spec"]["steps"][0]["args"][-2:] == ["--", "$(params.run-ids[*])"]
    problems = tekton_check.semantic_problems([pipeline, *_tekton_docs().values()])
    assert problems == []


def test_argo_render_is_strict_valid_with_items() -> None:
    doc = argo.workflow_template(SWEEP).to_dict()
    v = schemas.strict_validator(
        schemas.schema_path(ARGO_SCHEMA), "io.argoproj.workflow.v1alpha1.WorkflowTemplate"
    )
    assert schemas.errors(v, doc) == []
    dag = {t["name"]: t for t in doc["spec"]["templates"][0]["dag"]["tasks"]}
    assert dag["train"]["withItems"] == [{"overrides": o} for o in GRID]
    assert {"name": "overrides", "value": "{{item.overrides}}"} in dag["train"]["arguments"][
        "parameters"
    ]
    assert {
        "name": "run-ids",
        "value": "{{tasks.train.outputs.parameters.run-id}}",
    } in dag["select-best"]["arguments"]["parameters"]
    assert dag["select-best"]["depends"] == "clone && train"
    # round trip through YAML, as committed
    assert yaml.safe_load(argo.workflow_template(SWEEP).to_yaml())["spec"] == doc["spec"]


def test_the_gate_is_train_eval_deploys() -> None:
    ted = PIPELINES["train-eval-deploy"]
    for name in ("evaluate", "promote", "deploy"):
        mine, theirs = SWEEP.get(name), ted.get(name)
        assert mine.when == theirs.when and mine.task == theirs.task
        assert {k: v.replace("select-best", "train") for k, v in mine.params.items()} == {
            k: v for k, v in theirs.params.items() if k in mine.params
        }
    assert Param(name="overrides", default="") not in SWEEP.params


# ---- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_promotes_the_best_of_four_trials(ml_home: Path) -> None:
    from mlflow import MlflowClient

    from taskyard.demo import publish
    from taskyard.ml.metrics import METRICS
    from tests.cliutil import latest_run, taskyard

    url, commit = publish()
    proc = taskyard(
        "run", "sweep", "--max-parallel", "4",
        "-p", f"repo-url={url}", "-p", f"revision={commit}", "-p", "allow-file-url=true",
        "-p", "keep-serving=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = latest_run()
    assert {t.name: t.state for t in run.tasks.values()} == {
        "clone": SUCCEEDED, "test": SUCCEEDED, "train": SUCCEEDED,
        **{f"train[{i}]": SUCCEEDED for i in range(4)},
        "select-best": SUCCEEDED, "evaluate": SUCCEEDED, "promote": SUCCEEDED,
        "deploy": SUCCEEDED, "report": SUCCEEDED,
    }  # fmt: skip
    ids = json.loads(run.tasks["train"].results["run-id"])
    assert len(set(ids)) == 4
    client = MlflowClient()
    trials = [client.get_run(i) for i in ids]
    assert [t.data.params["n_estimators"] + "," + t.data.params["max_depth"] for t in trials] == [
        g.replace("n_estimators=", "").replace("max_depth=", "") for g in GRID
    ]
    sweep_run = run.results["sweep-run-id"]
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {sweep_run}
    metric = run.results["metric-name"]
    scores = [t.data.metrics[metric] for t in trials]
    pick = max if METRICS[metric].greater_is_better else min
    best = ids[scores.index(pick(scores))]
    assert run.results["best-run-id"] == best
    assert run.tasks["evaluate"].results["promote"] == "true"
    version = client.get_model_version_by_alias("wine-classifier", "champion")
    assert version.run_id == best and str(version.version) == run.results["model-version"]
    assert "train[3]" in proc.stdout  # the run table shows the trials


# ---- `taskyard run FILE.yaml`: Tekton matrix and Argo withItems, as the engines run them -----
IMG = "ghcr.io/taskyard/steps:0.1.0"  # a catalog image name: the subprocess backend takes it


def _tekton_task(name: str, script: str, params: list[dict], args: list[str]) -> dict:
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {
            "params": params,
            "results": [{"name": "out"}],
            "steps": [
                {
                    "name": "main",
                    "image": IMG,
                    "command": ["sh", "-c", script, "sh"],
                    "args": args,
                    "env": [{"name": "R", "value": "$(results.out.path)"}],
                }
            ],
        },
    }


def test_a_tekton_matrix_runs_as_tekton_runs_it(tmp_path: Path) -> None:
    from taskyard.engines import run_file
    from taskyard.run.store import RunStore

    echo = _tekton_task("echo", 'printf %s "$1-$2" > "$R"', [{"name": "v"}, {"name": "w"}],
                        ["$(params.v)", "$(params.w)"])  # fmt: skip
    array = [{"name": "items", "type": "array"}]
    collect = _tekton_task("collect", 'printf "%s," "$@" > "$R"', array, ["$(params.items[*])"])
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "fan"},
        "spec": {
            "tasks": [
                {
                    "name": "a",
                    "taskRef": {"name": "echo"},
                    "matrix": {
                        "params": [
                            {"name": "v", "value": ["x", "y"]},
                            {"name": "w", "value": ["1", "2"]},
                        ]
                    },
                },
                {
                    "name": "b",
                    "taskRef": {"name": "collect"},
                    "params": [{"name": "items", "value": "$(tasks.a.results.out[*])"}],
                },
            ],
            "results": [{"name": "all", "value": "$(tasks.b.results.out)"}],
        },
    }
    path = tmp_path / "fan.yaml"
    path.write_text(yaml.safe_dump_all([echo, collect, pipeline], sort_keys=False))
    rec = run_file(path, {}, {}, store=RunStore(tmp_path / "runs"))
    assert rec.status == SUCCEEDED, {n: t.reason for n, t in rec.tasks.items()}
    assert [rec.tasks[f"a[{i}]"].results["out"] for i in range(4)] == ["x-1", "x-2", "y-1", "y-2"]
    assert rec.results == {"all": "x-1,x-2,y-1,y-2,"}  # one arg per item ([*])
    # a failing combination fails the task once all are done, and its consumer never runs
    echo["spec"]["steps"][0]["command"][2] = '[ "$2" = 2 ] && exit 3; printf %s "$1" > "$R"'
    path.write_text(yaml.safe_dump_all([echo, collect, pipeline], sort_keys=False))
    rec = run_file(path, {}, {}, store=RunStore(tmp_path / "runs"))
    assert rec.status == FAILED
    assert rec.tasks["a"].state == FAILED and rec.tasks["a"].reason.startswith("trial a[1]")
    assert rec.tasks["b"].state == SKIPPED


def test_argo_with_items_runs_as_argo_runs_it(tmp_path: Path) -> None:
    from taskyard.engines import run_file
    from taskyard.run.store import RunStore

    def container(name: str, script: str, inputs: list[str]) -> dict:
        return {
            "name": name,
            "inputs": {"parameters": [{"name": i} for i in inputs]},
            "outputs": {"parameters": [{"name": "out", "valueFrom": {"path": "/tmp/out/v"}}]},
            "container": {"image": IMG, "command": ["sh", "-c", script]},
        }

    wt = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "fan"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {
                                "name": "a",
                                "template": "echo",
                                "withItems": [{"v": "x"}, {"v": "y"}, {"v": "z"}],
                                "arguments": {"parameters": [{"name": "v", "value": "{{item.v}}"}]},
                            },
                            {
                                "name": "b",
                                "template": "show",
                                "depends": "a",
                                "arguments": {
                                    "parameters": [
                                        {
                                            "name": "all",
                                            "value": "{{tasks.a.outputs.parameters.out}}",
                                        }
                                    ]
                                },
                            },
                        ]
                    },
                },
                container(
                    "echo",
                    'mkdir -p /tmp/out; printf %s "{{inputs.parameters.v}}!" > /tmp/out/v',
                    ["v"],
                ),
                container(
                    "show",
                    "mkdir -p /tmp/out; printf %s '{{inputs.parameters.all}}' > /tmp/out/v",
                    ["all"],
                ),
            ],
        },
    }
    path = tmp_path / "fan.yaml"
    path.write_text(yaml.safe_dump(wt, sort_keys=False))
    rec = run_file(path, {}, {}, store=RunStore(tmp_path / "runs"))
    assert rec.status == SUCCEEDED, {n: t.reason for n, t in rec.tasks.items()}
    # Go's compact JSON list of the items' values, in item order (aggregatedJSONValueList)
    assert rec.tasks["a"].results == {"out": '["x!","y!","z!"]'}
    assert rec.tasks["b"].results == {"out": '["x!","y!","z!"]'}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["argo", "tekton"])
def test_the_rendered_sweep_runs_as_rendered(engine: str, ml_home: Path, tmp_path: Path) -> None:
    """The fresh Tekton PipelineRun / Argo WorkflowTemplate of ``sweep``, run as the engine
    runs it (the subprocess backend), fans train out and promotes select-best's winner."""
    import os

    from taskyard.demo import publish
    from taskyard.render import emit
    from tests.cliutil import latest_run, taskyard

    emit.write(tmp_path / "r")
    r = tmp_path / "r"
    if engine == "argo":
        target = [str(r / "hera/sweep.yaml")]
    else:
        folder = r / "pipelines/sweep/0.1"
        target = [str(folder / "samples/sweep-run.yaml"), "-f", str(folder / "sweep.yaml"),
                  "-f", str(r / "tasks")]  # fmt: skip
    url, _ = publish(root=tmp_path / "remote")
    # the home's store: the PipelineRun sample names the catalog's cluster server
    uri = os.environ["MLFLOW_TRACKING_URI"]
    proc = taskyard("run", *target, "-p", f"repo-url={url}", "-p", "allow-file-url=true",
                    "-p", "keep-serving=false", "-p", f"mlflow-tracking-uri={uri}")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = latest_run()
    assert [run.tasks[f"train[{i}]"].state for i in range(4)] == [SUCCEEDED] * 4
    ids = json.loads(run.tasks["train"].results["run-id"])
    assert run.results["best-run-id"] in ids and run.results["promoted"] == "true"
