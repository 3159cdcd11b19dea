"""Cluster deploy targets (kube/, steps/_cluster_deploy.py, render/serving.py).

No Kubernetes API server can run here, so the rollout logic is tested in its pure parts: the
desired objects (validated strictly: core kinds with kubernetes-validate, the InferenceService
against KServe v0.20's published CRD schema), the plans, canary weights, "is it rolled out"
read from object status, and the rollback plan — on status shapes taken from the Kubernetes
docs (concepts/workloads/controllers/deployment, "Deployment status") and KServe's canary docs
(`kubectl get isvc -o yaml` during a 10% canary). The step itself runs for real up to the API
call (a real MLflow registry, the official client against an unreachable server).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.kube import manifests as m
from taskyard.kube import records, rollout
from taskyard.render import emit, mlflow_manifests, namespace, serving
from taskyard.steps._results import env_name
from tests import mlflowutil
from tests.schemas import errors, schema_path, strict_validator

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
FILES = serving.files()
KSERVE = "kserve-v0.20/InferenceService.v1beta1.json"
MODEL = "demo-model"


def _docs(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(FILES[rel]) if d]


def _isvc_validator():
    return strict_validator(schema_path(KSERVE))


def spec(**kw: Any) -> m.Serving:
    return m.Serving(**{"model": "My_Model", "version": "2", **kw})


# ---- the rendered samples -----------------------------------------------------------------------


def test_samples_cover_each_target_and_mode_with_the_header() -> None:
    assert set(FILES) == {
        "deploy/serving/kubernetes/model-server.yaml",
        "deploy/serving/kubernetes/canary/model-server-canary.yaml",
        "deploy/serving/kserve/standard/inferenceservice.yaml",
        "deploy/serving/kserve/standard-canary/inferenceservice.yaml",
        "deploy/serving/kserve/knative/inferenceservice.yaml",
        "deploy/serving/kserve/knative-canary/inferenceservice.yaml",
    }
    assert all(text.startswith(emit.HEADER) for text in FILES.values())
    assert set(FILES) <= set(emit.rendered(["serving"]))


@pytest.mark.parametrize("rel", sorted(FILES))
def test_every_sample_validates_strictly(rel: str) -> None:
    for doc in _docs(rel):
        if doc["kind"] == "InferenceService":
            assert errors(_isvc_validator(), doc) == []
        else:
            kv.validate(doc, kv.latest_version(), strict=True)


def test_a_planted_typo_fails_each_validation() -> None:
    (isvc,) = _docs("deploy/serving/kserve/knative-canary/inferenceservice.yaml")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPrecent"] = bad["spec"]["predictor"].pop(
        "canaryTrafficPercent"
    )
    assert any("canaryTrafficPrecent" in e for e in errors(_isvc_validator(), bad))
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    assert errors(_isvc_validator(), bad)
    dep = next(
        d
        for d in _docs(serving.ROOT + "/kubernetes/model-server.yaml")
        if d["kind"] == "Deployment"
    )
    dep = copy.deepcopy(dep)
    dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = {"typo": 1}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, kv.latest_version(), strict=True)


def test_samples_are_what_the_step_applies() -> None:
    s = m.Serving(model=serving.MODEL, version="1", target="kubernetes", replicas=2)
    assert _docs("deploy/serving/kubernetes/model-server.yaml") == m.objects(s)
    actions, _ = rollout.plan(s, {}, 0)
    applied = [a.obj for a in actions if a.kind == "apply"]
    assert applied == m.objects(s)


def test_ports_match_the_namespace_policy_and_the_mlflow_server() -> None:
    s = spec()
    (ctr,) = m.deployment(s)["spec"]["template"]["spec"]["containers"]
    assert ctr["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert namespace.NamespaceOptions().model_server_port == m.PORT == 8080
    assert s.tracking_uri.endswith(f":{mlflow_manifests.PORT}")
    assert m.service(s)["spec"]["ports"][0]["targetPort"] == "http"
    for probe in (ctr["readinessProbe"], ctr["livenessProbe"]):
        assert probe["httpGet"]["port"] == m.PORT
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/health"


def test_the_model_server_runs_restricted_without_a_token() -> None:
    pod = m.deployment(spec())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sec = pod["containers"][0]["securityContext"]
    assert sec["runAsNonRoot"] and sec["readOnlyRootFilesystem"]
    assert sec["capabilities"] == {"drop": ["ALL"]} and sec["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_names_and_validation_are_one_line_each() -> None:
    assert m.app_name("My_Model.v2") == "my-model-v2"
    assert m.app_name("42-model") == "m-42-model"
    with pytest.raises(ValueError, match="no usable Kubernetes name"):
        m.app_name("___")
    with pytest.raises(ValueError, match="namespace 'Bad_NS' is not a DNS-1123 label"):
        spec(namespace="Bad_NS")
    with pytest.raises(ValueError, match="deployment-mode must be one of"):
        spec(target="kserve", mode="Serverless")
    with pytest.raises(ValueError, match="has no artifact location"):
        spec(model_source="storage")


@pytest.mark.parametrize(
    ("replicas", "percent", "want"),
    [
        (2, 0, (2, 0, 0.0)),
        (2, 10, (2, 1, 33.3)),  # the least a canary can be with 2 stable pods
        (9, 10, (9, 1, 10.0)),
        (4, 50, (4, 4, 50.0)),
        (3, 25, (3, 1, 25.0)),
        (1, 100, (0, 1, 100.0)),
    ],
)
def test_canary_split_by_pod_count(replicas: int, percent: int, want: tuple) -> None:
    assert m.canary_split(replicas, percent) == want


# ---- "is it rolled out" from object status -----------------------------------------------------


def deployment_status(**status: Any) -> dict[str, Any]:
    obj = m.deployment(spec(replicas=3))
    obj["metadata"]["generation"] = status.pop("generation", 2)
    obj["status"] = {"observedGeneration": 2, **status}
    return obj


def test_deployment_progress_follows_kubectl_rollout_status() -> None:
    # The shapes of the Kubernetes docs' "Deployment status" section.
    stale = deployment_status(generation=3, replicas=3, updatedReplicas=3, availableReplicas=3)
    assert not rollout.deployment_progress(stale).done
    rolling = deployment_status(replicas=4, updatedReplicas=1, availableReplicas=3)
    assert "1 of 3 updated" in rollout.deployment_progress(rolling).message
    old_left = deployment_status(replicas=4, updatedReplicas=3, availableReplicas=3)
    assert "old replicas pending termination" in rollout.deployment_progress(old_left).message
    unavailable = deployment_status(replicas=3, updatedReplicas=3, availableReplicas=2)
    assert not rollout.deployment_progress(unavailable).done
    done = deployment_status(
        replicas=3,
        updatedReplicas=3,
        availableReplicas=3,
        conditions=[
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    )
    assert rollout.deployment_progress(done).done
    failed = deployment_status(
        replicas=3,
        updatedReplicas=1,
        availableReplicas=2,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "my-model-7d4b" has timed out progressing.',
            }
        ],
    )
    state = rollout.deployment_progress(failed)
    assert not state.done and "exceeded its progress deadline" in state.failed


def isvc_status(**status: Any) -> dict[str, Any]:
    s = spec(target="kserve", mode="Knative")
    obj = m.inference_service(s.at("1"), canary=s, canary_percent=10)
    obj["metadata"]["generation"] = 2
    obj["status"] = {"observedGeneration": 2, **status}
    return obj


READY = [
    {"type": "IngressReady", "status": "True"},
    {"type": "PredictorReady", "status": "True"},
    {"type": "Ready", "status": "True"},
]
CANARY_TRAFFIC = {
    "latestCreatedRevision": "my-model-predictor-00002",
    "latestReadyRevision": "my-model-predictor-00002",
    "latestRolledoutRevision": "my-model-predictor-00001",
    "previousRolledoutRevision": "my-model-predictor-00001",
    "traffic": [
        {
            "latestRevision": True,
            "percent": 10,
            "revisionName": "my-model-predictor-00002",
            "tag": "latest",
            "url": "http://latest-my-model-predictor.taskyard.example.com",
        },
        {
            "latestRevision": False,
            "percent": 90,
            "revisionName": "my-model-predictor-00001",
            "tag": "prev",
            "url": "http://prev-my-model-predictor.taskyard.example.com",
        },
    ],
}


def test_knative_canary_is_done_when_the_new_revision_has_its_share() -> None:
    pending = copy.deepcopy(CANARY_TRAFFIC)
    pending["latestReadyRevision"] = "my-model-predictor-00001"
    obj = isvc_status(conditions=READY, components={"predictor": pending})
    assert not rollout.isvc_progress(obj, 10).done
    obj = isvc_status(
        conditions=READY,
        components={"predictor": CANARY_TRAFFIC},
        address={"url": "http://my-model.taskyard.svc.cluster.local"},
    )
    assert rollout.isvc_progress(obj, 10).done
    assert rollout.isvc_url(obj, canary=True).startswith("http://latest-")
    assert rollout.isvc_url(obj) == "http://my-model.taskyard.svc.cluster.local"
    assert not rollout.isvc_progress(obj, 20).done
    not_ready = isvc_status(
        conditions=[{"type": "Ready", "status": "False", "reason": "RevisionMissing"}]
    )
    assert "RevisionMissing" in rollout.isvc_progress(not_ready).message


def test_a_model_that_failed_to_load_fails_the_wait_at_once() -> None:
    obj = isvc_status(
        conditions=[{"type": "Ready", "status": "False"}],
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no such version"},
        },
    )
    assert rollout.isvc_progress(obj).failed.endswith("ModelLoadFailed: no such version")


def test_standard_canary_waits_for_its_canary_status() -> None:
    s = spec(target="kserve", model_source="storage", artifact_location="s3://b/2")
    obj = m.inference_service(s.at("1", "s3://b/1"), canary=s, canary_percent=10)
    obj["metadata"]["generation"] = 1
    name = m.track_name("2")
    obj["status"] = {
        "observedGeneration": 1,
        "conditions": READY,
        "canaryStatuses": [{"name": name, "ready": False, "trafficPercent": 10}],
    }
    assert not rollout.isvc_progress(obj, 10, name).done
    obj["status"]["canaryStatuses"][0]["ready"] = True
    assert rollout.isvc_progress(obj, 10, name).done


# ---- plans and rollback --------------------------------------------------------------------------


def live_of(objs: list[dict[str, Any]]) -> dict:
    out = {}
    for o in objs:
        o = copy.deepcopy(o)
        o["metadata"].update(resourceVersion="7", uid="u", generation=1, managedFields=[{}])
        o["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "3"
        o["status"] = {"observedGeneration": 1}
        out[rollout.key(o)] = o
    return out


def steps(actions: list[rollout.Action]) -> list[str]:
    return [a.describe() for a in actions]


def test_first_kubernetes_deploy_goes_straight_to_100_percent() -> None:
    s = spec(version="1", replicas=2)
    actions, notes = rollout.plan(s, {}, 10)
    assert notes == ["nothing serves yet: no canary, straight to 100%"]
    assert steps(actions) == [
        "apply Service/my-model",
        "apply Deployment/my-model",
        "wait Deployment/my-model",
        "smoke http://my-model.taskyard.svc.cluster.local",
    ]


def test_kubernetes_canary_then_promotion_then_the_canary_goes() -> None:
    old = spec(version="1", replicas=2)
    live = live_of([m.service(old), m.deployment(old)])
    new = old.at("2")
    actions, notes = rollout.plan(new, live, 10)
    assert "1 pod(s) beside 2 stable = 33.3% of traffic (asked 10%" in notes[0]
    assert steps(actions) == [
        "apply Service/my-model",
        "apply Deployment/my-model-canary",
        "apply Service/my-model-canary",
        "wait Deployment/my-model-canary",
        "smoke http://my-model-canary.taskyard.svc.cluster.local (canary)",
        "apply Deployment/my-model (promote)",
        "wait Deployment/my-model",
        "smoke http://my-model.taskyard.svc.cluster.local",
        "delete Deployment/my-model-canary",
        "delete Service/my-model-canary",
    ]
    canary = actions[1].obj
    assert canary["spec"]["replicas"] == 1
    assert canary["metadata"]["annotations"][m.VERSION_ANNOTATION] == "2"
    # The main Service selects both tracks, the canary Service only the canary.
    assert m.TRACK_LABEL not in actions[0].obj["spec"]["selector"]
    assert actions[2].obj["spec"]["selector"][m.TRACK_LABEL] == m.CANARY


def test_a_canary_left_by_a_killed_run_is_removed_by_the_next_plain_rollout() -> None:
    old = spec(version="1")
    live = live_of([m.service(old), m.deployment(old), m.deployment(old.at("9"), m.CANARY)])
    actions, _ = rollout.plan(old.at("2"), live, 0)
    assert steps(actions)[-1] == "delete Deployment/my-model-canary"


def test_rollback_restores_previous_manifests_and_deletes_what_was_created() -> None:
    old = spec(version="1", replicas=2)
    live = live_of([m.service(old), m.deployment(old)])
    actions, _ = rollout.plan(old.at("2"), live, 10)
    touched = [a.obj for a in actions[:6] if a.kind in ("apply", "delete")]  # failed at promote
    undo = rollout.rollback_plan(touched, live)
    assert steps(undo) == [
        "apply Deployment/my-model (previous manifest)",
        "wait Deployment/my-model (previous version serving)",
        "apply Service/my-model (previous manifest)",
        "delete Deployment/my-model-canary (created by the failed rollout)",
        "delete Service/my-model-canary (created by the failed rollout)",
    ]
    restored = undo[0].obj
    assert restored["metadata"]["annotations"][m.VERSION_ANNOTATION] == "1"
    assert "status" not in restored
    assert not {"resourceVersion", "uid", "generation", "managedFields"} & set(restored["metadata"])
    assert "deployment.kubernetes.io/revision" not in restored["metadata"]["annotations"]


def test_kserve_plans() -> None:
    old = spec(version="1", target="kserve", mode="Knative")
    live = live_of([m.inference_service(old)])
    actions, _ = rollout.plan(old.at("2"), live, 25)
    assert [a.kind for a in actions] == ["apply", "wait", "smoke", "apply", "wait", "smoke"]
    split, full = actions[0].obj, actions[3].obj
    assert split["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert split["metadata"]["annotations"][m.VERSION_ANNOTATION] == "1"
    assert split["metadata"]["annotations"][m.CANARY_ANNOTATION] == "2"
    assert "canaryTrafficPercent" not in full["spec"]["predictor"]
    assert "models:/My_Model/2" in full["spec"]["predictor"]["containers"][0]["args"]
    assert actions[1].canary_percent == 25
    standard = spec(version="1", target="kserve")
    with pytest.raises(ValueError, match="needs model-source=storage"):
        rollout.plan(standard.at("2"), live_of([m.inference_service(standard)]), 25)
    stored = spec(
        version="1", target="kserve", model_source="storage", artifact_location="s3://b/1"
    )
    actions, _ = rollout.plan(
        stored.at("2", "s3://b/2"), live_of([m.inference_service(stored)]), 25
    )
    split = actions[0].obj["spec"]
    assert split["canary"][0]["trafficPercent"] == 25
    assert split["canary"][0]["predictor"]["name"] == "canary-v2"
    assert "name" not in split["predictor"]  # the stable Deployment keeps its name
    assert actions[2].url == "http://my-model-canary-v2-predictor.taskyard.svc.cluster.local"
    assert "canary" not in actions[3].obj["spec"]
    for obj in (actions[0].obj, actions[3].obj):
        assert errors(_isvc_validator(), obj) == []


# ---- the step, for real up to the API server -------------------------------------------------


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from taskyard.steps import promote

    mlflowutil.use_store(monkeypatch, tmp_path / "home")
    for seed in (1, 2):
        uri = mlflowutil.log_sklearn_model(seed=seed)[0]
        argv = ["--source", str(tmp_path / "ws"), "--model-uri", uri, "--model-name", MODEL]
        promote.promote(promote.build_parser().parse_args(argv))
    return os.environ["MLFLOW_TRACKING_URI"]


def deploy(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    out = tmp_path / "results"
    results = ("url", "model-version", "smoke-prediction")
    run_env = dict(os.environ, **{env_name(r): str(out / r) for r in results}, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "taskyard.steps.deploy", "--source", str(tmp_path / "ws"),
         "--model-name", MODEL, *extra],
        capture_output=True, text=True, env=run_env, timeout=120,
    )  # fmt: skip


def aliases() -> dict[str, str]:
    import mlflow

    return {k: str(v) for k, v in mlflow.MlflowClient().get_registered_model(MODEL).aliases.items()}


@pytest.mark.slow
def test_an_unreachable_api_server_fails_with_one_line_and_rolls_the_alias_back(
    registered: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    proc = deploy(
        tmp_path,
        "--target", "kubernetes",
        env={"KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "the tracking URI 'sqlite:///" in last and "no server its pods can reach" in last
    assert last.endswith("rolled 'champion' back to version 1")
    record = json.loads((tmp_path / "ws" / "artifacts" / "deploy.json").read_text())
    assert record["error"] == last.removeprefix("error: ")
    assert aliases() == {"champion": "1", "previous-champion": "1"}


def test_bad_cluster_params_are_one_line_errors(tmp_path: Path) -> None:
    proc = deploy(tmp_path, "--target", "openshift")
    assert proc.returncode == 2
    assert "argument --target: invalid choice: 'openshift'" in proc.stderr


def test_deployments_lists_what_the_registry_records(registered: str, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    s = m.Serving(model=MODEL, version="2", namespace="ml-prod")
    records.record_tag(client, s, m.service_url(s))
    assert records.recorded(client, MODEL) == [
        {
            "model": MODEL,
            "version": "2",
            "target": "kubernetes",
            "namespace": "ml-prod",
            "mode": "",
            "url": "http://demo-model.ml-prod.svc.cluster.local",
            "at": records.recorded(client, MODEL)[0]["at"],
        }
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "taskyard.cli", "deployments"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.split()[:1] == [MODEL])
    for word in ("2", "kubernetes", "recorded", "http://demo-model.ml-prod.svc.cluster.local"):
        assert word in row.split()
    assert "ml-prod" in row
