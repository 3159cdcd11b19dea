"""The MLflow tracking server on the cluster (issue 13): pure functions, options -> manifests.

Two setups, each one file of plain Kubernetes objects (no namespace: ``kubectl apply -n NS``):

* ``small``: SQLite and artifacts on one PersistentVolumeClaim. SQLite has a single writer, so
  one replica, one worker and ``strategy: Recreate`` (a RollingUpdate would run two servers on
  the same database file for a moment, and a ReadWriteOnce volume may not even attach twice).
* ``production``: PostgreSQL backend and an S3-compatible artifact store, two replicas,
  RollingUpdate and a PodDisruptionBudget. ``--serve-artifacts`` proxies artifact traffic, so
  pipeline pods talk HTTP to MLflow and need no bucket credentials; only this server has them.

Secrets are read as files, never through ``env`` (checkov CKV_K8S_35). MLflow takes its backend
URI from ``--backend-store-uri`` or ``MLFLOW_BACKEND_STORE_URI``, never from a file, so a tiny
``sh -c`` wrapper reads the Secret ``mlflow-db`` key ``uri`` (a whole SQLAlchemy URL,
``postgresql://USER:PASSWORD@HOST:5432/DB``, password URL-encoded by whoever writes the Secret)
into that variable of the server process only: it is not in the pod spec, not in argv (which
``ps`` shows to every process in the pod) and not in the image. boto3 reads the Secret
``mlflow-s3`` (an AWS ``credentials`` file, profile ``default``) through
``AWS_SHARED_CREDENTIALS_FILE``, a documented boto3 variable, so no key is ever an env value.

``--allowed-hosts`` (MLflow 3.x: Host-header allowlist against DNS rebinding; it *replaces* the
default of localhost + private IPs, matches ``host[:port]`` exactly or as an fnmatch pattern,
and ``/health`` is exempt so kubelet probes pass) lists the Service's in-cluster DNS names with
and without the port, plus localhost for ``kubectl port-forward``.

Image: the official ``ghcr.io/mlflow/mlflow`` image is pinned by tag to the MLflow version this
package is tested with; the operator must pin it by digest (``image@sha256:…``), checkov's
CKV_K8S_43 is skipped per object with that reason. The official image is ``pip install
mlflow`` without extras: psycopg2 is *not* in it (mlflow/mlflow#9513, open) and whether boto3
is depends on the release (mlflow/mlflow#8342) — unverified here, so for production the image
is a parameter and must be one with ``mlflow``, ``psycopg2-binary`` and ``boto3`` installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from taskyard.kube.manifests import container_security, pod_security
from taskyard.render import yamlfmt

NAME = "mlflow"
PORT = 5000
UID = 65532
SMALL_PATH = "deploy/mlflow/small/mlflow.yaml"
PRODUCTION_PATH = "deploy/mlflow/production/mlflow.yaml"
DB_SECRET = "mlflow-db"
S3_SECRET = "mlflow-s3"
DB_DIR = "/etc/mlflow/db"
S3_DIR = "/etc/mlflow/s3"
DIGEST_SKIP = (
    "CKV_K8S_43=pinned by tag to the tested MLflow version; the operator pins the digest "
    "(image@sha256:...) of the image they mirrored"
)


def mlflow_version() -> str:
    return metadata.version("mlflow")


def default_image() -> str:
    return f"ghcr.io/mlflow/mlflow:v{mlflow_version()}"


@dataclass(frozen=True)
class Small:
    image: str = field(default_factory=default_image)
    storage: str = "10Gi"
    storage_class: str | None = None
    cpu: str = "250m"
    memory: str = "1Gi"
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True)
class Production:
    # Must contain psycopg2 and boto3 (the official image lacks psycopg2, see the module doc).
    image: str = field(default_factory=default_image)
    bucket: str = "mlflow"
    prefix: str = "artifacts"
    s3_endpoint: str = "https://s3.example.com"
    replicas: int = 2
    workers: int = 2
    cpu: str = "500m"
    memory: str = "2Gi"
    cluster_domain: str = "cluster.local"


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "tracking-server"}


def _meta(name: str = NAME, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels()}
    if annotations:
        meta["annotations"] = annotations
    return meta


def allowed_hosts(cluster_domain: str = "cluster.local") -> str:
    hosts = [NAME, f"{NAME}.*.svc", f"{NAME}.*.svc.{cluster_domain}"]
    out = [h for host in hosts for h in (host, f"{host}:{PORT}")]
    return ",".join([*out, "localhost:*", "127.0.0.1:*"])


def server_args(backend: str | None, destination: str, workers: int, domain: str) -> list[str]:
    args = ["server"]
    if backend is not None:
        args += ["--backend-store-uri", backend]
    args += ["--artifacts-destination", destination, "--serve-artifacts"]
    args += ["--host", "0.0.0.0", "--port", str(PORT), "--workers", str(workers)]
    return [*args, "--allowed-hosts", allowed_hosts(domain)]


def service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(),
        "automountServiceAccountToken": False,
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy() -> dict[str, Any]:
    """Ingress to the server's port from pods of its own namespace only (the namespace part of
    issue 13 narrows this to pipeline pods); egress stays open: PostgreSQL and S3 are outside."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(),
        "spec": {
            "podSelector": {"matchLabels": _labels()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": PORT}]}
            ],
        },
    }


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def container(
    image: str,
    command: list[str],
    args: list[str],
    cpu: str,
    memory: str,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Migrations on first start may take a while: the startup probe covers them.
        "startupProbe": _probe(5, 60),
        "readinessProbe": _probe(10, 3),
        "livenessProbe": _probe(20, 3),
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"memory": memory},
        },
        "securityContext": container_security(UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }


def pod_spec(ctr: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(UID),
        "containers": [ctr],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}, *volumes],
    }


def deployment(replicas: int, strategy: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(annotations={"checkov.io/skip1": DIGEST_SKIP}),
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": _labels()},
            "template": {"metadata": {"labels": _labels()}, "spec": spec},
        },
    }


# ---- small: SQLite + artifacts on one volume --------------------------------------------------
def small(opts: Small | None = None) -> list[dict[str, Any]]:
    o = opts or Small()
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": o.storage}},
    }
    if o.storage_class:
        pvc_spec["storageClassName"] = o.storage_class
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(),
        "spec": pvc_spec,
    }
    args = server_args(
        "sqlite:////data/mlflow.db", "/data/artifacts", workers=1, domain=o.cluster_domain
    )
    ctr = container(
        o.image, ["mlflow"], args, o.cpu, o.memory, [], [{"name": "data", "mountPath": "/data"}]
    )
    spec = pod_spec(ctr, [{"name": "data", "persistentVolumeClaim": {"claimName": NAME}}])
    # SQLite has one writer: never two pods on the database, even during a rollout.
    return [
        service_account(),
        pvc,
        deployment(1, {"type": "Recreate"}, spec),
        service(),
        network_policy(),
    ]


# ---- production: PostgreSQL + S3-compatible store ---------------------------------------------
# The backend URI is read from the mounted Secret into the server's own environment (not argv);
# "$@" are the container args, so the server flags stay visible and testable in the manifest.
WRAPPER = f'MLFLOW_BACKEND_STORE_URI="$(cat {DB_DIR}/uri)" && export MLFLOW_BACKEND_STORE_URI '
WRAPPER += '&& exec mlflow "$@"'


def production(opts: Production | None = None) -> list[dict[str, Any]]:
    o = opts or Production()
    destination = f"s3://{o.bucket}/{o.prefix}".rstrip("/")
    args = server_args(None, destination, workers=o.workers, domain=o.cluster_domain)
    env = [
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": o.s3_endpoint},
        {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{S3_DIR}/credentials"},
        {"name": "AWS_CONFIG_FILE", "value": "/dev/null"},
    ]
    mounts = [
        {"name": "db", "mountPath": DB_DIR, "readOnly": True},
        {"name": "s3", "mountPath": S3_DIR, "readOnly": True},
    ]
    ctr = container(o.image, ["sh", "-c", WRAPPER, "sh"], args, o.cpu, o.memory, env, mounts)
    volumes = [
        {
            "name": "db",
            "secret": {
                "secretName": DB_SECRET,
                "items": [{"key": "uri", "path": "uri"}],
                "defaultMode": 0o440,
            },
        },
        {
            "name": "s3",
            "secret": {
                "secretName": S3_SECRET,
                "items": [{"key": "credentials", "path": "credentials"}],
                "defaultMode": 0o440,
            },
        },
    ]
    spec = pod_spec(ctr, volumes)
    spec["affinity"] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": _labels()},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _labels()}},
    }
    return [
        service_account(),
        deployment(o.replicas, strategy, spec),
        service(),
        pdb,
        network_policy(),
    ]


def _text(docs: list[dict[str, Any]]) -> str:
    from taskyard.render.emit import HEADER  # emit imports the engines; keep this one leaf-like

    return HEADER + "---\n".join(yamlfmt.dump(d) for d in docs)


def files() -> dict[str, str]:
    return {SMALL_PATH: _text(small()), PRODUCTION_PATH: _text(production())}
