"""One exception tree, so every layer fails with a headline a user can act on.

Each subclass names the layer it comes from; CLIs print ``str(err)`` as one line and exit
non-zero, and keep the traceback for ``--debug``.
"""

from __future__ import annotations


class TaskyardError(Exception):
    """Root of every error taskyard raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class SpecError(TaskyardError):
    """A task or pipeline definition is inconsistent (found at definition time)."""


class CatalogError(TaskyardError):
    """An unknown task or pipeline name, or a catalog that cannot be loaded."""


class RenderError(TaskyardError):
    """A spec cannot be expressed on an engine."""


class StepError(TaskyardError):
    """An expected failure inside a step: bad URL, failing tests, missing column..."""


class RunError(TaskyardError):
    """The local runner cannot start or continue a run (bad param, unknown run id...)."""
