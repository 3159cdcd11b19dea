"""deploy --target kubernetes|kserve: roll a version out on the cluster, undo it on failure.

The objects come from :mod:`taskyard.kube.manifests` (the same functions ``taskyard render``
writes the samples with), the order from :func:`taskyard.kube.rollout.plan`; this module reads
what is live, runs the plan, and on any failure runs the rollback plan: every object the
rollout touched goes back to its previous manifest (or is deleted when the rollout created it).
The caller (:mod:`taskyard.steps.deploy`) then moves the alias back, as for the local target.

The deployment is recorded on the registered model (:mod:`taskyard.kube.records`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from taskyard import probe
from taskyard.errors import StepError
from taskyard.kube import manifests as m
from taskyard.kube import rollout
from taskyard.kube.records import record_tag
from taskyard.steps import _cli

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Schemes KServe's storage initializer downloads (kserve python/kserve/kserve/storage).
STORAGE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://", "hdfs://", "webhdfs://")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", default="", help="empty: the pod's own namespace")
    p.add_argument("--deployment-mode", default="Standard", choices=m.MODES)
    p.add_argument("--canary-percent", default="0", help="0..100; 0 = straight rolling update")
    p.add_argument("--replicas", default="1")
    p.add_argument("--serve-image", default="", help="empty: ghcr.io/taskyard/serve:<version>")
    p.add_argument("--model-source", default="mlflow", choices=m.SOURCES)
    p.add_argument("--rollout-timeout", default="600", help="seconds per rollout wait")


def integer(flag: str, value: str, default: int, low: int, high: int) -> int:
    text = value.strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise StepError(f"{flag} must be an integer {low}..{high}, got {value!r}")
    return int(text)


def namespace(given: str) -> str:
    if given.strip():
        return given.strip()
    try:
        return NAMESPACE_FILE.read_text().strip() or "taskyard"
    except OSError:
        return "taskyard"


def artifact_location(client: Any, name: str, version: str) -> str:
    """The version's files, as KServe's storage initializer must fetch them."""
    try:
        uri = client.get_model_version_download_uri(name, version)
    except Exception as e:
        raise StepError(f"cannot resolve the artifacts of {name} version {version}: {e}") from e
    if not uri.startswith(STORAGE_SCHEMES):
        raise StepError(
            f"model-source=storage: version {version}'s artifacts are at {uri!r}, which KServe "
            f"cannot download (supported: {', '.join(STORAGE_SCHEMES)}); use model-source=mlflow"
        )
    return uri


def spec(args: argparse.Namespace, client: Any, name: str, version: str, uri: str) -> m.Serving:
    source = args.model_source
    location = artifact_location(client, name, version) if source == "storage" else ""
    try:
        return m.Serving(
            model=name,
            version=version,
            namespace=namespace(args.namespace),
            target=args.target,
            mode=args.deployment_mode,
            image=args.serve_image.strip() or m.default_image(),
            tracking_uri=uri,
            replicas=integer("--replicas", args.replicas, 1, 1, 100),
            model_source=source,
            artifact_location=location,
            rollout_timeout=integer("--rollout-timeout", args.rollout_timeout, 600, 1, 86400),
        )
    except ValueError as e:
        raise StepError(str(e)) from e


def serve(args: argparse.Namespace, client: Any, name: str, version: str, uri: str) -> dict:
    from taskyard.kube.cluster import Cluster, execute, read_live

    percent = integer("--canary-percent", args.canary_percent, 0, 0, 100)
    s = spec(args, client, name, version, uri)
    payload = probe.smoke_payload(m.model_uri(s))
    cluster = Cluster()
    live = read_live(cluster, rollout.watched(s))
    try:
        actions, notes = rollout.plan(s, live, percent)
    except ValueError as e:
        raise StepError(str(e)) from e
    for note in notes:
        print(f"note: {note}", flush=True)
    touched: list[rollout.Obj] = []
    timeout = float(s.rollout_timeout)
    try:
        answers = execute(
            cluster,
            actions,
            timeout=timeout,
            smoke=lambda url: probe.smoke_url(url, payload),
            touched=touched,
        )
    except BaseException as e:
        interrupted = not isinstance(e, StepError)
        with _cli.uninterrupted():
            undone = undo(cluster, touched, live, timeout, wait=not interrupted)
        if isinstance(e, StepError):
            raise StepError(f"{e}; cluster: {undone}") from e
        print(f"cluster: {undone}", file=sys.stderr)
        raise
    url = next(reversed(answers), m.service_url(s))
    record_tag(client, s, url)
    return {
        "results": {
            "url": url,
            "model-version": version,
            "smoke-prediction": answers.get(url, ""),
        },
        "cluster": {
            "namespace": s.namespace,
            "mode": s.mode if s.target == "kserve" else "",
            "canary_percent": percent,
            "replaced_version": rollout.served_version(rollout.live_serving(s, live)),
            "notes": notes,
            "applied": [rollout.ref(o) for o in touched],
        },
        "kept_serving": True,
        "replaced_version": rollout.served_version(rollout.live_serving(s, live)),
    }


def undo(cluster: Any, touched: list[rollout.Obj], live: dict, timeout: float, wait: bool) -> str:
    """Run the rollback plan; say what happened. Waits are skipped when interrupted: the
    engine's grace period is short, the previous manifests are back either way."""
    from taskyard.kube.cluster import execute

    if not touched:
        return "nothing was changed"
    plan = [a for a in rollout.rollback_plan(touched, live) if wait or a.kind != "wait"]
    try:
        execute(cluster, plan, timeout=timeout, smoke=lambda url: "")
    except Exception as e:
        return f"rollback FAILED: {e}"
    restored = [rollout.ref(a.obj) for a in plan if a.kind == "apply"]
    deleted = [rollout.ref(a.obj) for a in plan if a.kind == "delete"]
    parts = []
    if restored:
        parts.append("previous manifests re-applied to " + ", ".join(restored))
    if deleted:
        parts.append("deleted " + ", ".join(deleted))
    return "; ".join(parts)
