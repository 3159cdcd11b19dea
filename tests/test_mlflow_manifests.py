"""MLflow tracking-server manifests (render/mlflow_manifests.py): strict kubernetes-validate,
the server flags, secrets only as files, and the rollout strategy of each setup."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from taskyard.render import emit
from taskyard.render import mlflow_manifests as mm

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
FILES = mm.files()


def _docs(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(FILES[rel]) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ctr,) = _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return ctr


def test_files_are_the_two_setups_with_the_header() -> None:
    assert set(FILES) == {mm.SMALL_PATH, mm.PRODUCTION_PATH}
    for text in FILES.values():
        assert text.startswith(emit.HEADER)
    assert {d["kind"] for d in _docs(mm.SMALL_PATH)} == {
        "ServiceAccount",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    assert {d["kind"] for d in _docs(mm.PRODUCTION_PATH)} == {
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }


@pytest.mark.parametrize("rel", [mm.SMALL_PATH, mm.PRODUCTION_PATH])
def test_every_object_passes_kubernetes_validate_strict(rel: str) -> None:
    for doc in _docs(rel):
        kv.validate(doc, kv.latest_version(), strict=True)


def test_a_planted_typo_fails_validation() -> None:
    doc = copy.deepcopy(_kind(_docs(mm.SMALL_PATH), "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


@pytest.mark.parametrize("rel", [mm.SMALL_PATH, mm.PRODUCTION_PATH])
def test_server_args_serve_artifacts_and_accept_the_service_names(rel: str) -> None:
    docs = _docs(rel)
    args = _container(docs)["args"]
    assert args[0] == "server" and "--serve-artifacts" in args
    assert args[args.index("--port") + 1] == str(mm.PORT)
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow", "mlflow:5000", "mlflow.*.svc.cluster.local:5000"} <= set(hosts)
    assert "*" not in hosts
    svc = _kind(docs, "Service")
    assert svc["metadata"]["name"] == "mlflow" and svc["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in svc["spec"]["ports"]] == [mm.PORT]


def test_small_is_one_sqlite_writer_with_recreate() -> None:
    docs = _docs(mm.SMALL_PATH)
    dep = _kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    args = _container(docs)["args"]
    assert args[args.index("--backend-store-uri") + 1] == "sqlite:////data/mlflow.db"
    assert args[args.index("--workers") + 1] == "1"
    assert _kind(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_production_reads_no_secret_through_env() -> None:
    docs = _docs(mm.PRODUCTION_PATH)
    text = FILES[mm.PRODUCTION_PATH]
    assert "secretKeyRef" not in text and "envFrom" not in text
    ctr = _container(docs)
    assert all("valueFrom" not in e for e in ctr["env"])
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"].startswith(mm.S3_DIR + "/")
    assert "MLFLOW_S3_ENDPOINT_URL" in env
    secrets = {
        v["secret"]["secretName"]
        for v in _kind(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert secrets == {mm.DB_SECRET, mm.S3_SECRET}
    args = ctr["args"]
    assert "--backend-store-uri" not in args  # read from the Secret file by the wrapper
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://")


def test_production_rolls_with_two_replicas_and_a_pdb() -> None:
    docs = _docs(mm.PRODUCTION_PATH)
    dep = _kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = _kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def test_default_image_is_the_venv_mlflow_version_by_tag() -> None:
    for rel in FILES:
        assert _container(_docs(rel))["image"] == f"ghcr.io/mlflow/mlflow:v{mm.mlflow_version()}"
