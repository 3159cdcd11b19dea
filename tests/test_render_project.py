"""``taskyard render --pipeline … --repo-url … --out DIR``: cluster files for a team's repository.

Rendered by the real CLI, then checked like the catalog: every document strictly against the
engines' published schemas (core kinds by kubernetes-validate, Tekton Triggers by the
structural check of test_render_triggers), tekton-lint over the Tekton files, references that
resolve; the given values in every run and trigger, and no catalog placeholder left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard import __version__
from taskyard.catalog import PIPELINES
from taskyard.catalog.pipelines._parts import GIT_PARAMS, WORKSPACES, clone_task
from taskyard.render import emit
from taskyard.spec import Param, PipelineSpec, PipelineTask, TaskSpec, Workspace, param
from tests import schemas, tekton_lint
from tests.cliutil import taskyard
from tests.tekton_check import semantic_problems

ROOT = Path(__file__).resolve().parents[1]
HERE = "tests/test_render_project.py"
REPO = "https://github.com/acme/churn-model.git"
MODEL = "churn"
MLFLOW = "http://mlflow.ml-platform.svc:5000"
REGISTRY = "registry.acme.example/ml"
NAMESPACE = "ml-ci"
# What the catalog's renders leave for a user to replace.
PLACEHOLDERS = (
    "your-org",
    "your-ml-project",
    "your-team",
    "your-project",
    "my-model",
    "git.example.com",
    "mlflow.mlflow.svc.cluster.local",
    "ghcr.io/taskyard",
    "0123456789abcdef",
)
TEKTON = {"Task", "Pipeline", "PipelineRun"}
ARGO = {"WorkflowTemplate", "CronWorkflow"}
EVENTS = {"EventSource", "Sensor"}
TRIGGERS = {"EventListener", "TriggerBinding", "TriggerTemplate"}
CORE = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
CORE |= {"ConfigMap", "CronJob", "Secret"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
LINTED = ("triggers/tekton/*.yaml", "pipelines/**/*.yaml", "tasks/**/*.yaml")

# A fork: the catalog's clone plus a step of its own, and a required param of its own.
CHECK_DATA = TaskSpec(
    name="check-data",
    display_name="Check the data",
    description="The team's own data check.",
    image="$(params.image)",
    command=("python", "-m", "churn.check"),
    args=("--dataset", "$(params.dataset)", "--root", "$(workspaces.source.path)"),
    params=(
        Param(name="dataset", description="Where the data lives."),
        Param(name="image", default="registry.acme.example/tools/check:1.0"),
    ),
    workspaces=(Workspace(name="source"),),
)
FORK = PipelineSpec(
    name="churn-check",
    display_name="Churn data check",
    description="Clone, then check the data.",
    params=(*GIT_PARAMS, Param(name="dataset")),
    workspaces=tuple(WORKSPACES),
    tasks=(
        clone_task(),
        PipelineTask(
            name="check",
            task=CHECK_DATA,
            params={"dataset": param("dataset")},
            workspaces={"source": "source"},
            run_after=("clone",),
        ),
    ),
)


def render(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return taskyard("render", *args, "--out", str(out), timeout=120)


def documents(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every written file (relative path) -> its YAML documents."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert text.startswith(emit.HEADER), path
            found[path.relative_to(out).as_posix()] = [d for d in yaml.safe_load_all(text) if d]
    return found


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    r = render(
        out,
        "--pipeline",
        "train-eval-deploy",
        "--repo-url",
        REPO,
        "--model-name",
        MODEL,
        "--mlflow-tracking-uri",
        MLFLOW,
        "--namespace",
        NAMESPACE,
        "--image-registry",
        REGISTRY,
    )
    assert r.returncode == 0, r.stderr
    assert f"rendered {len(list(p for p in out.rglob('*') if p.is_file()))} files" in r.stdout
    return out


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fork")
    r = render(out, "--pipeline", f"{HERE}:FORK", "--repo-url", REPO, "-p", "dataset=s3://d/x")
    assert r.returncode == 0, r.stderr
    return out


# ---- what is written ---------------------------------------------------------------------------
def test_the_files_of_one_pipeline_for_both_engines(team: Path) -> None:
    spec = PIPELINES["train-eval-deploy"]
    tasks = {t.task.name: t.task for t in spec.all_tasks}
    expected = {f"tasks/{n}/{t.version}/{n}.yaml" for n, t in tasks.items()}
    expected |= {
        "pipelines/train-eval-deploy/0.1/train-eval-deploy.yaml",
        "pipelines/train-eval-deploy/0.1/samples/train-eval-deploy-run.yaml",
        "argo/train-eval-deploy.yaml",
        "argo/train-eval-deploy-cron.yaml",
        "argo/rbac.yaml",
        "namespace/rbac.yaml",
    }
    expected |= {
        f"triggers/tekton/{n}.yaml"
        for n in ("rbac", "bindings", "templates", "eventlistener", "cron")
    }
    expected |= {f"triggers/argo-events/{n}.yaml" for n in ("eventsources", "sensors", "rbac")}
    assert set(documents(team)) == expected


def _kinds(out: Path) -> dict[str, set[str]]:
    return {rel: {d["kind"] for d in docs} for rel, docs in documents(out).items()}


@pytest.mark.parametrize("which", ["team", "fork"])
def test_every_document_validates_strictly(which: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(which)
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    argo = schemas.schema_path("argo-workflows-v4.1.2/schema.json")
    events = schemas.strict_validator(schemas.schema_path("argo-events-v1.9.11/schema.json"))
    checked = set()
    for rel, docs in documents(out).items():
        for doc in docs:
            kind = doc["kind"]
            if kind in TEKTON:
                v = schemas.strict_validator(
                    schemas.schema_path(f"tekton-v1.15.0/v1-openapiv3/{kind}.json")
                )
            elif kind in ARGO:
                v = schemas.strict_validator(argo, f"io.argoproj.workflow.v1alpha1.{kind}")
            elif kind in EVENTS:
                v = events
            elif kind in CORE:
                kv.validate(doc, kv.latest_version(), strict=True)  # raises on any error
                checked.add(kind)
                continue
            elif kind in TRIGGERS:
                checked.add(kind)  # test_tekton_triggers_structure
                continue
            else:
                pytest.fail(f"{rel}: no validation for kind {kind}")
            assert schemas.errors(v, doc) == [], f"{rel}: {doc['metadata']}"
            checked.add(kind)
    assert checked >= TEKTON | ARGO | EVENTS | TRIGGERS


def test_tekton_triggers_structure(team: Path) -> None:
    from tests.test_render_triggers import _check_tekton

    docs = [d for rel, ds in documents(team).items() if rel.startswith("triggers/") for d in ds]
    assert _check_tekton(docs) == []


@pytest.mark.parametrize("which", ["team", "fork"])
def test_references_resolve(which: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(which)
    docs = [d for ds in documents(out).values() for d in ds if d["kind"] in TEKTON]
    for t in (d for ds in documents(out).values() for d in ds if d["kind"] == "TriggerTemplate"):
        docs += t["spec"]["resourcetemplates"]
    assert {d["kind"] for d in docs} == TEKTON
    assert semantic_problems(docs) == []


@pytest.mark.parametrize("which", ["team", "fork"])
def test_tekton_lint_is_clean(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """No problem at all, but tekton-lint 1.1.0's known false positive: its TriggerTemplate
    check takes a pipeline's optional workspaces as required (see test_render_triggers)."""
    out: Path = request.getfixturevalue(which)
    binary = tekton_lint.require()
    config = tmp_path / "config"
    config.mkdir()
    proc = subprocess.run(
        [str(binary), "--config", str(config), "--format", "json", "--color", "false", *LINTED],
        cwd=out,
        env={**os.environ, "TL_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    problems = json.loads(proc.stdout[proc.stdout.index("[") :])
    optional = re.compile(
        r"TriggerTemplate '[^']+' references Pipeline '([^']+)', but provides no workspace "
        r"for '([^']+)'"
    )
    pipelines = {
        d["metadata"]["name"]: d
        for ds in documents(out).values()
        for d in ds
        if d["kind"] == "Pipeline"
    }

    def known_false_positive(p: dict[str, Any]) -> bool:
        m = optional.match(p["message"])
        if p["rule"] != "no-missing-workspace" or not m:
            return False
        spaces = {w["name"]: w for w in pipelines[m[1]]["spec"]["workspaces"]}
        return bool(spaces[m[2]].get("optional"))

    real = [p for p in problems if not known_false_positive(p)]
    assert real == []
    assert tekton_lint.lint(out, tmp_path) == []  # tasks and pipelines alone: nothing at all


# ---- the values ------------------------------------------------------------------------------
def _runs_and_triggers(out: Path) -> list[str]:
    """The files that say what a run gets: the run itself and everything that starts one."""
    return [
        rel
        for rel, docs in documents(out).items()
        if {d["kind"] for d in docs} & {"PipelineRun", "TriggerTemplate", "CronWorkflow", "Sensor"}
    ]


def test_the_values_are_in_every_run_and_trigger(team: Path) -> None:
    files = _runs_and_triggers(team)
    assert sorted(files) == [
        "argo/train-eval-deploy-cron.yaml",
        "pipelines/train-eval-deploy/0.1/samples/train-eval-deploy-run.yaml",
        "triggers/argo-events/sensors.yaml",
        "triggers/tekton/templates.yaml",
    ]
    for rel in files:
        text = (team / rel).read_text()
        for value in (REPO, MODEL, MLFLOW):
            assert value in text, f"{value} missing from {rel}"
    cron = (team / "triggers/tekton/cron.yaml").read_text()
    assert REPO in cron
    (source,) = [d for d in documents(team)["triggers/argo-events/eventsources.yaml"] if d["kind"]]
    repos = source["spec"]["github"]["push"]["repositories"]
    assert repos == [{"owner": "acme", "names": ["churn-model"]}]


def test_the_event_picks_only_the_revision(team: Path) -> None:
    """Pinned: whatever repository a (signed) event names, the run clones the team's."""
    docs = documents(team)
    for binding in docs["triggers/tekton/bindings.yaml"]:
        assert [p["name"] for p in binding["spec"]["params"]] == ["revision"]
    for template in docs["triggers/tekton/templates.yaml"]:
        assert [p["name"] for p in template["spec"]["params"]] == ["revision"]
        (run,) = template["spec"]["resourcetemplates"]
        params = {p["name"]: p["value"] for p in run["spec"]["params"]}
        assert params == {
            "repo-url": REPO,
            "model-name": MODEL,
            "mlflow-tracking-uri": MLFLOW,
            "revision": "$(tt.params.revision)",
        }
    (sensor,) = docs["triggers/argo-events/sensors.yaml"]
    (trigger,) = sensor["spec"]["triggers"]
    wf = trigger["template"]["argoWorkflow"]
    # (the last parameter names the Workflow after the commit: test_render_triggers)
    assert [p["src"].get("dataKey") for p in wf["parameters"]] == ["body.after", None]
    args = wf["source"]["resource"]["spec"]["arguments"]["parameters"]
    assert args[int(wf["parameters"][0]["dest"].split(".")[3])]["name"] == "revision"


def test_no_catalog_placeholder_is_left(team: Path, fork: Path) -> None:
    # The fork is rendered without --image-registry: the catalog's registry is its default.
    for out, left in ((team, PLACEHOLDERS), (fork, set(PLACEHOLDERS) - {"ghcr.io/taskyard"})):
        for path in out.rglob("*.yaml"):
            text = path.read_text()
            for placeholder in left:
                assert placeholder not in text, f"{placeholder} in {path.relative_to(out)}"
            assert not re.search(r"value: ['\"]?<[\w-]+>", text), path  # `<param>` samples


def test_images_come_from_the_given_registry(team: Path) -> None:
    images = []
    for docs in documents(team).values():
        for doc in docs:
            if doc["kind"] == "Task":
                images += [p["default"] for p in doc["spec"]["params"] if p["name"] == "image"]
            if doc["kind"] == "WorkflowTemplate":
                for t in doc["spec"]["templates"]:
                    params = (t.get("inputs") or {}).get("parameters", [])
                    images += [p["default"] for p in params if p["name"] == "image"]
    assert images and all(i.startswith(f"{REGISTRY}/") for i in images), images
    assert f"{REGISTRY}/train:{__version__}" in images


def test_the_pipeline_defaults_to_the_repository(team: Path) -> None:
    """``tkn pipeline start`` / ``argo submit --from`` need no flag for the repository."""
    docs = documents(team)
    (pipeline,) = docs["pipelines/train-eval-deploy/0.1/train-eval-deploy.yaml"]
    defaults = {p["name"]: p.get("default") for p in pipeline["spec"]["params"]}
    assert (defaults["repo-url"], defaults["model-name"]) == (REPO, MODEL)
    assert defaults["mlflow-tracking-uri"] == MLFLOW
    (template,) = docs["argo/train-eval-deploy.yaml"]
    values = {p["name"]: p.get("value") for p in template["spec"]["arguments"]["parameters"]}
    assert (values["repo-url"], values["model-name"]) == (REPO, MODEL)


def test_every_namespaced_object_is_in_the_namespace(team: Path) -> None:
    for rel, docs in documents(team).items():
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in doc["metadata"], rel
            else:
                assert doc["metadata"]["namespace"] == NAMESPACE, (rel, doc["kind"])
    rbac = documents(team)["triggers/tekton/rbac.yaml"]
    binding = next(d for d in rbac if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_a_fork_renders_its_own_task_with_its_params(fork: Path) -> None:
    docs = documents(fork)
    assert "tasks/check-data/0.1/check-data.yaml" in docs
    assert "tasks/git-clone/0.1/git-clone.yaml" in docs
    (run,) = docs["pipelines/churn-check/0.1/samples/churn-check-run.yaml"]
    params = {p["name"]: p["value"] for p in run["spec"]["params"]}
    assert params == {"repo-url": REPO, "dataset": "s3://d/x"}
    (cron,) = docs["argo/churn-check-cron.yaml"]
    args = {p["name"]: p["value"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]}
    assert args == {"repo-url": REPO, "revision": "main", "dataset": "s3://d/x"}
    (task,) = docs["tasks/check-data/0.1/check-data.yaml"]
    image = next(p for p in task["spec"]["params"] if p["name"] == "image")
    assert image["default"] == "registry.acme.example/tools/check:1.0"  # its own, kept
    for rel, ds in docs.items():
        assert all("namespace" not in d["metadata"] for d in ds), rel  # none given


def test_no_schedule_no_cron_files(tmp_path: Path) -> None:
    r = render(tmp_path, "--pipeline", "ci", "--repo-url", REPO, "--schedule", "")
    assert r.returncode == 0, r.stderr
    written = set(documents(tmp_path))
    assert "triggers/tekton/cron.yaml" not in written and "argo/ci-cron.yaml" not in written
    kinds = {d["kind"] for ds in documents(tmp_path).values() for d in ds}
    assert "CronJob" not in kinds and "CronWorkflow" not in kinds


# ---- bad command lines -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pipeline", "train-eval-deploy"], "--pipeline needs --repo-url"),
        (
            ["--pipeline", "train-eval-deploy", "--repo-url", REPO, "--model-name", MODEL],
            "pipeline 'train-eval-deploy' needs --mlflow-tracking-uri",
        ),
        (["--pipeline", "ci", "--repo-url", REPO, "--model-name", "m"], "drop --model-name"),
        (
            ["--pipeline", "ci", "--repo-url", "https://bot:s3cret@github.com/acme/x.git"],
            "--repo-url carries a password",
        ),
        (["--pipeline", "ci", "--repo-url", REPO, "--namespace", "Not_OK"], "--namespace"),
        (["--pipeline", "nope", "--repo-url", REPO], "unknown pipeline 'nope'"),
        (["--pipeline", f"{HERE}:FORK", "--repo-url", REPO], "-p dataset=VALUE"),
        (["--pipeline", f"{HERE}:FORK", "--repo-url", REPO, "-p", "x=1"], "no param 'x'"),
        (["--pipeline", "ci", "--repo-url", REPO, "--check"], "--check and --engine"),
        (["--pipeline", "ci", "--repo-url", REPO, "-p", "revision=v1"], "the event gives"),
        (["--pipeline", "ci", "--repo-url", REPO, "--schedule", "daily"], "5-field cron"),
        (["--repo-url", REPO], "--repo-url needs --pipeline"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    r = render(tmp_path / "out", *args)
    assert r.returncode == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "out").exists()
