"""Framework trainers behind one small interface, so the train step does not branch on them.

Each module (``sklearn_``, ``xgboost_``, ``torch_``) has ``fit(spec, x, y) -> Fitted``; the
fitted model logs itself to MLflow as a pyfunc that predicts class labels (classification) or
values (regression), with a signature, an input example and pinned ``pip_requirements``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from taskyard.errors import StepError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class FitSpec:
    """What a trainer needs to know, already validated by the project config."""

    task: str
    params: dict[str, Any]
    seed: int
    device: str = "auto"
    estimator: str | None = None


class Fitted(Protocol):
    params: dict[str, Any]
    """The effective hyperparameters (defaults filled in), logged as MLflow params."""
    device: str
    """Where it trained: ``cpu`` or ``cuda``."""

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo: ...


def trainer(framework: str) -> Any:
    """The trainer module for a framework (imported lazily: torch is heavy and optional)."""
    module = {"sklearn": "sklearn_", "xgboost": "xgboost_", "torch": "torch_"}[framework]
    try:
        return importlib.import_module(f"taskyard.ml.{module}")
    except ImportError as e:
        raise StepError(
            f"framework {framework!r} is not installed here: {e}",
            "use the train image, or pip install 'taskyard[train,torch]'",
        ) from None


def check_params(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Unknown hyperparameters fail with the closest known names, not deep in a framework."""
    known = sorted(set(known))
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise StepError(f"unknown hyperparameter {key!r} for {what}", hint)


def cuda_available() -> bool:
    """A CUDA device is visible (torch when installed, else the driver's nvidia-smi)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return shutil.which("nvidia-smi") is not None


def pick_device(requested: str, framework: str, supported: bool = True) -> str:
    """Resolve ``auto``/``cpu``/``cuda``: ``cuda`` without a usable GPU is an error."""
    if requested not in DEVICES:
        raise StepError(f"--device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    usable = supported and cuda_available()
    if requested == "cuda" and not usable:
        why = "this build has no CUDA support" if not supported else "no CUDA device is visible"
        raise StepError(f"--device cuda: {why} for {framework}", "use --device auto or cpu")
    return "cuda" if usable else "cpu"


def pins(*distributions: str | tuple[str, ...]) -> list[str]:
    """``name==version`` for installed distributions (a tuple: the first one installed).

    Explicit pins instead of MLflow's inference, which would list the whole venv; local
    version labels (``+cpu``) are dropped so the pins resolve on PyPI.
    """
    out = []
    for dist in distributions:
        names = dist if isinstance(dist, tuple) else (dist,)
        for name in names:
            try:
                version = metadata.version(name).split("+")[0]
            except metadata.PackageNotFoundError:
                continue
            out.append(f"{name}=={version}")
            break
        else:
            raise StepError(f"{' or '.join(names)} is not installed; the model needs it to load")
    return out


BASE_REQUIREMENTS = ("mlflow", "numpy", "pandas")


def log_code_model(
    name: str,
    pyfunc_module: Any,
    artifacts: dict[str, str],
    input_example: pd.DataFrame,
    requirements: list[str],
    code_paths: list[str] | None = None,
) -> ModelInfo:
    """Log a pyfunc "model from code" (``pyfunc_module``'s file is copied into the model).

    The input example is predicted through the very class that will serve it, so the logged
    signature is what serving returns.
    """
    import mlflow
    from mlflow.models import infer_signature

    served = pyfunc_module.SERVED()
    served.load_context(mlflow.pyfunc.PythonModelContext(artifacts, None))
    output = served.predict(None, input_example)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=pyfunc_module.__file__,
        artifacts=artifacts,
        code_paths=code_paths,
        signature=infer_signature(input_example, output),
        input_example=input_example,
        pip_requirements=sorted(set(requirements)),
    )
