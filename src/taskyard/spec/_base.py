"""The one pydantic configuration every spec model shares."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# Kubernetes DNS-1123 label: what Tekton and Argo accept for task, param and result names.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Tekton param/result names also allow underscores and dots; we keep to the portable subset.
PARAM_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")


class SpecModel(BaseModel):
    """Frozen and closed: a typo in a definition is an error, and specs are hashable values."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def check_name(value: str, what: str, pattern: re.Pattern[str] = NAME_RE) -> str:
    if not pattern.match(value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} is not a valid name "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return value
