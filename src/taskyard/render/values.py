"""The values a rendered file names for one cluster and one repository: an options object.

The catalog renders (``taskyard render``) are generic, so they carry placeholders a user
replaces: :data:`CATALOG`, whose fields are exactly the values the committed files show.
``taskyard render --pipeline … --repo-url …`` renders for a team's own repository with a
:class:`Values` of its own (:mod:`taskyard.render.project`). Pure data: a renderer takes the
values as an argument and never reads env, clock or files.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskyard.catalog._common import REGISTRY


@dataclass(frozen=True)
class Values:
    """Repository, model, MLflow server, namespace and image registry of a render."""

    repo_url: str = "https://github.com/your-org/your-ml-project.git"
    model_name: str = "my-model"
    # On a cluster every task runs in its own pod: they must share one MLflow server.
    mlflow_tracking_uri: str = "http://mlflow.mlflow.svc.cluster.local:5000"
    model_uri: str = "runs:/0123456789abcdef0123456789abcdef/model"
    # Where the Tekton listener's ServiceAccount lives (its ClusterRoleBinding must say);
    # ``set_namespace`` also writes it into every namespaced object's metadata.
    namespace: str = "taskyard"
    set_namespace: bool = False
    # The task images' registry: ``<registry>/<image>:<version>`` is every image param default.
    image_registry: str = REGISTRY
    # False (the catalog): triggers take the repository from the event, for any repository.
    # True (a team's repository): every trigger runs ``repo_url`` with the model name and
    # MLflow URI above, whatever the event says; only the revision comes from the event.
    pinned: bool = False
    # Values of other pipeline params (``-p KEY=VALUE``), passed by every run and trigger.
    params: tuple[tuple[str, str], ...] = ()
    # The Secret each trigger binds to an optional workspace (``git-credentials``,
    # ``ssh-directory``, ``mlflow``): the same names the Argo WorkflowTemplates mount. Bound as
    # ``optional``: a missing Secret mounts an empty folder, which the steps read as unbound.
    workspace_secrets: tuple[tuple[str, str], ...] = (
        ("git-credentials", "git-credentials"),
        ("ssh-directory", "ssh-directory"),
        ("mlflow", "mlflow"),
    )

    def examples(self) -> dict[str, str]:
        """Param name -> the value a sample run (or trigger) passes for it."""
        return {
            "url": self.repo_url,
            "repo-url": self.repo_url,
            "model-uri": self.model_uri,
            "model-name": self.model_name,
            "mlflow-tracking-uri": self.mlflow_tracking_uri,
            **dict(self.params),
        }

    def pinned_params(self) -> dict[str, str]:
        """What a pinned trigger passes besides repo-url and revision."""
        return {
            "model-name": self.model_name,
            "mlflow-tracking-uri": self.mlflow_tracking_uri,
            **dict(self.params),
        }


CATALOG = Values()
