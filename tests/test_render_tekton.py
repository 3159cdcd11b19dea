"""The rendered Tekton catalog is what a Tekton cluster accepts, and is what the spec says.

Four independent checks on the committed files: the v1 schemas in strict mode, tekton-lint,
a fresh render (drift), and a semantic check of our own (every reference resolves, no param in
a script). Each check is also shown to catch a planted mistake.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.catalog import PIPELINES, TASKS
from taskyard.render import artifacthub, docs, emit, tekton, tekton_files
from taskyard.steps._results import env_name as result_env_name
from tests import schemas, tekton_lint
from tests.tekton_check import semantic_problems

ROOT = Path(__file__).resolve().parents[1]
FILES = tekton_files.files()
YAML_FILES = sorted(p for p in FILES if p.endswith(".yaml"))
TEKTON_SCHEMAS = "tekton-v1.15.0/v1-openapiv3"


def load(rel: str) -> dict[str, Any]:
    return yaml.safe_load(FILES[rel])


def all_docs() -> list[dict[str, Any]]:
    return [load(p) for p in YAML_FILES]


def strict(kind: str):
    return schemas.strict_validator(schemas.schema_path(f"{TEKTON_SCHEMAS}/{kind}.json"))


# ---- layout -------------------------------------------------------------------------------
def test_every_task_and_pipeline_has_yaml_readme_and_sample() -> None:
    for t in TASKS.values():
        base = f"tasks/{t.name}/{t.version}"
        for rel in (f"{base}/{t.name}.yaml", f"{base}/README.md", f"{base}/samples/"):
            assert any(p.startswith(rel) for p in FILES), rel
    for p in PIPELINES.values():
        base = f"pipelines/{p.name}/{p.version}"
        for rel in (f"{base}/{p.name}.yaml", f"{base}/README.md", f"{base}/samples/"):
            assert any(x.startswith(rel) for x in FILES), rel
    assert all(FILES[p].startswith(emit.HEADER) for p in YAML_FILES)
    kinds = sorted({load(p)["kind"] for p in YAML_FILES})
    assert kinds == ["Pipeline", "PipelineRun", "Task", "TaskRun"]
    assert {load(p)["apiVersion"] for p in YAML_FILES} == {"tekton.dev/v1"}


def test_render_is_deterministic() -> None:
    assert tekton_files.files() == FILES


# ---- 1. strict schemas ------------------------------------------------------------------
@pytest.mark.parametrize("rel", YAML_FILES)
def test_validates_against_tekton_v1_schema_strictly(rel: str) -> None:
    doc = load(rel)
    assert schemas.errors(strict(doc["kind"]), doc) == []


def test_strict_mode_catches_a_planted_typo() -> None:
    doc = load("tasks/train-gpu/0.1/train-gpu.yaml")
    step = doc["spec"]["steps"][0]
    step["computeResource"] = step.pop("computeResources")  # the typo a human would make
    path = schemas.schema_path(f"{TEKTON_SCHEMAS}/Task.json")
    assert schemas.errors(schemas.plain_validator(path), doc) == []  # the published schema
    found = schemas.errors(schemas.strict_validator(path), doc)
    typo = "('computeResource' was unexpected)"
    assert found == [f"spec.steps.0: Additional properties are not allowed {typo}"]


def test_strict_mode_keeps_fields_kubernetes_leaves_open() -> None:
    """``volumeClaimTemplate`` is preserve-unknown-fields in the CRD: strict must not close it."""
    doc = load("pipelines/ci/0.1/samples/ci-run.yaml")
    doc["spec"]["workspaces"][0]["volumeClaimTemplate"]["metadata"] = {"labels": {"a": "b"}}
    assert schemas.errors(strict("PipelineRun"), doc) == []


# ---- 2. tekton-lint ---------------------------------------------------------------------
def test_tekton_lint_reports_nothing(tmp_path: Path) -> None:
    problems = tekton_lint.lint(ROOT, tmp_path)
    assert [p for p in problems if not tekton_lint.wrong_report(p)] == []


def test_tekton_lint_catches_a_planted_undefined_param(tmp_path: Path) -> None:
    tekton_lint.require()
    work = tmp_path / "repo"
    for top in ("tasks", "pipelines"):
        shutil.copytree(ROOT / top, work / top)
    task = work / "tasks/git-clone/0.1/git-clone.yaml"
    task.write_text(task.read_text().replace("$(params.depth)", "$(params.dept)"))
    problems = tekton_lint.lint(work, tmp_path)
    assert {(p["rule"], p["level"], p["path"]) for p in problems} >= {
        ("no-undefined-param", "error", "tasks/git-clone/0.1/git-clone.yaml")
    }
    assert any("'dept'" in p["message"] for p in problems)


# ---- 3. drift -----------------------------------------------------------------------------
def test_committed_files_equal_a_fresh_render(tmp_path: Path) -> None:
    emit.write(tmp_path, ["tekton"])
    fresh = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    others = set(emit.rendered()) - fresh  # kustomization.yaml, artifacthub-repo.yml
    committed = {
        p.relative_to(ROOT).as_posix()
        for top in ("tasks", "pipelines")
        for p in (ROOT / top).rglob("*")
        if p.is_file()
    }
    assert sorted(committed - fresh - others) == [], (
        "stale files: delete them, then `taskyard render`"
    )
    differ = sorted(rel for rel in fresh if (tmp_path / rel).read_text() != _read(ROOT / rel))
    assert differ == [], "committed files differ from a fresh render: run `taskyard render`"
    assert emit.drift(ROOT, ["tekton"]) == []


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


# ---- 4. semantic check --------------------------------------------------------------------
def test_every_reference_resolves_and_no_param_reaches_a_script() -> None:
    documents = all_docs()
    assert semantic_problems(documents) == []
    steps = [s for d in documents if d["kind"] == "Task" for s in d["spec"]["steps"]]
    assert steps and not any("script" in s for s in steps)


def _plant(rel: str, change) -> list[str]:
    documents = all_docs()
    doc = next(d for d, p in zip(documents, YAML_FILES, strict=True) if p == rel)
    change(doc)
    return semantic_problems(documents)


@pytest.mark.parametrize(
    ("rel", "change", "expected"),
    [
        (
            "tasks/train/0.1/train.yaml",
            lambda d: d["spec"]["steps"][0]["args"].append("$(params.epochs)"),
            "task train: steps[0].args[",
        ),
        (
            "tasks/train/0.1/train.yaml",
            lambda d: d["spec"]["steps"][0].update(script="#!/bin/sh\necho $(params.config)"),
            "task train: steps[0].script interpolates a param",
        ),
        (
            "tasks/deploy/0.1/deploy.yaml",
            lambda d: d["spec"]["steps"][0]["args"].append("$(workspaces.models.path)"),
            "$(workspaces.models.path) does not resolve",
        ),
        (
            "pipelines/train-eval-deploy/0.1/train-eval-deploy.yaml",
            lambda d: d["spec"]["tasks"][4]["when"][0].update(
                input="$(tasks.evaluate.results.promoted)"
            ),
            "$(tasks.evaluate.results.promoted) does not resolve",
        ),
        (
            "pipelines/ci/0.1/ci.yaml",
            lambda d: d["spec"]["tasks"][1]["params"].append(
                {"name": "status", "value": "$(tasks.status)"}
            ),
            "pipeline ci: task test: param status is not declared",
        ),
        (
            "pipelines/ci/0.1/samples/ci-run.yaml",
            lambda d: d["spec"].pop("params"),
            "required param repo-url is not bound",
        ),
    ],
)
def test_semantic_check_catches_a_planted_mistake(rel: str, change, expected: str) -> None:
    problems = _plant(rel, change)
    assert any(expected in p for p in problems), problems


# ---- what the issue asks of the documents themselves -------------------------------------
def _task_doc(name: str) -> dict[str, Any]:
    t = TASKS[name]
    return load(f"tasks/{name}/{t.version}/{name}.yaml")


def _pipeline_doc(name: str) -> dict[str, Any]:
    p = PIPELINES[name]
    return load(f"pipelines/{name}/{p.version}/{name}.yaml")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name: str) -> None:
    spec, doc = TASKS[name], _task_doc(name)
    meta = doc["metadata"]
    # part-of reaches the TaskRun pods (docs/labels.md): the MLflow NetworkPolicy selects it.
    assert meta["labels"] == {
        "app.kubernetes.io/version": spec.version,
        "app.kubernetes.io/part-of": "taskyard",
    }
    assert meta["annotations"] == {
        "tekton.dev/pipelines.minVersion": tekton.MIN_VERSION,
        "tekton.dev/categories": ", ".join(spec.categories),
        "tekton.dev/tags": ", ".join(spec.tags),
        "tekton.dev/displayName": spec.display_name,
        "tekton.dev/platforms": ",".join(spec.platforms),
        **artifacthub.annotations(),
    }
    (step,) = doc["spec"]["steps"]
    assert step["image"] == "$(params.image)"
    image = next(p for p in doc["spec"]["params"] if p["name"] == "image")
    assert image["default"] == spec.param("image").default
    assert step["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": tekton.NON_ROOT_UID,
        "runAsGroup": tekton.NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = {e["name"]: e["value"] for e in step["env"]}
    for r in doc["spec"].get("results", []):
        assert env[result_env_name(r["name"])] == f"$(results.{r['name']}.path)"
    # Params reach the CLI only as whole args or env values, never inside a larger string.
    for text in [*step["args"], *env.values()]:
        assert "$(params." not in text or re.fullmatch(r"\$\(params\.[\w-]+(\[\*\])?\)", text), text


def test_workspaces_source_required_credentials_optional() -> None:
    clone = {w["name"]: w for w in _task_doc("git-clone")["spec"]["workspaces"]}
    assert "optional" not in clone["output"]
    assert clone["git-credentials"]["optional"] and clone["ssh-directory"]["optional"]
    for name in ("run-tests", "train", "evaluate", "promote", "deploy", "report"):
        ws = {w["name"]: w for w in _task_doc(name)["spec"]["workspaces"]}
        assert "optional" not in ws["source"]
    for name, p in PIPELINES.items():
        sample = load(f"pipelines/{name}/{p.version}/samples/{name}-run.yaml")
        source = next(w for w in sample["spec"]["workspaces"] if w["name"] == "source")
        assert "volumeClaimTemplate" in source


def test_gpu_task_requests_a_gpu_and_its_run_goes_to_gpu_nodes() -> None:
    step = _task_doc("train-gpu")["spec"]["steps"][0]
    assert step["computeResources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": 1}
    cpu_step = _task_doc("train")["spec"]["steps"][0]
    assert "nvidia.com/gpu" not in cpu_step["computeResources"]["limits"]
    p = PIPELINES["train-eval-deploy-gpu"]
    sample = load(f"pipelines/{p.name}/{p.version}/samples/{p.name}-run.yaml")
    # The whole run on GPU nodes, through taskRunTemplate (the Affinity Assistant's source):
    # test_render_runs_as_rendered.py, finding 5.
    pod = sample["spec"]["taskRunTemplate"]["podTemplate"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    cpu = load("pipelines/train-eval-deploy/0.1/samples/train-eval-deploy-run.yaml")
    # taskRunSpecs only name accounts: no pod placement per task.
    for run in (sample, cpu):
        assert all(
            set(s) == {"pipelineTaskName", "serviceAccountName"}
            for s in run["spec"]["taskRunSpecs"]
        )
    assert "nodeSelector" not in cpu["spec"]["taskRunTemplate"]["podTemplate"]


@pytest.mark.parametrize("name", ["train-eval-deploy", "train-eval-deploy-gpu", "retrain"])
def test_promote_gate_retries_timeouts_and_finally(name: str) -> None:
    spec, doc = PIPELINES[name], _pipeline_doc(name)
    tasks = {t["name"]: t for t in doc["spec"]["tasks"]}
    gate = [{"input": "$(tasks.evaluate.results.promote)", "operator": "in", "values": ["true"]}]
    assert tasks["promote"]["when"] == gate and tasks["deploy"]["when"] == gate
    assert "when" not in tasks["train"] and "when" not in tasks["evaluate"]
    # deploy follows promote through the results it reads (the version to serve, promoted):
    # tektoncd/pipeline docs/pipelines.md, "Passing one Task's Results into the Parameters...":
    # "Tekton enforces this Task ordering"; "Guarding a Task only": resource-dependent tasks of
    # a when-skipped task are skipped "because of missing Results".
    assert "runAfter" not in tasks["deploy"]
    deploy_params = {p["name"]: p["value"] for p in tasks["deploy"]["params"]}
    assert deploy_params["model-version"] == "$(tasks.promote.results.model-version)"
    assert deploy_params["promoted"] == "$(tasks.promote.results.promoted)"
    promote_params = {p["name"]: p["value"] for p in tasks["promote"]["params"]}
    assert promote_params["expected-champion"] == "$(tasks.evaluate.results.champion-version)"
    assert tasks["clone"]["retries"] == 2 and tasks["clone"]["timeout"] == "10m"
    for t in spec.tasks:
        assert tasks[t.name].get("timeout") == (docs.duration(t.timeout) if t.timeout else None)
    (report,) = doc["spec"]["finally"]
    params = {p["name"]: p["value"] for p in report["params"]}
    assert params == {
        "status": "$(tasks.status)",
        "run-name": "$(context.pipelineRun.name)",
        "pipeline": name,
        "image": "$(params.steps-image)",
    }
    sample = load(f"pipelines/{name}/{spec.version}/samples/{name}-run.yaml")
    assert sample["spec"]["timeouts"]["pipeline"] == docs.duration(spec.timeout)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (600, "10m"), (3600, "1h"), (5400, "1h30m"), (45, "45s"), (3661, "1h1m1s")],
)
def test_duration_is_a_go_duration(seconds: int, text: str) -> None:
    assert docs.duration(seconds) == text


def test_readmes_are_generated_from_the_spec() -> None:
    for t in TASKS.values():
        text = FILES[f"tasks/{t.name}/{t.version}/README.md"]
        assert text.startswith(docs.GENERATED) and f"# {t.display_name}\n" in text
        for p in t.params:
            row = next(line for line in text.splitlines() if line.startswith(f"| `{p.name}` |"))
            assert ("required" if p.required else f"`{p.default}`" if p.default else '`""`') in row
            assert " ".join(p.description.split()) in row
        for item in (*t.results, *t.workspaces):
            assert f"| `{item.name}` | {item.description}" in text
        sample = FILES[f"tasks/{t.name}/{t.version}/samples/{t.name}-run.yaml"]
        assert sample.removeprefix(emit.HEADER) in text  # the usage block is the sample itself
    for p in PIPELINES.values():
        text = FILES[f"pipelines/{p.name}/{p.version}/README.md"]
        for t in p.all_tasks:
            assert f"| `{t.name}` | [{t.task.name}](../../../tasks/{t.task.name}/" in text
            assert f"kubectl apply -f tasks/{t.task.name}/" in text
        for x in (*p.params, *p.workspaces):
            assert f"| `{x.name}` |" in text


def test_committed_samples_carry_cluster_mlflow_uri() -> None:
    """On a cluster each task is its own pod: the samples point them at one MLflow server."""
    for name, p in PIPELINES.items():
        if "mlflow-tracking-uri" not in {x.name for x in p.params}:
            continue
        sample = load(f"pipelines/{name}/{p.version}/samples/{name}-run.yaml")
        params = {x["name"]: x["value"] for x in sample["spec"]["params"]}
        assert params["mlflow-tracking-uri"] == docs.EXAMPLE_VALUES["mlflow-tracking-uri"]


def test_renderer_does_not_mutate_or_share_state() -> None:
    t = TASKS["train-gpu"]
    a = tekton.taskrun_sample(t)
    b = copy.deepcopy(a)
    a["spec"]["podTemplate"]["tolerations"].append({"key": "x"})
    assert tekton.taskrun_sample(t) == b
