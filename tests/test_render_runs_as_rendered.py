"""Issue 12: what a cluster would trip over in renders that pass every schema (one test group
per finding; each fails on the renders and steps before the fix).

The engine facts each test relies on are cited next to it; the end-to-end proof (running the
committed YAML) lives with the YAML executor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard import __version__
from taskyard.catalog import PIPELINES, TASKS
from taskyard.catalog._common import REGISTRY
from taskyard.render import (
    accounts,
    argo,
    argo_files,
    argo_rbac,
    docs,
    project,
    tekton,
    tekton_files,
)
from taskyard.render.values import Values
from taskyard.steps import _cli
from taskyard.steps import deploy as deploy_step
from taskyard.steps import git_clone as clone_step
from taskyard.steps import promote as promote_step
from taskyard.steps import train as train_step
from tests.gitutil import Remote, git_env

ROOT = Path(__file__).resolve().parents[1]
TEKTON = tekton_files.files()
ARGO = argo_files.files()


def tekton_doc(path: str) -> dict[str, Any]:
    return yaml.safe_load(TEKTON[path])


def pipeline_doc(name: str) -> dict[str, Any]:
    p = PIPELINES[name]
    return tekton_doc(f"pipelines/{name}/{p.version}/{name}.yaml")


def sample_doc(name: str) -> dict[str, Any]:
    p = PIPELINES[name]
    return tekton_doc(f"pipelines/{name}/{p.version}/samples/{name}-run.yaml")


def argo_doc(name: str) -> dict[str, Any]:
    return yaml.safe_load(ARGO[f"hera/{name}.yaml"])


# ---- finding 1: images are pipeline params, passed to every task ---------------------------------
# The image a task runs, by the catalog's image names (images/, catalog/tasks/*.py).
EXPECTED_IMAGE_PARAM = {
    "clone": "git-image",
    "test": "train-image",
    "detect-drift": "train-image",
    "select-best": "train-image",
    "train": "train-image",
    "evaluate": "train-image",
    "promote": "train-image",
    "deploy": "train-image",
    "report": "steps-image",
}


def _image_param(pipeline: str, task: str) -> str:
    if pipeline == "train-eval-deploy-gpu" and task == "train":
        return "train-gpu-image"
    return EXPECTED_IMAGE_PARAM[task]


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_pipeline_task_gets_its_image_from_a_pipeline_param(name: str) -> None:
    doc = pipeline_doc(name)
    params = {p["name"]: p for p in doc["spec"]["params"]}
    for t in [*doc["spec"]["tasks"], *doc["spec"].get("finally", [])]:
        want = _image_param(name, t["name"])
        bound = {p["name"]: p["value"] for p in t["params"]}
        assert bound["image"] == f"$(params.{want})", t["name"]
        image = want.removesuffix("-image")
        assert params[want]["default"] == f"{REGISTRY}/{image}:{__version__}"
        assert "@sha256:" in params[want]["description"]
    # Argo: the same params as workflow arguments, passed to each DAG task's `image` input.
    wf = argo_doc(name)
    args = {p["name"]: p.get("value") for p in wf["spec"]["arguments"]["parameters"]}
    dags = [t for t in wf["spec"]["templates"] if "dag" in t]
    for dag in dags:
        for task in dag["dag"]["tasks"]:
            want = _image_param(name, task["name"])
            given = {p["name"]: p["value"] for p in task["arguments"]["parameters"]}
            assert given["image"] == "{{workflow.parameters." + want + "}}"
            assert args[want] == f"{REGISTRY}/{want.removesuffix('-image')}:{__version__}"


def test_a_repository_render_moves_the_pipeline_image_params_to_its_registry() -> None:
    values = Values(
        repo_url="https://github.com/team/proj.git",
        image_registry="registry.example.com/ml",
        pinned=True,
    )
    spec = project.for_repository(PIPELINES["train-eval-deploy"], values)
    images = {p.name: p.default for p in spec.params if p.name.endswith("-image")}
    assert images == {
        f"{n}-image": f"registry.example.com/ml/{n}:{__version__}"
        for n in ("git", "train", "steps", "serve")  # serve: the deploy's model server image
    }


def test_a_digest_pinned_image_reaches_the_task(tmp_path: Path) -> None:
    """The local runner binds it as the engines do: the docker executor gets the pinned ref."""
    from taskyard.run import resolve_params
    from taskyard.run.executor import Layout
    from taskyard.run.resolve import Context, bind_params, invocation

    spec = PIPELINES["train-eval-deploy"]
    pinned = f"registry.example.com/ml/train:{__version__}@sha256:" + "a" * 64
    params = resolve_params(spec, {"repo-url": "file:///x", "train-image": pinned})
    ctx = Context(spec=spec, run_id="r1", params=params, records={})

    def layout(host: dict[str, Path | None], results: Path) -> Layout:
        return Layout({k: str(v or "") for k, v in host.items()}, str(results))

    for name in ("test", "train", "evaluate", "promote", "deploy", "clone"):
        pt = spec.get(name)
        # No upstream task ran here: result-fed params get a stand-in (the image needs none).
        bound = {p.name: "x" for p in pt.task.params} | bind_params(_without_results(pt), ctx)
        inv = invocation(pt, bound, {"source": tmp_path}, tmp_path / "r", tmp_path, layout)
        expected = pinned if name != "clone" else f"{REGISTRY}/git:{__version__}"
        assert inv.image == expected, name


def _without_results(pt):
    """The task with its result-fed bindings left out (no upstream task has run here)."""
    keep = {k: v for k, v in pt.params.items() if "$(tasks." not in v}
    return pt.model_copy(update={"params": keep})


# ---- finding 3: the Argo workflow ServiceAccount and the executor's RBAC -------------------------
# (apiGroup, resource, verb) the v4 executor needs: argo-workflows v4.1.2 docs/workflow-rbac.md,
# "The minimum for the executor to function ... For >= v3.4" (workflowtaskresults create, patch);
# workflow/executor/taskresult.go calls taskResultClient.Create, then .Patch (MergePatchType).
EXECUTOR_NEEDS = {
    ("argoproj.io", "workflowtaskresults", "create"),
    ("argoproj.io", "workflowtaskresults", "patch"),
}


def _rbac_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(ARGO[argo_files.RBAC]) if d]


def test_workflow_rbac_grants_what_the_executor_needs_and_no_more() -> None:
    by_kind = {d["kind"]: d for d in _rbac_docs()}
    assert set(by_kind) == {"ServiceAccount", "Secret", "Role", "RoleBinding"}
    granted = {
        (g, r, v)
        for rule in by_kind["Role"]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted == EXECUTOR_NEEDS
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": by_kind["Role"]["metadata"]["name"],
    }
    sa = by_kind["ServiceAccount"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa}]
    # The executor runs as it (workflowpod.go executorServiceAccountName), from the token
    # Secret Argo finds by name (util/secrets/secret_name.go, docs/service-account-secrets.md).
    secret = by_kind["Secret"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["name"] == f"{sa}.service-account-token"
    assert secret["metadata"]["annotations"] == {"kubernetes.io/service-account.name": sa}
    assert by_kind["ServiceAccount"]["automountServiceAccountToken"] is False  # no pod runs as it
    for name in PIPELINES:
        spec = argo_doc(name)["spec"]
        assert spec["executor"] == {"serviceAccountName": sa}
        assert sa == argo.WORKFLOW_SERVICE_ACCOUNT
        assert spec["serviceAccountName"] == accounts.DEFAULT_ACCOUNT


def test_workflow_rbac_passes_kubernetes_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    for doc in [*_rbac_docs(), *argo_rbac.objects(namespace="ml")]:
        kv.validate(doc, kv.latest_version(), strict=True)  # raises on any error


def test_the_hera_flag_still_chooses_the_service_account() -> None:
    out = subprocess.run(
        [sys.executable, "hera/ci.py", "--print", "--service-account", "ci-runner"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    spec = yaml.safe_load(out.stdout)["spec"]
    assert spec["serviceAccountName"] == "ci-runner"
    # every pod as that one account; the executor keeps its own
    assert not any("serviceAccountName" in t for t in spec["templates"])
    assert spec["executor"] == {"serviceAccountName": argo.WORKFLOW_SERVICE_ACCOUNT}


# ---- finding 5: the GPU run is schedulable with the Affinity Assistant ---------------------------
def test_gpu_placement_is_where_the_affinity_assistant_reads_it() -> None:
    # tektoncd/pipeline pkg/reconciler/pipelinerun/affinity_assistant.go: the assistant
    # StatefulSet's NodeSelector/Tolerations come from pr.Spec.TaskRunTemplate.PodTemplate
    # only; taskRunSpecs are never read there.
    spec = sample_doc("train-eval-deploy-gpu")["spec"]
    pod = spec["taskRunTemplate"]["podTemplate"]
    assert pod["nodeSelector"] == tekton.GPU_NODE_SELECTOR
    assert pod["tolerations"] == tekton.GPU_TOLERATIONS
    for run_spec in spec.get("taskRunSpecs", []):  # nothing placed per task behind its back
        assert not {"nodeSelector", "tolerations"} & set(run_spec.get("podTemplate", {}))


# ---- finding 6: PodSecurity restricted admits the Tekton steps -----------------------------------
@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_tekton_step_meets_pod_security_restricted(name: str) -> None:
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted):
    # seccompProfile.type RuntimeDefault or Localhost, runAsNonRoot, no privilege escalation,
    # capabilities dropped to ALL.
    t = TASKS[name]
    doc = tekton_doc(f"tasks/{name}/{t.version}/{name}.yaml")
    for step in doc["spec"]["steps"]:
        sc = step["securityContext"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == sc["runAsGroup"] != 0
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}


# ---- finding 8: an empty param is "not set" in every step CLI ------------------------------------
def _parse(parser, *argv: str):
    """As an engine calls a step: each flag and value a separate arg, unset values ""."""
    return _cli.parse_args(parser, list(argv))


def test_empty_booleans_take_the_step_default_not_false() -> None:
    p = clone_step.build_parser()
    args = _parse(p, "--url", "u", "--output", "o", "--ssl-verify", "", "--submodules", "")
    assert args.ssl_verify is True and args.submodules is True  # not "TLS verification off"
    assert _parse(p, "--url", "u", "--output", "o", "--delete-existing", "").delete_existing
    assert _parse(p, "--url", "u", "--output", "o", "--ssl-verify", "false").ssl_verify is False
    d = deploy_step.build_parser()
    args = _parse(d, "--source", "s", "--model-name", "m", "--promoted", "", "--keep-serving", "")
    assert args.promoted is True and args.keep_serving is True


def test_empty_typed_args_take_their_defaults() -> None:
    args = _parse(train_step.build_parser(), "--device", "")
    assert args.device == "auto"
    args = _parse(clone_step.build_parser(), "--url", "u", "--output", "o", "--depth", "")
    assert args.depth == "1"
    d = _parse(
        deploy_step.build_parser(),
        "--source", "s", "--model-name", "m", "--port", "", "--health-timeout", "",
        "--target", "",
    )  # fmt: skip
    assert (d.port, d.health_timeout, d.target) == ("0", "120.0", "local")
    assert deploy_step.port_number(d.port) == 0


def test_an_empty_value_that_means_something_is_kept() -> None:
    # evaluate's champion-version is "" when there is no champion: promote must check that.
    p = promote_step.build_parser()
    args = _parse(p, "--source", "s", "--model-uri", "u", "--model-name", "m",
                  "--expected-champion", "")  # fmt: skip
    assert args.expected_champion == ""
    assert _parse(p, "--source", "s", "--model-uri", "u", "--model-name", "m").expected_champion


def _step(module: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", f"taskyard.steps.{module}", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_empty_params_do_not_crash_the_step_clis(tmp_path: Path) -> None:
    home = {"TASKYARD_HOME": str(tmp_path / "home")}
    train = _step("train", "--source", str(tmp_path), "--device", "", env=home)
    assert train.returncode == 1 and "invalid choice" not in train.stderr, train.stderr
    deploy = _step(
        "deploy", "--source", str(tmp_path), "--model-name", "m", "--promoted", "false",
        "--port", "", "--health-timeout", "", "--keep-serving", "", env=home,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stderr
    record = json.loads((tmp_path / "artifacts" / "deploy.json").read_text())
    assert record["skipped"]


# ---- finding 4 (step side): no SQLite fallback inside a cluster pod ------------------------------
@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("train", ()),
        ("evaluate", ("--model-uri", "runs:/x/model")),
        ("promote", ("--source", ".", "--model-uri", "runs:/x/model", "--model-name", "m")),
        ("deploy", ("--source", ".", "--model-name", "m")),
    ],
)
def test_ml_steps_refuse_an_empty_tracking_uri_in_a_pod(
    module: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",  # what the kubelet sets in every container
        "MLFLOW_TRACKING_URI": "",
        "TASKYARD_HOME": str(tmp_path / "home"),
    }
    proc = _step(module, *args, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: param mlflow-tracking-uri is empty inside a Kubernetes pod")
    assert not (tmp_path / "home").exists()  # nothing happened before the check


# ---- finding 10: the report gets its own time and summarises only this run -----------------------
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_finally_has_its_own_timeout_budget(name: str) -> None:
    # tektoncd/pipeline docs/pipelineruns.md "Configuring a failure timeout": with `tasks` and
    # `finally` set, the DAG is cancelled at `tasks` and the finally tasks still run.
    spec = PIPELINES[name]
    t = sample_doc(name)["spec"]["timeouts"]
    seconds = {k: _seconds(v) for k, v in t.items()}
    assert seconds["tasks"] + seconds["finally"] <= seconds["pipeline"] == spec.timeout
    assert seconds["finally"] >= max(f.timeout or 0 for f in spec.finally_) > 0


def _seconds(text: str) -> int:
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    assert docs.duration(total) == text
    return total


def _clone(remote: Remote, ws: Path, delete: str, results: Path) -> subprocess.CompletedProcess:
    argv = ["--url", f"file://{remote.bare}", "--output", str(ws), "--allow-file", "true"]
    return subprocess.run(
        [sys.executable, "-m", "taskyard.steps.git_clone", *argv, "--delete-existing", delete],
        env=git_env(
            TASKYARD_RESULT_COMMIT=str(results / "c"), TASKYARD_RESULT_URL=str(results / "u")
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_ignores_the_records_of_an_earlier_run(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path / "project", {"README.md": "hi\n"})
    ws = tmp_path / "ws"
    old = ws / "artifacts"
    old.mkdir(parents=True)
    # A reused PVC: the last run trained and evaluated; this run will fail after the clone.
    (old / "train.json").write_text(json.dumps({"results": {"metric-value": "0.9"}}))
    (old / "evaluate.json").write_text(json.dumps({"results": {"promote": "true"}}))
    results = tmp_path / "results"
    clone = _clone(remote, ws, "true", results)
    assert clone.returncode == 0, clone.stderr
    report = _step(
        "report", "--source", str(ws), "--status", "Failed", "--pipeline", "train-eval-deploy",
        env={"TASKYARD_RESULT_SUMMARY": str(results / "summary")},
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    summary = json.loads((ws / "artifacts" / "summary.json").read_text())
    recorded = {s["task"] for s in summary["steps"] if s["recorded"]}
    assert recorded == {"git-clone"}
    assert "evaluation" not in summary and "model" not in summary


def test_clear_records_is_opt_out_with_delete_existing(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path / "project", {"README.md": "hi\n"})
    ws = tmp_path / "ws"
    (ws / "artifacts").mkdir(parents=True)
    (ws / "artifacts" / "keep.txt").write_text("mine\n")
    proc = _clone(remote, ws, "false", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    assert (ws / "artifacts" / "keep.txt").read_text() == "mine\n"


# ---- finding 11 (renders): platforms, version claims, memory limits, PVC cleanup -----------------
def test_platforms_claim_only_the_architecture_the_images_are_built_for() -> None:
    for name, t in TASKS.items():
        meta = tekton_doc(f"tasks/{name}/{t.version}/{name}.yaml")["metadata"]
        assert meta["annotations"]["tekton.dev/platforms"] == "linux/amd64", name
    for name in PIPELINES:
        assert (
            pipeline_doc(name)["metadata"]["annotations"]["tekton.dev/platforms"] == "linux/amd64"
        )


def test_min_version_is_the_release_that_has_every_field_used() -> None:
    # Task/Pipeline spec.displayName (TEP-0047, tektoncd/pipeline 3d86fa5ce) is first in v0.47.0;
    # v1 CRDs are served since v0.44.0. Claiming 0.50.0 turned away 0.47-0.49 for nothing.
    assert tekton.MIN_VERSION == "0.47.0"
    assert "displayName" in pipeline_doc("ci")["spec"]  # the field that sets the floor
    for name in PIPELINES:
        ann = argo_doc(name)["metadata"]["annotations"]
        assert ann["workflows.argoproj.io/version"] == argo.MIN_ARGO_VERSION == ">= 4.0.0"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_memory_request_has_a_limit(name: str) -> None:
    t = TASKS[name]
    (step,) = tekton_doc(f"tasks/{name}/{t.version}/{name}.yaml")["spec"]["steps"]
    res = step.get("computeResources", {})
    if "memory" in res.get("requests", {}):
        assert res["limits"]["memory"] == t.resources.memory_max
    for pipeline in PIPELINES:
        for tpl in argo_doc(pipeline)["spec"]["templates"]:
            container = tpl.get("container") or {}
            r = container.get("resources") or {}
            if "memory" in r.get("requests", {}):
                assert r["limits"]["memory"], (pipeline, tpl["name"])


def test_the_pipelinerun_readme_says_how_the_pvc_is_removed() -> None:
    for name, p in PIPELINES.items():
        readme = TEKTON[f"pipelines/{name}/{p.version}/README.md"]
        assert "deleting the PipelineRun deletes the PVC" in readme
        assert "volumeClaimTemplate" in sample_doc(name)["spec"]["workspaces"][0]
        assert argo_doc(name)["spec"]["volumeClaimGC"] == {"strategy": "OnWorkflowSuccess"}
