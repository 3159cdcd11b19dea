"""Desired objects of a model deployment on a cluster: pure functions, spec -> dicts.

The deploy step applies these and ``taskyard render`` writes them as samples, so what a team
reviews in git is byte for byte what the step sends (apart from the version and image).

Two targets, one server (``python -m taskyard.serving``, the serve image) in both:

* ``kubernetes``: a Deployment per track (``<app>`` stable, ``<app>-canary``) behind one
  Service ``<app>`` (port 80 -> the container's ``http`` port 8080) that selects both tracks,
  plus ``<app>-canary``, a Service selecting only the canary, so the smoke request can reach
  the new version for sure. Plain Services balance per endpoint (kube-proxy picks a backend pod
  at random), so the canary's share of traffic is its share of ready pods: the canary-percent
  is turned into replica counts (:func:`canary_split`) and the effective share is reported.
  Exact percentages need a mesh or Gateway API weights; that is the ``kserve`` target's job.
* ``kserve``: an InferenceService (``serving.kserve.io/v1beta1``) with the serve image as the
  custom predictor container ``kserve-container`` on port 8080, ``Standard`` mode (plain
  Deployment + Service) by default, ``Knative`` as an option. Canary: Knative mode uses
  ``predictor.canaryTrafficPercent`` (KServe tracks the last rolled-out revision and splits
  traffic); Standard mode uses the ``spec.canary`` list of KServe v0.20 (each entry a full
  predictor with a ``name`` and a ``trafficPercent``; kserve pkg/apis/serving/v1beta1/
  inference_service.go ``CanarySpec``). KServe's validation (inference_service_validation.go
  ``validateCanarySpecs``) refuses a Standard canary whose stable predictor has no storage
  URI; for a custom container that is the ``STORAGE_URI`` env of ``kserve-container``
  (predictor_custom.go ``GetStorageUri``), so a Standard canary needs ``model_source=storage``:
  the version's artifact location, downloaded by KServe's storage initializer to
  ``/mnt/models``. ``models:/NAME@alias`` is no storage URI KServe knows (kserve#3555), so the
  step always resolves a concrete version and its artifact location first.

The server loads ``models:/NAME/VERSION`` through the tracking server by default (MLflow with
``--serve-artifacts``: no bucket credentials in the model pods).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from taskyard import __version__

TARGETS = ("local", "kubernetes", "kserve")
CLUSTER_TARGETS = ("kubernetes", "kserve")
MODES = ("Standard", "Knative")
SOURCES = ("mlflow", "storage")
PORT = 8080  # the model server's container port; namespace NetworkPolicy opens exactly this
SERVICE_PORT = 80
UID = 65532  # the serve image's user (images/serve/Dockerfile)
KSERVE_CONTAINER = "kserve-container"  # KServe constants.InferenceServiceContainerName
STORAGE_MOUNT = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI's files
FIELD_MANAGER = "taskyard"
COMPONENT = "model-server"
TRACK_LABEL = "taskyard.dev/track"
VERSION_ANNOTATION = "taskyard.dev/model-version"
MODEL_ANNOTATION = "taskyard.dev/model-name"
SOURCE_ANNOTATION = "taskyard.dev/model-source"
CANARY_ANNOTATION = "taskyard.dev/canary-version"
STABLE, CANARY = "stable", "canary"
DIGEST_SKIP = (
    "CKV_K8S_43=the image is the deploy task's serve-image param; pin it there by digest "
    "(ghcr.io/taskyard/serve@sha256:...)"
)


def default_image() -> str:
    return f"ghcr.io/taskyard/serve:{__version__}"


@dataclass(frozen=True)
class Serving:
    """One model version to serve on a cluster; every field is a deploy task param."""

    model: str
    version: str
    namespace: str = "taskyard"
    target: str = "kubernetes"
    mode: str = "Standard"  # kserve only
    image: str = field(default_factory=default_image)
    tracking_uri: str = "http://mlflow.taskyard.svc.cluster.local:5000"
    replicas: int = 1
    model_source: str = "mlflow"
    artifact_location: str = ""  # the version's source, for model_source=storage
    cpu_request: str = "250m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    rollout_timeout: int = 600
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ValueError(problems[0])

    @property
    def app(self) -> str:
        return app_name(self.model)

    def at(self, version: str, artifact_location: str = "") -> Serving:
        return replace(self, version=version, artifact_location=artifact_location)


def validate(s: Serving) -> list[str]:
    """Every reason ``s`` cannot be rendered, as one-liners naming the param."""
    out = []
    if s.target not in CLUSTER_TARGETS:
        out.append(f"target must be one of {', '.join(CLUSTER_TARGETS)}, got {s.target!r}")
    if s.mode not in MODES:
        out.append(f"deployment-mode must be one of {', '.join(MODES)}, got {s.mode!r}")
    if s.model_source not in SOURCES:
        out.append(f"model-source must be one of {', '.join(SOURCES)}, got {s.model_source!r}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", s.namespace) or len(s.namespace) > 63:
        out.append(f"namespace {s.namespace!r} is not a DNS-1123 label")
    if not 1 <= s.replicas <= 100:
        out.append(f"replicas must be 1..100, got {s.replicas}")
    if s.rollout_timeout <= 0:
        out.append(f"rollout-timeout must be > 0 seconds, got {s.rollout_timeout}")
    if not s.tracking_uri and s.model_source == "mlflow":
        out.append("mlflow-tracking-uri is empty: the model server loads models:/ through it")
    if s.model_source == "storage" and s.version and not s.artifact_location:
        out.append(f"model-source=storage but version {s.version} has no artifact location")
    try:
        app_name(s.model)
    except ValueError as e:
        out.append(str(e))
    return out


def app_name(model: str) -> str:
    """A registered model name as a DNS-1035 label (Service names must be one)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if name and not name[0].isalpha():
        name = f"m-{name}"
    # 63 is the label limit; leave room for "-canary" and KServe's "-predictor" suffixes.
    name = name[:40].rstrip("-")
    if not name:
        raise ValueError(f"model name {model!r} gives no usable Kubernetes name")
    return name


def canary_split(replicas: int, percent: int) -> tuple[int, int, float]:
    """(stable replicas, canary replicas, effective canary share in %) for a replica-weighted
    canary. The stable track keeps all its pods (no capacity lost during the canary); the
    canary gets the pod count whose share of ready pods is nearest ``percent``, at least one."""
    if not 0 <= percent <= 100:
        raise ValueError(f"canary-percent must be 0..100, got {percent}")
    if percent == 0:
        return replicas, 0, 0.0
    if percent == 100:
        return 0, replicas, 100.0
    wanted = replicas * percent / (100 - percent)
    canary = max(1, min(round(wanted), 100))
    if canary != wanted and math.isclose(wanted % 1, 0.5):
        canary = max(1, math.floor(wanted))  # round half down: err on the side of less traffic
    return replicas, canary, round(100 * canary / (replicas + canary), 1)


# ---- pieces ---------------------------------------------------------------------------------


def container_security(uid: int) -> dict[str, Any]:
    """PodSecurity ``restricted`` for a container, plus a read-only root: the one definition
    for every long-running server we render (model servers, MLflow)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def labels(s: Serving, track: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": s.app,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "taskyard",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
    if track:
        out[TRACK_LABEL] = track
    return out


def annotations(s: Serving) -> dict[str, str]:
    return {
        MODEL_ANNOTATION: s.model,
        VERSION_ANNOTATION: s.version,
        SOURCE_ANNOTATION: model_uri(s) if s.model_source == "mlflow" else s.artifact_location,
    }


def model_uri(s: Serving) -> str:
    return f"models:/{s.model}/{s.version}"


def container(s: Serving, name: str = COMPONENT) -> dict[str, Any]:
    """The serve image's container: the same command, port and probes on every target."""
    uri = STORAGE_MOUNT if s.model_source == "storage" else model_uri(s)
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": s.tracking_uri},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        # The root filesystem is read-only: MLflow downloads the model into TMPDIR, libraries
        # write caches under HOME; both are the emptyDir at /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    if s.model_source == "storage":
        env.append({"name": "STORAGE_URI", "value": s.artifact_location})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": PORT},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "name": name,
        "image": s.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "taskyard.serving"],
        "args": ["--model-uri", uri, "--host", "0.0.0.0", "--port", str(PORT)],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # /health is 200 only once the model is loaded (readiness = "model loaded"); /live
        # answers as soon as the server listens, so a slow load is never killed as dead.
        "readinessProbe": probe("/health", 2, 3),
        "livenessProbe": probe("/live", 10, 3),
        "resources": {
            "requests": {"cpu": s.cpu_request, "memory": s.memory_request},
            "limits": {"cpu": s.cpu_limit, "memory": s.memory_limit},
        },
        "securityContext": container_security(UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_extras() -> dict[str, Any]:
    return {
        # The server never calls the API server: no token in its pods.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(UID),
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }


# ---- target kubernetes --------------------------------------------------------------------------


def deployment(s: Serving, track: str = STABLE, replicas: int | None = None) -> dict[str, Any]:
    name = s.app if track == STABLE else f"{s.app}-{CANARY}"
    selector = labels(s, track)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": s.namespace,
            "labels": labels(s, track),
            "annotations": {**annotations(s), "checkov.io/skip1": DIGEST_SKIP},
        },
        "spec": {
            "replicas": s.replicas if replicas is None else replicas,
            "revisionHistoryLimit": 5,
            # Fail the rollout (status condition Progressing=False, ProgressDeadlineExceeded)
            # when it has not progressed in this long; the step's wait reads exactly that.
            "progressDeadlineSeconds": s.rollout_timeout,
            "selector": {"matchLabels": selector},
            # A new pod must be ready before an old one goes: serving capacity never drops.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": selector, "annotations": annotations(s)},
                "spec": {**_pod_extras(), "containers": [container(s)]},
            },
        },
    }


def service(s: Serving, track: str | None = None) -> dict[str, Any]:
    """``<app>`` selects every track (the traffic split); ``<app>-canary`` only the canary."""
    name = s.app if track is None else f"{s.app}-{track}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels(s, track)},
        "spec": {
            "type": "ClusterIP",
            "selector": labels(s, track),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def service_url(s: Serving, name: str | None = None) -> str:
    return f"http://{name or s.app}.{s.namespace}.svc.{s.cluster_domain}"


# ---- target kserve ------------------------------------------------------------------------------


def predictor(s: Serving, name: str | None = None) -> dict[str, Any]:
    ctr = container(s, KSERVE_CONTAINER)
    # Knative accepts only the port names "http1" and "h2c" (or none), and KServe's own custom
    # predictor examples name none; the probes use the number.
    ctr["ports"] = [{"containerPort": PORT, "protocol": "TCP"}]
    spec: dict[str, Any] = {**_pod_extras(), "containers": [ctr]}
    if name:
        spec["name"] = name
    if s.mode == "Standard":
        spec["deploymentStrategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
    return spec


def track_name(version: str) -> str:
    """A Standard-mode canary's predictor name: KServe names its Deployment and Service
    ``{isvc}-{name}-predictor``. Promotion here is a rolling update of the stable predictor to
    the canary's spec with the canary entry removed (one apply), not KServe's rename-promote,
    so the stable Deployment keeps its name from version to version."""
    return f"canary-v{version}"


def inference_service(
    s: Serving,
    *,
    canary: Serving | None = None,
    canary_percent: int = 0,
) -> dict[str, Any]:
    """``s`` is what serves 100% (the stable predictor); ``canary`` the new version, if any.

    Knative mode has no second spec: KServe keeps the last rolled-out revision itself, so the
    predictor *is* the canary's spec with ``canaryTrafficPercent``."""
    replicas = {"minReplicas": s.replicas}
    meta = {
        "name": s.app,
        "namespace": s.namespace,
        "labels": labels(s),
        "annotations": {**annotations(s), "serving.kserve.io/deploymentMode": s.mode},
    }
    if canary is not None:
        meta["annotations"][CANARY_ANNOTATION] = canary.version
    if s.mode == "Knative":
        pred = {**predictor(canary or s), **replicas, "maxReplicas": max(s.replicas, 3)}
        if canary is not None and canary_percent < 100:
            pred["canaryTrafficPercent"] = canary_percent
        # A "latest" tag URL reaches the canary revision alone (the smoke request's target).
        meta["annotations"]["serving.kserve.io/enable-tag-routing"] = "true"
        return _isvc(meta, {"predictor": pred})
    # The stable predictor keeps one (empty) name, so a new version is a rolling update of the
    # same Deployment; only a canary is named (KServe requires it, validateCanarySpecs).
    pred = {**predictor(s), **replicas, "maxReplicas": s.replicas}
    spec: dict[str, Any] = {"predictor": pred}
    if canary is not None:
        # A canary has fixed replicas: minReplicas only (validateCanarySpecs refuses maxReplicas).
        entry = {**predictor(canary, track_name(canary.version)), **replicas}
        spec["canary"] = [{"predictor": entry, "trafficPercent": canary_percent}]
    return _isvc(meta, spec)


def _isvc(meta: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": spec,
    }


def kserve_canary_url(s: Serving, canary: Serving) -> str:
    """The canary's own address, where KServe gives it one: Standard mode names the canary's
    Service ``{isvc}-{name}-predictor`` (inference_service.go, CanarySpec doc)."""
    return service_url(s, f"{s.app}-{track_name(canary.version)}-predictor")


# ---- what the step applies ----------------------------------------------------------------------


def objects(s: Serving) -> list[dict[str, Any]]:
    """Everything that serves ``s`` alone at 100%: the render's sample, the step's end state."""
    if s.target == "kserve":
        return [inference_service(s)]
    return [service(s), deployment(s)]
