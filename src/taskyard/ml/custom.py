"""The project's own model: ``model.factory`` and ``train.entrypoint``.

``[model] factory = "python:pkg.module:function"`` returns an **unfitted** scikit-learn-compatible
estimator — a ``Pipeline`` with the project's own ``ColumnTransformer``, xgboost's sklearn API,
any estimator with ``fit``/``predict``. taskyard fits it on the training split only (so the
project's transformers never see a holdout row) and logs it with skops, trusted types derived
from the project (:mod:`taskyard.ml.trust`) and the project's packages as ``code_paths``. Model
params reach it as keyword arguments when the factory takes any, else through the estimator's
``set_params`` (nested names like ``model__max_depth`` work).

``[train] entrypoint = "python:pkg.module:function"`` is full control: it is called with a
:class:`TrainContext` inside the active MLflow run and returns the fitted model:

- a scikit-learn-compatible estimator (logged as above);
- a torch ``nn.Module`` that takes the numeric features as one float32 tensor — or, for raw
  columns, ``ctx.torch_model(module, preprocess=fitted_transformer)``; ``ctx.fit_torch`` trains
  a module with taskyard's own loop (CUDA with AMP when a GPU is there, seeded, AdamW). Logged
  with ``torch.export`` (no pickle: loading it runs no project code) plus the preprocessor in
  skops;
- an ``mlflow.pyfunc.PythonModel`` (logged with MLflow's cloudpickle: loading it runs the
  project's code, so trust is your registry's access control).
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskyard.errors import StepError
from taskyard.ml import BASE_REQUIREMENTS, FitSpec, log_code_model, pick_device, pins, trust
from taskyard.ml.sklearn_ import SklearnModel

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

TORCH_TRAINING = {"epochs": 100, "lr": 0.01, "batch_size": 32, "weight_decay": 0.0}


def _is_estimator(obj: Any) -> bool:
    return callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None))


def _is_torch_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def _check_task(estimator: Any, task: str, where: str) -> None:
    """A classifier for classification, a regressor for regression (when it says which)."""
    kind = getattr(estimator, "_estimator_type", None)
    if kind is None:
        try:
            kind = estimator.__sklearn_tags__().estimator_type
        except Exception:
            return  # not telling: trust the project
    want = "classifier" if task == "classification" else "regressor"
    if kind in ("classifier", "regressor") and kind != want:
        raise StepError(f"{where} returned a {kind}, but model.task is {task}")


def build_estimator(root: Path, ref: str, params: dict[str, Any], task: str) -> Any:
    """Call the factory; apply params; check what came back."""
    from taskyard.project import project_callable

    factory = project_callable(root, ref, "model.factory")
    takes = bool(inspect.signature(factory).parameters)
    try:
        estimator = factory(**params) if takes else factory()
    except TypeError as e:
        raise StepError(f"model.factory {ref}: {e}") from None
    except Exception as e:
        raise StepError(f"model.factory {ref} failed: {type(e).__name__}: {e}") from None
    if not _is_estimator(estimator):
        raise StepError(
            f"model.factory {ref} returned {type(estimator).__name__}, not an estimator "
            "with fit() and predict()",
            "return an unfitted scikit-learn-compatible estimator (e.g. a Pipeline)",
        )
    _check_task(estimator, task, f"model.factory {ref}")
    if params and not takes:
        try:
            estimator.set_params(**params)
        except (ValueError, AttributeError) as e:
            raise StepError(f"model.params do not fit what model.factory returned: {e}") from None
    return estimator


def fit_factory(root: Path, ref: str, spec: FitSpec, x: pd.DataFrame, y: pd.Series) -> Any:
    """The factory's estimator, fitted on the training split."""
    if spec.device == "cuda":
        raise StepError("--device cuda: a model.factory estimator trains where it decides")
    estimator = build_estimator(root, ref, spec.params, spec.task)
    try:
        estimator.fit(x, y)
    except Exception as e:
        raise StepError(
            f"the model.factory estimator could not train: {type(e).__name__}: {e}"
        ) from None
    params = _flat_params(estimator, spec.params)
    return SklearnModel(estimator, params, root=root)


def _flat_params(estimator: Any, given: dict[str, Any]) -> dict[str, Any]:
    """What to log as MLflow params: the given ones, or the top-level ones the estimator has."""
    if given:
        return dict(given)
    try:
        found = estimator.get_params(deep=False)
    except Exception:
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str | int | float | bool | None)}


# --- train.entrypoint ---------------------------------------------------------------------------


@dataclass
class TorchBundle:
    """A trained module and (optionally) the fitted transformer that turns raw rows into its
    input; what ``ctx.torch_model`` returns."""

    module: Any
    preprocess: Any = None


@dataclass
class TrainContext:
    """What a ``train.entrypoint`` gets. Frames hold the raw columns the config selects."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series
    params: dict[str, Any]  # model.params with --overrides applied
    task: str  # "classification" | "regression"
    device: str  # "cuda" when a GPU is usable and not refused, else "cpu"
    seed: int
    run: Any  # the active mlflow.ActiveRun: mlflow.log_param/log_metric(...) land in it
    project_root: Path
    amp: str = field(default="off", init=False)  # set by fit_torch

    def fit_torch(self, module: Any, x: Any = None, y: Any = None, **opts: Any) -> Any:
        """Train ``module`` on ``x``/``y`` (default: the training split) with taskyard's loop.

        ``x``: a DataFrame or array of numbers (already preprocessed). Classification trains
        cross-entropy on the sorted class labels' codes, so the module must output one logit
        per class; regression trains MSE on one output. ``opts``: epochs, lr, batch_size,
        weight_decay (defaults: ``TORCH_TRAINING``; ``ctx.params`` are not read here).
        """
        import torch

        from taskyard.ml.torch_ import train_loop

        unknown = set(opts) - set(TORCH_TRAINING)
        if unknown:
            raise StepError(f"fit_torch: unknown options {', '.join(sorted(unknown))}")
        p = {**TORCH_TRAINING, **opts}
        xs = _float_tensor(self.x_train if x is None else x)
        ys, _ = _targets(self.y_train if y is None else y, self.task)
        torch.manual_seed(self.seed)
        self.amp = train_loop(
            module,
            xs,
            ys,
            p,
            classification=self.task == "classification",
            device=self.device,
            seed=self.seed,
        )
        return module

    def torch_model(self, module: Any, preprocess: Any = None) -> TorchBundle:
        """Return this from the entrypoint when a fitted transformer feeds the module."""
        return TorchBundle(module, preprocess)


def _float_tensor(x: Any) -> Any:
    import numpy as np
    import torch

    values = x.to_numpy() if hasattr(x, "to_numpy") else x
    if hasattr(values, "toarray"):  # a sparse matrix (one-hot encoders make them)
        values = values.toarray()
    try:
        return torch.from_numpy(np.asarray(values, dtype=np.float32).copy())
    except (TypeError, ValueError) as e:
        raise StepError(
            f"fit_torch needs numbers: {e}", "preprocess raw columns first (ctx.torch_model)"
        ) from None


def _targets(y: Any, task: str) -> tuple[Any, list | None]:
    """Class codes over the sorted labels (classification) or float column (regression)."""
    import numpy as np
    import torch

    values = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if task == "classification":
        classes, codes = np.unique(values, return_inverse=True)
        return torch.as_tensor(codes, dtype=torch.long), classes.tolist()
    return torch.from_numpy(values.astype(np.float32)).unsqueeze(1), None


def run_entrypoint(root: Path, ref: str, ctx: TrainContext) -> Any:
    """Call the entrypoint and wrap what it returns as something taskyard can log."""
    from taskyard.project import project_callable

    func = project_callable(root, ref, "train.entrypoint")
    try:
        model = func(ctx)
    except StepError:
        raise
    except Exception as e:
        raise StepError(f"train.entrypoint {ref} failed: {type(e).__name__}: {e}") from None
    device = ctx.device
    if _is_torch_module(model):
        model = TorchBundle(model)
    if isinstance(model, TorchBundle):
        _, classes = _targets(ctx.y_train, ctx.task)
        return CustomTorchModel(model, ctx, classes, device)
    try:
        import mlflow

        if isinstance(model, mlflow.pyfunc.PythonModel):
            return PythonModelFitted(model, root, dict(ctx.params))
    except ImportError:
        pass
    if _is_estimator(model):
        _check_task(model, ctx.task, f"train.entrypoint {ref}")
        return SklearnModel(model, _flat_params(model, ctx.params), root=root)
    raise StepError(
        f"train.entrypoint {ref} returned {type(model).__name__}",
        "return a fitted estimator, a torch nn.Module (or ctx.torch_model(...)), "
        "or an mlflow.pyfunc.PythonModel",
    )


class CustomTorchModel:
    """A project's torch module, exported with ``torch.export`` (+ its preprocessor)."""

    def __init__(self, bundle: TorchBundle, ctx: TrainContext, classes: list | None, device: str):
        self.bundle = bundle
        self.root = ctx.project_root
        self.meta = {
            "task": ctx.task,
            "features": [str(c) for c in ctx.x_train.columns],
            "classes": classes,
        }
        self.params = {**ctx.params, "amp": ctx.amp}
        self.device = device

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import skops.io
        import torch

        from taskyard.ml import torch_export_pyfunc as pyfunc_module

        module = self.bundle.module.cpu().eval()
        requirements = [*pins(("mlflow", "mlflow-skinny"), "torch", *BASE_REQUIREMENTS[1:])]
        with tempfile.TemporaryDirectory() as tmp:
            artifacts = {"meta": str(Path(tmp) / "meta.json"), "module": str(Path(tmp) / "m.pt2")}
            meta = dict(self.meta)
            sample = input_example
            code = None
            if self.bundle.preprocess is not None:
                data = skops.io.dumps(self.bundle.preprocess)
                types = trust.trusted(skops.io.get_untrusted_types(data=data), self.root)
                (Path(tmp) / "preprocess.skops").write_bytes(data)
                artifacts["preprocess"] = str(Path(tmp) / "preprocess.skops")
                meta["trusted"] = types
                requirements += [*pins("scikit-learn", "skops"), *trust.library_pins(types)]
                requirements += trust.requirement_pins(self.root)
                code = trust.code_paths(self.root, types) or None
                sample = self.bundle.preprocess.transform(input_example)
            example = _float_tensor(sample)
            if len(example) < 2:  # torch.export would specialise a batch of 1 to a constant
                example = example.repeat(2, 1)
            try:
                program = torch.export.export(
                    module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
                )
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise StepError(f"cannot export the torch module (torch.export): {first}") from None
            torch.export.save(program, artifacts["module"])
            Path(artifacts["meta"]).write_text(json.dumps(meta, indent=2))
            return log_code_model(
                name, pyfunc_module, artifacts, input_example, requirements, code_paths=code
            )


class PythonModelFitted:
    """A project's ``mlflow.pyfunc.PythonModel``, logged as MLflow does (cloudpickle)."""

    def __init__(self, model: Any, root: Path, params: dict[str, Any]) -> None:
        self.model, self.root, self.params, self.device = model, root, params, "cpu"

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import mlflow
        from mlflow.models import infer_signature

        try:
            output = self.model.predict(None, input_example)
        except Exception as e:
            raise StepError(f"the PythonModel cannot predict its input example: {e}") from None
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=self.model,
            code_paths=trust.code_paths(self.root) or None,
            signature=infer_signature(input_example, output),
            input_example=input_example,
            pip_requirements=sorted(
                {
                    *pins(("mlflow", "mlflow-skinny"), *BASE_REQUIREMENTS[1:]),
                    *trust.requirement_pins(self.root),
                }
            ),
        )


def device_for(requested: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu (``cuda`` without one: an error)."""
    return pick_device(requested, "torch")
