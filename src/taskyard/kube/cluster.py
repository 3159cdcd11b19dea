"""Run a rollout plan against the API server with the official ``kubernetes`` client.

Why the client and not kubectl: the step image then needs no binary whose version must track
the cluster's, errors arrive as structured ``ApiException`` bodies (one line for the record),
and server-side apply is one call: ``DynamicClient.server_side_apply`` sends a ``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=taskyard`` and ``force=true``
(https://kubernetes.io/docs/reference/using-api/server-side-apply/). Forcing takes ownership
of fields another manager set (a ``kubectl scale`` by hand): this step is the owner of the
model server's objects, and a conflict left unresolved would block every later deploy.

Credentials: the pod's ServiceAccount token (``taskyard-deploy``) when
``KUBERNETES_SERVICE_HOST`` is set, else the kubeconfig (``KUBECONFIG`` / ``~/.kube/config``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from taskyard.errors import StepError
from taskyard.kube import manifests as m
from taskyard.kube.rollout import Action, Obj, key, progress, ref

POLL_SECONDS = 2.0


def one_line(e: BaseException) -> str:
    """An ApiException's ``message`` from its Status body, else the first line of the error."""
    body = getattr(e, "body", None)
    if body:
        try:
            return f"{getattr(e, 'status', '')} {json.loads(body).get('message', '')}".strip()
        except (ValueError, AttributeError):
            pass
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class Cluster:
    """The few calls a rollout needs, by object (apiVersion + kind + namespace + name)."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config
        from kubernetes.dynamic import DynamicClient

        if api_client is None:
            try:
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config()
                else:
                    config.load_kube_config()
            except Exception as e:
                raise StepError(f"no Kubernetes credentials: {one_line(e)}") from e
            api_client = client.ApiClient()
        try:
            self._dyn = DynamicClient(api_client)
        except Exception as e:
            raise StepError(f"cannot reach the Kubernetes API: {one_line(e)}") from e

    def _resource(self, obj: Obj) -> Any:
        try:
            return self._dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except Exception as e:
            raise StepError(
                f"the cluster has no {obj['apiVersion']} {obj['kind']} "
                f"(is KServe installed for target kserve?): {one_line(e)}"
            ) from e

    def get(self, obj: Obj) -> Obj | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        meta = obj["metadata"]
        try:
            live = self._resource(obj).get(name=meta["name"], namespace=meta.get("namespace"))
        except NotFoundError:
            return None
        except StepError:
            raise
        except Exception as e:
            raise StepError(f"reading {ref(obj)} failed: {one_line(e)}") from e
        return live.to_dict()

    def apply(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        try:
            out = self._resource(obj).server_side_apply(
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=m.FIELD_MANAGER,
                force_conflicts=True,
            )
        except StepError:
            raise
        except Exception as e:
            raise StepError(f"applying {ref(obj)} failed: {one_line(e)}") from e
        return out.to_dict()

    def delete(self, obj: Obj) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        meta = obj["metadata"]
        try:
            self._resource(obj).delete(name=meta["name"], namespace=meta.get("namespace"))
        except NotFoundError:
            return
        except StepError:
            raise
        except Exception as e:
            raise StepError(f"deleting {ref(obj)} failed: {one_line(e)}") from e


def read_live(cluster: Cluster, objs: list[Obj]) -> dict[tuple[str, str, str, str], Obj]:
    out = {}
    for obj in objs:
        live = cluster.get(obj)
        if live is not None:
            out[key(obj)] = live
    return out


def execute(
    cluster: Cluster,
    actions: list[Action],
    *,
    timeout: float,
    smoke: Callable[[str], str],
    touched: list[Obj] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run ``actions`` in order; return what the smoke requests answered, by URL.

    Every object about to be applied or deleted is appended to ``touched`` first, so a caller
    that catches a failure (or SIGTERM) knows what to roll back even mid-call."""
    answers: dict[str, str] = {}
    last: Obj = {}
    for action in actions:
        say(action.describe())
        if action.kind in ("apply", "delete") and touched is not None:
            touched.append(action.obj)
        if action.kind == "apply":
            last = cluster.apply(action.obj)
        elif action.kind == "delete":
            cluster.delete(action.obj)
        elif action.kind == "wait":
            last = wait(cluster, action, timeout, say)
        elif action.kind == "smoke":
            url = action.url or _status_url(last, canary=action.note == "canary")
            if not url:
                raise StepError(f"{ref(last)} reports no address to smoke-test")
            answers[url] = smoke(url)
    return answers


def _status_url(obj: Obj, canary: bool) -> str:
    from taskyard.kube.rollout import isvc_url

    return isvc_url(obj, canary=canary)


def wait(cluster: Cluster, action: Action, timeout: float, say: Callable[[str], None]) -> Obj:
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        live = cluster.get(action.obj)
        if live is None:
            raise StepError(f"{ref(action.obj)} disappeared during the rollout")
        state = progress(action, live)
        if state.failed:
            raise StepError(state.failed)
        if state.done:
            say(state.message)
            return live
        if state.message != said:
            say(f"  {state.message}")
            said = state.message
        if time.monotonic() >= deadline:
            raise StepError(f"{ref(action.obj)} not rolled out after {timeout:g}s: {state.message}")
        time.sleep(POLL_SECONDS)
