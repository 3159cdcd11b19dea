"""deploy: serve the champion, smoke-test it, roll the alias back on failure."""

from taskyard.catalog._common import (
    MLFLOW_ENV,
    mlflow_param,
    mlflow_workspace,
    source_workspace,
    step_task,
)
from taskyard.kube import manifests
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="deploy",
    module="deploy",
    image="train",
    display_name="deploy and smoke-test",
    description=(
        "Serves the given model version (default: the `champion`'s) with taskyard's model "
        "server (MLflow's scoring app, input limits, /health, /metrics): `local` on the host, "
        "`kubernetes` as a Deployment + Service, `kserve` as an InferenceService, optionally "
        "through a canary; waits for the rollout, sends a smoke prediction built from the "
        "model's signature through the Service, and on any failure (SIGTERM included) "
        "re-applies the previous manifests, moves `champion` back to `previous-champion` (or, "
        "with none, removes it) and fails. A version that is no longer `champion` is not "
        "deployed."
    ),
    categories=("Deployment",),
    tags=("mlflow", "serving", "deploy"),
    network=True,
    resources=Resources(cpu="500m", memory="1Gi"),
    env=MLFLOW_ENV,
    params=[
        Param(name="model-name", description="Registered model to serve."),
        Param(
            name="model-version",
            default="",
            description=(
                "Version to serve (promote's `model-version`); skipped when it is no longer "
                "the alias's. Empty: the alias's version now."
            ),
        ),
        Param(
            name="promoted",
            type="boolean",
            default="true",
            description=(
                "promote's `promoted` result; `false` (the candidate was declined when judged "
                "again) skips the deploy."
            ),
        ),
        Param(name="alias", default="champion", description="Alias to serve."),
        Param(
            name="previous-alias",
            default="previous-champion",
            description="Alias to roll back to when the smoke test fails.",
        ),
        Param(
            name="target",
            enum=manifests.TARGETS,
            default="local",
            description=(
                "Where to deploy: `local` (a server on this machine), `kubernetes` "
                "(Deployment + Service) or `kserve` (InferenceService)."
            ),
        ),
        Param(
            name="namespace",
            default="",
            description="Cluster targets: the namespace; empty: the task pod's own.",
        ),
        Param(
            name="deployment-mode",
            enum=manifests.MODES,
            default="Standard",
            description="kserve: `Standard` (plain Deployment) or `Knative` (revisions).",
        ),
        Param(
            name="canary-percent",
            type="integer",
            default="0",
            description=(
                "Cluster targets: traffic share for the new version before it is promoted "
                "(0: a plain rolling update). kubernetes: by pod count; kserve: exact."
            ),
        ),
        Param(
            name="replicas",
            type="integer",
            default="1",
            description="Cluster targets: model server pods.",
        ),
        Param(
            name="serve-image",
            default=manifests.default_image(),
            description="Cluster targets: the serve image (`images/serve`); pin a digest.",
        ),
        Param(
            name="model-source",
            enum=manifests.SOURCES,
            default="mlflow",
            description=(
                "Cluster targets: `mlflow` loads models:/NAME/VERSION through the tracking "
                "server; `storage` has KServe download the version's artifacts (needed for a "
                "KServe Standard-mode canary)."
            ),
        ),
        Param(
            name="rollout-timeout",
            type="integer",
            default="600",
            description="Cluster targets: seconds to wait for each rollout step.",
        ),
        Param(name="host", default="127.0.0.1", description="Address the local server binds."),
        Param(
            name="port",
            type="integer",
            default="0",
            description="Local server port; 0 picks a free one.",
        ),
        Param(
            name="keep-serving",
            type="boolean",
            default="true",
            description="Leave the server running after the smoke test (`false`: stop it).",
        ),
        Param(
            name="health-timeout",
            type="number",
            default="120",
            description="Seconds to wait for the server to become healthy.",
        ),
        mlflow_param(),
    ],
    results=[
        Result(name="url", description="Base URL of the serving endpoint; empty if skipped."),
        Result(name="model-version", description="The version deployed; empty if skipped."),
        Result(name="smoke-prediction", description="The smoke request's answer (truncated)."),
    ],
    workspaces=[source_workspace("Receives the deployment record."), mlflow_workspace()],
    args=[
        "--source", "$(workspaces.source.path)",
        "--model-name", "$(params.model-name)",
        "--model-version", "$(params.model-version)",
        "--promoted", "$(params.promoted)",
        "--alias", "$(params.alias)",
        "--previous-alias", "$(params.previous-alias)",
        "--target", "$(params.target)",
        "--host", "$(params.host)",
        "--port", "$(params.port)",
        "--keep-serving", "$(params.keep-serving)",
        "--health-timeout", "$(params.health-timeout)",
        "--namespace", "$(params.namespace)",
        "--deployment-mode", "$(params.deployment-mode)",
        "--canary-percent", "$(params.canary-percent)",
        "--replicas", "$(params.replicas)",
        "--serve-image", "$(params.serve-image)",
        "--model-source", "$(params.model-source)",
        "--rollout-timeout", "$(params.rollout-timeout)",
    ],
)  # fmt: skip
