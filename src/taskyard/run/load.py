"""Find a pipeline by catalog name or by ``path/to/file.py:ATTR`` / ``package.module:ATTR``.

The file form lets a team fork a catalog pipeline in their own repository and run it without
packaging anything.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from taskyard.errors import RunError, TaskyardError
from taskyard.spec import PipelineSpec, PipelineTask


def load_pipeline(ref: str) -> PipelineSpec:
    """A catalog pipeline name, ``file.py:ATTR`` or ``package.module:ATTR``."""
    if ":" not in ref:
        from taskyard.catalog import get_pipeline

        return get_pipeline(ref)
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise RunError(f"bad pipeline reference {ref!r}", "use NAME, FILE.py:ATTR or MODULE:ATTR")
    module = _load_file(Path(where)) if where.endswith(".py") or "/" in where else None
    if module is None:
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())  # as `python -m` would: a team's own package
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise RunError(f"cannot import {where!r}: {e}") from e
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise RunError(f"{where} has no attribute {attr!r}") from None
    if not isinstance(value, PipelineSpec):
        raise RunError(f"{ref} is a {type(value).__name__}, not a PipelineSpec")
    return value


def _load_file(path: Path) -> object:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise RunError(f"no such file: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"_taskyard_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RunError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # as for a script: its sibling modules import
    try:
        spec.loader.exec_module(module)
    except TaskyardError:
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        raise RunError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    return module


def without_cache(spec: PipelineSpec) -> PipelineSpec:
    """``taskyard run --no-cache``: every cached task computes, whatever the pipeline binds.

    Set on the tasks rather than through the pipeline's ``cache`` param, so it also holds for a
    forked pipeline that never declared one.
    """
    from taskyard.spec.task import CACHE_PARAM

    def off(pt: PipelineTask) -> PipelineTask:
        if not pt.task.cache:
            return pt
        return pt.model_copy(update={"params": {**pt.params, CACHE_PARAM: "false"}})

    return spec.model_copy(
        update={
            "tasks": tuple(off(pt) for pt in spec.tasks),
            "finally_": tuple(off(pt) for pt in spec.finally_),
        }
    )
