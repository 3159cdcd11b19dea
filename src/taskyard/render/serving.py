"""Samples of what ``deploy --target kubernetes|kserve`` applies, one install set per case.

They come from the very functions the deploy step calls (:mod:`taskyard.kube.manifests`), for
a model ``my-model``; the step fills in the registered model, the version and the image. Each
folder is a kustomize set, so a team can also serve a version by hand
(``kubectl apply -k deploy/serving/kubernetes``) with the same objects the pipeline would.
"""

from __future__ import annotations

from typing import Any

from taskyard.kube import manifests as m
from taskyard.render import yamlfmt

ROOT = "deploy/serving"
MODEL = "my-model"
STABLE_VERSION, CANARY_VERSION = "1", "2"
CANARY_PERCENT = 10
# A storage URI KServe's storage initializer downloads: what model-source=storage resolves to.
ARTIFACTS = "s3://mlflow/artifacts/1/models/m-0123456789abcdef/artifacts"


def _spec(target: str, **kw: Any) -> m.Serving:
    return m.Serving(model=MODEL, version=STABLE_VERSION, target=target, **kw)


def samples() -> dict[str, list[dict[str, Any]]]:
    """Path -> objects: a first deploy and a canary for each target and KServe mode."""
    kube = _spec("kubernetes", replicas=2)
    new = kube.at(CANARY_VERSION)
    _, canary_pods, _ = m.canary_split(kube.replicas, CANARY_PERCENT)
    out: dict[str, list[dict[str, Any]]] = {
        f"{ROOT}/kubernetes/model-server.yaml": m.objects(kube),
        f"{ROOT}/kubernetes/canary/model-server-canary.yaml": [
            m.service(new, m.CANARY),
            m.deployment(new, m.CANARY, canary_pods),
        ],
    }
    for mode in m.MODES:
        folder = f"{ROOT}/kserve/{mode.lower()}"
        source = "storage" if mode == "Standard" else "mlflow"
        stable = _spec("kserve", mode=mode, model_source=source, artifact_location=ARTIFACTS)
        canary = stable.at(CANARY_VERSION, ARTIFACTS.replace("0123", "4567"))
        out[f"{folder}/inferenceservice.yaml"] = [m.inference_service(stable)]
        out[f"{folder}-canary/inferenceservice.yaml"] = [
            m.inference_service(stable, canary=canary, canary_percent=CANARY_PERCENT)
        ]
    return out


def files() -> dict[str, str]:
    from taskyard.render.emit import HEADER  # emit imports the engines

    return {
        path: HEADER + "---\n".join(yamlfmt.dump(d) for d in docs)
        for path, docs in samples().items()
    }
