"""An ML project as the train and evaluate steps see it: config, data, hash and holdout.

Both steps call the same functions here, so the holdout the candidate is scored on in
``evaluate`` is, row for row, the one ``train`` held out.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskyard.errors import StepError
from taskyard.ml.metrics import METRICS, default_metric

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["classification", "regression"]
Framework = Literal["sklearn", "xgboost", "torch"]
DEFAULT_ESTIMATORS = {
    "classification": "sklearn.ensemble.RandomForestClassifier",
    "regression": "sklearn.ensemble.RandomForestRegressor",
}


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=_kebab, validate_by_name=True, validate_by_alias=True
    )


class ProjectSection(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    experiment: str | None = None


class DataSection(_Section):
    source: str = Field(pattern=r"^(python|sklearn|csv):.+")
    target: str = "target"
    features: list[str] | None = None
    parse_dates: list[str] = Field(default_factory=list)  # CSV columns read as datetimes
    test_size: float = Field(0.25, gt=0, lt=1)
    seed: int = 42


PYTHON_REF = r"^python:[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class ModelSection(_Section):
    framework: Framework = "sklearn"
    task: Task = "classification"
    estimator: str | None = None
    # The project's own model: ``python:pkg.module:function`` returning an UNFITTED
    # scikit-learn-compatible estimator (a Pipeline with its own ColumnTransformer, xgboost's
    # sklearn API, ...). taskyard fits it on the training split only.
    factory: str | None = Field(default=None, pattern=PYTHON_REF)
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSection(_Section):
    # Full control: ``python:pkg.module:function(ctx) -> fitted model`` (see taskyard.ml.custom).
    entrypoint: str | None = Field(default=None, pattern=PYTHON_REF)


class MetricSection(_Section):
    name: str | None = None


class EvaluateSection(_Section):
    min_score: float | None = None
    min_improvement: float = Field(0.0, ge=0)


class ProjectConfig(_Section):
    project: ProjectSection
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    metric: MetricSection = Field(default_factory=MetricSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    @model_validator(mode="after")
    def _model(self) -> ProjectConfig:
        m, entry = self.model, self.train.entrypoint
        if entry and (m.factory or m.estimator):
            raise ValueError("train.entrypoint builds the model: drop model.factory/estimator")
        if m.factory and m.estimator:
            raise ValueError("model.factory and model.estimator exclude each other")
        if m.factory and m.framework == "torch":
            raise ValueError(
                "model.factory returns a scikit-learn-compatible estimator; a torch model of "
                "the project's own trains through train.entrypoint (ctx.fit_torch)"
            )
        if m.framework != "sklearn" and m.estimator:
            raise ValueError(f"'estimator' is for framework 'sklearn', not {m.framework!r}")
        if m.framework == "sklearn" and not (m.factory or entry):
            m.estimator = m.estimator or DEFAULT_ESTIMATORS[m.task]
        return self

    @model_validator(mode="after")
    def _metric(self) -> ProjectConfig:
        task = self.model.task
        name = self.metric.name or default_metric(task)
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
        if METRICS[name].task != task:
            raise ValueError(f"metric {name!r} is for {METRICS[name].task}, not {task}")
        self.metric.name = name
        return self

    @property
    def own_model(self) -> bool:
        """The project brings its model (and so its own preprocessing of raw columns)."""
        return bool(self.model.factory or self.train.entrypoint)

    @property
    def metric_name(self) -> str:
        assert self.metric.name is not None  # set by the validator
        return self.metric.name

    @property
    def experiment(self) -> str:
        return self.project.experiment or self.project.name


@dataclass(frozen=True)
class Project:
    root: Path
    config_path: Path
    config: ProjectConfig

    @property
    def task(self) -> Task:
        return self.config.model.task


@dataclass(frozen=True)
class Holdout:
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if isinstance(e.get("input"), str | int | float) and e["type"] != "value_error":
            msg += f", got {e['input']!r}"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def load(source: Path, subdirectory: str = "", config: str = "taskyard.toml") -> Project:
    """Read and validate ``<source>/<subdirectory>/<config>``."""
    root = (source / subdirectory.strip()).resolve() if subdirectory.strip() else source.resolve()
    if not root.is_dir():
        raise StepError(f"project folder {root} does not exist", "check the subdirectory param")
    path = root / config
    if not path.is_file():
        raise StepError(f"project config {path} not found", "add a taskyard.toml to the project")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StepError(f"{path.name}: invalid TOML: {e}") from None
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as e:
        raise StepError(f"{path.name}: {_one_line(e)}") from None
    return Project(root=root, config_path=path, config=cfg)


# --- data --------------------------------------------------------------------------------------


def _as_frame(obj: Any, target: str, where: str) -> pd.DataFrame:
    """Accept a DataFrame, a scikit-learn Bunch with ``frame``, or an ``(X, y)`` pair."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj
    frame = getattr(obj, "frame", None)
    if isinstance(frame, pd.DataFrame):
        return frame
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], pd.DataFrame):
        return obj[0].assign(**{target: pd.Series(obj[1]).to_numpy()})
    raise StepError(
        f"data.source {where} returned {type(obj).__name__}, expected a pandas DataFrame"
    )


def project_callable(root: Path, ref: str, what: str) -> Any:
    """``pkg.module:function`` from the project folder (``python:`` prefix optional).

    The project's own package lives in its folder; it wins over anything installed, and over a
    same-named package imported earlier in this process from another checkout. The folder
    stays on ``sys.path``: the function may import its siblings later (a model's transformers
    at predict time).
    """
    spec = ref.removeprefix("python:")
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise StepError(f"{what} 'python:{spec}' must look like 'python:package.module:func'")
    top = module_name.split(".")[0]
    local = (root / top).is_dir() or (root / f"{top}.py").is_file()
    prefix = top + "."
    mine = [m for m in sys.modules if m == top or m.startswith(prefix)] if local else []
    for name in mine:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if not Path(origin).resolve().is_relative_to(root):
            del sys.modules[name]
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))  # first: before another checkout's folder from earlier
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise StepError(f"{what}: cannot import {module_name!r} from {root}: {e}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise StepError(f"{what}: {module_name} has no function {func_name!r}")
    return func


def _python_loader(root: Path, spec: str, target: str) -> pd.DataFrame:
    func = project_callable(root, spec, "data.source")
    try:
        result = func()
    except Exception as e:
        raise StepError(f"data.source python:{spec} failed: {type(e).__name__}: {e}") from None
    return _as_frame(result, target, f"python:{spec}")


def _sklearn_loader(name: str, target: str) -> pd.DataFrame:
    from sklearn import datasets

    # fetch_* download from the internet; only the bundled load_* sets are deterministic here.
    func = getattr(datasets, name, None) if name.startswith("load_") else None
    if not callable(func):
        raise StepError(
            f"data.source: sklearn:{name} is not a bundled scikit-learn dataset",
            "use a load_* function such as sklearn:load_wine",
        )
    try:
        frame = func(as_frame=True).frame
    except TypeError:
        raise StepError(f"data.source: sklearn:{name} has no tabular frame") from None
    if frame is None:
        raise StepError(f"data.source: sklearn:{name} has no tabular frame")
    return frame


def _csv_loader(root: Path, rel: str, dates: list[str]) -> pd.DataFrame:
    import pandas as pd

    path = (root / rel).resolve()
    if not path.is_file():
        raise StepError(f"data.source: CSV file {path} not found")
    try:
        return pd.read_csv(path, parse_dates=dates or False)
    except (ValueError, pd.errors.ParserError) as e:
        raise StepError(f"data.source: cannot read {path.name}: {e}") from None


def load_frame(project: Project) -> pd.DataFrame:
    """Load the data and check it has the target and the features the config names.

    Built-in models need numeric features; a project model (``model.factory`` or
    ``train.entrypoint``) takes the raw columns, strings and datetimes included.
    """
    data = project.config.data
    kind, _, spec = data.source.partition(":")
    if kind == "python":
        frame = _python_loader(project.root, spec, data.target)
    elif kind == "sklearn":
        frame = _sklearn_loader(spec, data.target)
    else:
        frame = _csv_loader(project.root, spec, data.parse_dates)
    if frame.empty:
        raise StepError(f"data.source {data.source} returned no rows")
    cols = [str(c) for c in frame.columns]
    if data.target not in cols:
        shown = ", ".join(cols[:8]) + (", ..." if len(cols) > 8 else "")
        raise StepError(f"data.target: column {data.target!r} not in the data (columns: {shown})")
    missing = [f for f in (data.features or []) if f not in cols]
    if missing:
        raise StepError(f"data.features: columns not in the data: {', '.join(missing)}")
    if frame[data.target].isna().any():
        raise StepError(f"data.target: column {data.target!r} has missing values")
    if project.config.own_model:
        return frame  # raw columns are the project model's business (its own preprocessing)
    for col in feature_columns(project, frame):
        if frame[col].dtype.kind not in "biuf":
            raise StepError(
                f"data: feature column {col!r} is not numeric ({frame[col].dtype})",
                "encode it in a model.factory pipeline (e.g. a ColumnTransformer)",
            )
    return frame


def feature_columns(project: Project, frame: pd.DataFrame) -> list[str]:
    data = project.config.data
    return list(data.features or [c for c in frame.columns if c != data.target])


def data_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the frame's columns, dtypes and values in row order (stable across runs)."""
    import pandas as pd

    h = hashlib.sha256()
    for col, dtype in frame.dtypes.items():
        h.update(f"{col}\0{dtype}\n".encode())
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    h.update(rows.astype("<u8").tobytes())
    return h.hexdigest()


def holdout(project: Project, frame: pd.DataFrame) -> Holdout:
    """The deterministic train/holdout split (stratified for classification)."""
    from sklearn.model_selection import train_test_split

    data = project.config.data
    x = frame[feature_columns(project, frame)]
    y = frame[data.target]
    stratify = None
    if project.task == "classification":
        counts = y.value_counts()
        if len(counts) < 2:
            raise StepError(f"data.target: classification needs 2+ classes, found {len(counts)}")
        if counts.min() < 2:
            raise StepError(
                f"data.target: class '{counts.idxmin()}' has a single row; "
                "a stratified holdout needs at least 2 per class"
            )
        stratify = y
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=data.test_size, random_state=data.seed, stratify=stratify
        )
    except ValueError as e:
        raise StepError(f"data: cannot split a holdout: {e}") from None
    return Holdout(x_train, x_test, y_train, y_test)
