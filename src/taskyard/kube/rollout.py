"""Rollout and rollback as data: what to apply, wait for, smoke and undo. No API calls here.

A rollout is a list of :class:`Action` built from the objects live before it
(:func:`plan`), run in order by :mod:`taskyard.kube.cluster`; on any failure the
:func:`rollback_plan` of what was touched is run: objects that did not exist are deleted, the
others get their previous manifest re-applied (:func:`previous_manifest`), the way
``kubectl rollout undo`` restores the previous pod template, but for every object we changed.

"Done" is read from object status only, with the same rules the tools of each project use:

* Deployment (:func:`deployment_progress`): kubectl's ``rollout status``
  (kubernetes/kubectl pkg/polymorphichelpers/rollout_status.go, ``DeploymentStatusViewer``):
  wait until ``status.observedGeneration >= metadata.generation``; a ``Progressing`` condition
  with reason ``ProgressDeadlineExceeded`` is a failure; done when ``updatedReplicas``,
  ``replicas`` and ``availableReplicas`` all equal ``spec.replicas`` (no old pod left).
* InferenceService (:func:`isvc_progress`): the ``Ready`` condition ``True`` at the current
  generation (KServe sets ``status.observedGeneration``); a model that failed to load
  (``modelStatus.transitionStatus: BlockedByFailedLoad`` or ``lastFailureInfo``) is a failure
  at once; with a Standard canary its ``canaryStatuses[]`` entry must be ``ready`` at the asked
  ``trafficPercent``; with a Knative canary the predictor's ``traffic`` must give the latest
  ready revision the asked percent (kserve pkg/apis/serving/v1beta1/inference_service_status.go,
  ``ComponentStatusSpec``, ``CanaryStatus``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskyard.kube import manifests as m

Obj = dict[str, Any]
# Set by the API server or controllers, never part of what we apply back.
SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)


@dataclass(frozen=True)
class Progress:
    done: bool
    failed: str = ""  # why it can never become done; "" while it may
    message: str = ""


@dataclass(frozen=True)
class Action:
    """One step: ``apply``/``delete`` an object, ``wait`` for it, ``smoke`` a URL."""

    kind: str  # "apply" | "delete" | "wait" | "smoke"
    obj: Obj = field(default_factory=dict)
    url: str = ""  # smoke: the URL, or "" for the URL the waited object's status gives
    canary_percent: int = 0  # wait on an InferenceService: the split to expect
    canary_name: str = ""
    note: str = ""

    def describe(self) -> str:
        what = ref(self.obj) if self.obj else self.url
        return f"{self.kind} {what}" + (f" ({self.note})" if self.note else "")


def ref(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


# ---- status ------------------------------------------------------------------------------------


def _condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _observed(obj: Obj) -> bool:
    gen = obj.get("metadata", {}).get("generation")
    seen = obj.get("status", {}).get("observedGeneration")
    return gen is None or (seen is not None and seen >= gen)


def deployment_progress(obj: Obj) -> Progress:
    name = obj["metadata"]["name"]
    if not _observed(obj):
        return Progress(False, message=f"waiting for deployment {name!r} update to be observed")
    status = obj.get("status", {})
    cond = _condition(obj, "Progressing")
    if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
        return Progress(False, failed=f"deployment {name!r} exceeded its progress deadline")
    want = obj.get("spec", {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return Progress(False, message=f"{updated} of {want} updated replicas")
    if total > updated:
        return Progress(False, message=f"{total - updated} old replicas pending termination")
    if available < updated:
        return Progress(False, message=f"{available} of {updated} updated replicas available")
    return Progress(True, message=f"deployment {name!r} successfully rolled out")


def _load_failure(model_status: dict[str, Any] | None) -> str:
    if not model_status:
        return ""
    info = model_status.get("lastFailureInfo") or {}
    if model_status.get("transitionStatus") == "BlockedByFailedLoad" or info.get("reason"):
        reason = info.get("reason") or "BlockedByFailedLoad"
        return f"{reason}: {info.get('message', '').strip()}".rstrip(": ")
    return ""


def isvc_progress(obj: Obj, canary_percent: int = 0, canary_name: str = "") -> Progress:
    name = obj["metadata"]["name"]
    status = obj.get("status", {})
    failure = _load_failure(status.get("modelStatus"))
    if failure:
        return Progress(False, failed=f"inferenceservice {name!r}: {failure}")
    for canary in status.get("canaryStatuses") or []:
        failure = _load_failure(canary.get("modelStatus"))
        if failure and canary.get("name") == canary_name:
            return Progress(False, failed=f"inferenceservice {name!r} canary: {failure}")
    if not _observed(obj):
        return Progress(False, message=f"waiting for inferenceservice {name!r} to be observed")
    ready = _condition(obj, "Ready")
    if ready is None or ready.get("status") != "True":
        why = (ready or {}).get("message") or (ready or {}).get("reason") or "not ready"
        return Progress(False, message=f"inferenceservice {name!r}: {why}")
    if canary_name:
        entry = next(
            (c for c in status.get("canaryStatuses") or [] if c.get("name") == canary_name),
            None,
        )
        if entry is None or not entry.get("ready"):
            return Progress(False, message=f"canary {canary_name!r} not ready")
        if entry.get("trafficPercent") != canary_percent:
            return Progress(
                False, message=f"canary at {entry.get('trafficPercent')}%, not {canary_percent}%"
            )
    elif canary_percent:
        pred = (status.get("components") or {}).get("predictor") or {}
        latest = pred.get("latestReadyRevision")
        if not latest or latest != pred.get("latestCreatedRevision"):
            return Progress(False, message="the new predictor revision is not ready yet")
        share = sum(
            t.get("percent") or 0
            for t in pred.get("traffic") or []
            if t.get("revisionName") == latest or t.get("latestRevision")
        )
        if share != canary_percent:
            return Progress(False, message=f"latest revision has {share}%, not {canary_percent}%")
    return Progress(True, message=f"inferenceservice {name!r} ready")


def progress(action: Action, obj: Obj) -> Progress:
    if obj.get("kind") == "Deployment":
        return deployment_progress(obj)
    if obj.get("kind") == "InferenceService":
        return isvc_progress(obj, action.canary_percent, action.canary_name)
    return Progress(True)


def isvc_url(obj: Obj, canary: bool = False) -> str:
    """Where to send a smoke request: the cluster-local address, or the canary's tag URL."""
    status = obj.get("status", {})
    if canary:
        pred = (status.get("components") or {}).get("predictor") or {}
        for t in pred.get("traffic") or []:
            if t.get("tag") == "latest" and t.get("url"):
                return t["url"]
    return (status.get("address") or {}).get("url") or status.get("url") or ""


# ---- plans ---------------------------------------------------------------------------------------


def previous_manifest(live: Obj) -> Obj:
    """The live object as a manifest to apply back: without status and server-set metadata."""
    meta = {k: v for k, v in live.get("metadata", {}).items() if k not in SERVER_METADATA}
    if meta.get("annotations"):
        meta["annotations"] = {
            k: v for k, v in meta["annotations"].items() if k not in SERVER_ANNOTATIONS
        }
    return {
        **{k: v for k, v in live.items() if k not in ("status", "metadata")},
        "metadata": meta,
    }


def served_version(live: Obj | None) -> str:
    if not live:
        return ""
    return live.get("metadata", {}).get("annotations", {}).get(m.VERSION_ANNOTATION, "")


def live_serving(spec: m.Serving, live: dict[tuple[str, str, str, str], Obj]) -> Obj | None:
    """The object that serves today (stable Deployment or the InferenceService), if any."""
    main = m.inference_service(spec) if spec.target == "kserve" else m.deployment(spec)
    return live.get(key(main))


def watched(spec: m.Serving) -> list[Obj]:
    """Every object a rollout of ``spec`` may touch: read before it, to plan and undo it."""
    if spec.target == "kserve":
        return [m.inference_service(spec)]
    return [
        m.service(spec),
        m.service(spec, m.CANARY),
        m.deployment(spec),
        m.deployment(spec, m.CANARY),
    ]


def plan(
    new: m.Serving, live: dict[tuple[str, str, str, str], Obj], canary_percent: int
) -> tuple[list[Action], list[str]]:
    """The actions that take ``new`` to 100%, and notes for the record.

    With a canary (0 < percent < 100) and something already serving: the canary first, waited
    for and smoke-tested on its own address, then promoted to 100%; the first deploy of a model
    has no stable version to split against, so it goes straight to 100% (said in a note)."""
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary-percent must be 0..100, got {canary_percent}")
    notes: list[str] = []
    current = live_serving(new, live)
    old_version = served_version(current)
    canary = 0 < canary_percent < 100
    if canary and current is None:
        notes.append("nothing serves yet: no canary, straight to 100%")
        canary = False
    elif canary and old_version == new.version:
        notes.append(f"version {new.version} already serves: no canary")
        canary = False
    if new.target == "kserve":
        old_source = (current or {}).get("metadata", {}).get("annotations", {})
        old_source = old_source.get(m.SOURCE_ANNOTATION, "")
        percent = canary_percent if canary else 0
        return _plan_kserve(new, old_version, old_source, percent, notes), notes
    return _plan_kubernetes(new, live, canary_percent if canary else 0, notes), notes


def _plan_kubernetes(
    new: m.Serving, live: dict[tuple[str, str, str, str], Obj], percent: int, notes: list[str]
) -> list[Action]:
    actions = [Action("apply", m.service(new))]
    canary_objs = [m.deployment(new, m.CANARY), m.service(new, m.CANARY)]
    if percent:
        _, replicas, share = m.canary_split(new.replicas, percent)
        notes.append(
            f"canary: {replicas} pod(s) beside {new.replicas} stable = {share}% of traffic "
            f"(asked {percent}%; a Service splits by ready pods)"
        )
        dep = m.deployment(new, m.CANARY, replicas)
        actions += [
            Action("apply", dep),
            Action("apply", m.service(new, m.CANARY)),
            Action("wait", dep),
            Action("smoke", url=m.service_url(new, f"{new.app}-{m.CANARY}"), note="canary"),
        ]
    stable = m.deployment(new)
    actions += [
        Action("apply", stable, note="promote" if percent else ""),
        Action("wait", stable),
        Action("smoke", url=m.service_url(new)),
    ]
    # A canary left over by a killed run, or this run's: the stable track serves alone now.
    actions += [Action("delete", o) for o in canary_objs if percent or key(o) in live]
    return actions


def _plan_kserve(
    new: m.Serving, old_version: str, old_source: str, percent: int, notes: list[str]
) -> list[Action]:
    if not percent:
        isvc = m.inference_service(new)
        return [Action("apply", isvc), Action("wait", isvc), Action("smoke")]
    if new.mode == "Knative":
        old = new.at(old_version)
        notes.append(f"canary: Knative revision split, {percent}% to version {new.version}")
        split = m.inference_service(old, canary=new, canary_percent=percent)
        canary_url = ""  # the "latest" tag URL from status (enable-tag-routing)
    else:
        if new.model_source != "storage":
            raise ValueError(
                "a KServe Standard-mode canary needs model-source=storage (KServe refuses a "
                "canary whose stable predictor has no storage URI); use canary-percent=0, "
                "deployment-mode=Knative or target=kubernetes"
            )
        if old_source.startswith(("models:/", "runs:/", "")) and "://" not in old_source:
            raise ValueError(
                f"version {old_version} serves with model-source=mlflow: a KServe Standard "
                "canary needs the stable predictor on a storage URI too; deploy once with "
                "canary-percent=0 and model-source=storage first"
            )
        old = new.at(old_version, old_source)
        notes.append(f"canary: KServe Standard spec.canary, {percent}% to version {new.version}")
        split = m.inference_service(old, canary=new, canary_percent=percent)
        canary_url = m.kserve_canary_url(old, new)
    full = m.inference_service(new)
    name = m.track_name(new.version) if new.mode == "Standard" else ""
    return [
        Action("apply", split),
        Action("wait", split, canary_percent=percent, canary_name=name),
        Action("smoke", url=canary_url, note="canary"),
        Action("apply", full, note="promote"),
        Action("wait", full),
        Action("smoke"),
    ]


def rollback_plan(
    touched: list[Obj], live_before: dict[tuple[str, str, str, str], Obj]
) -> list[Action]:
    """Undo a rollout: objects it created are deleted, changed ones get their manifest back.

    Deployments go first (traffic leaves the failed version), Services last; each restored
    serving object is waited for, so the step reports the old version serving again."""
    seen: set[tuple[str, str, str, str]] = set()
    restores: list[Action] = []
    deletes: list[Action] = []
    for obj in touched:
        k = key(obj)
        if k in seen:
            continue
        seen.add(k)
        before = live_before.get(k)
        if before is None:
            deletes.append(Action("delete", obj, note="created by the failed rollout"))
        else:
            back = previous_manifest(before)
            restores.append(Action("apply", back, note="previous manifest"))
            if back["kind"] in ("Deployment", "InferenceService"):
                restores.append(Action("wait", back, note="previous version serving"))

    def order(a: Action) -> int:
        return 0 if a.obj.get("kind") in ("Deployment", "InferenceService") else 1

    return sorted(restores, key=order) + sorted(deletes, key=order)
