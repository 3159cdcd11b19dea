"""Cluster deployments recorded on the registered model, where any machine can list them.

One tag per target and namespace, ``taskyard.deployment/<target>/<namespace>``, its value a
small JSON object (version, URL, mode, time). MLflow tags are the registry's own key-value
store: no second database, and the record changes with the registry it describes.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from taskyard.kube import manifests as m

TAG_PREFIX = "taskyard.deployment/"


def record_tag(client: Any, s: m.Serving, url: str) -> None:
    value = {
        "version": s.version,
        "target": s.target,
        "namespace": s.namespace,
        "mode": s.mode if s.target == "kserve" else "",
        "url": url,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        client.set_registered_model_tag(
            s.model, f"{TAG_PREFIX}{s.target}/{s.namespace}", json.dumps(value)
        )
    except Exception as e:  # the rollout is done; a missing listing entry is not a failure
        print(f"warning: recording the deployment on the registry failed: {e}", file=sys.stderr)


def recorded(client: Any, name: str) -> list[dict[str, Any]]:
    """The cluster deployments the registry records for model ``name``."""
    tags = client.get_registered_model(name).tags or {}
    out = []
    for k, v in sorted(tags.items()):
        if k.startswith(TAG_PREFIX):
            try:
                out.append({"model": name, **json.loads(v)})
            except ValueError:
                continue
    return out
