"""The project config, data loading, data hash and holdout that train and evaluate share."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard import project
from taskyard.errors import StepError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wine-classifier"
MINIMAL = '[project]\nname = "demo"\n[data]\nsource = "sklearn:load_wine"\n'


def write(tmp_path: Path, text: str, name: str = "taskyard.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(StepError) as e:
        project.load_frame(project.load(write(tmp_path, text)))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_example_config_loads():
    p = project.load(EXAMPLE)
    cfg = p.config
    assert cfg.project.name == "wine-classifier"
    assert cfg.model.framework == "sklearn"
    assert cfg.model.params == {"n_estimators": 100, "max_depth": 6}
    assert cfg.data.test_size == 0.25
    assert cfg.metric_name == "f1_macro"
    assert cfg.evaluate.min_score == 0.8
    assert cfg.experiment == "wine-classifier"


def test_defaults_fill_estimator_and_metric_per_task(tmp_path):
    cfg = project.load(write(tmp_path, MINIMAL)).config
    assert cfg.model.estimator == "sklearn.ensemble.RandomForestClassifier"
    assert cfg.metric_name == "f1_macro"
    reg = MINIMAL + '[model]\ntask = "regression"\n'
    cfg = project.load(write(tmp_path, reg)).config
    assert cfg.model.estimator == "sklearn.ensemble.RandomForestRegressor"
    assert cfg.metric_name == "rmse"
    assert cfg.evaluate.min_score is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[model]\nframework = "keras"\n', "model.framework: Input should be 'sklearn'"),
        ('[metric]\nname = "rmse"\n', "metric 'rmse' is for regression, not classification"),
        ('[metric]\nname = "auc"\n', "unknown metric 'auc'"),
        ('[model]\nframework = "torch"\nestimator = "x.Y"\n', "'estimator' is for framework"),
        ("[data.extra]\nx = 1\n", "data.extra: Extra inputs are not permitted"),
        ("[evaluate]\nmin-improvement = -1\n", "evaluate.min-improvement"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, extra, expected):
    assert expected in error_of(tmp_path, MINIMAL + extra)


def test_missing_config_file_and_bad_toml(tmp_path):
    with pytest.raises(StepError, match=r"taskyard\.toml not found"):
        project.load(tmp_path)
    with pytest.raises(StepError, match="invalid TOML"):
        project.load(write(tmp_path, "[project\n"))
    with pytest.raises(StepError, match="does not exist"):
        project.load(tmp_path, "nope")


def test_missing_target_column(tmp_path):
    text = MINIMAL.replace('"sklearn:load_wine"', '"sklearn:load_wine"\ntarget = "quality"')
    message = error_of(tmp_path, text)
    assert "column 'quality' not in the data (columns: alcohol" in message


def test_bad_loaders(tmp_path):
    assert "cannot import 'nowhere'" in error_of(
        tmp_path, MINIMAL.replace("sklearn:load_wine", "python:nowhere:load")
    )
    assert "must look like" in error_of(
        tmp_path, MINIMAL.replace("sklearn:load_wine", "python:nocolon")
    )
    assert "not a bundled scikit-learn dataset" in error_of(
        tmp_path, MINIMAL.replace("load_wine", "fetch_covtype")
    )
    assert "CSV file" in error_of(tmp_path, MINIMAL.replace("sklearn:load_wine", "csv:x.csv"))
    (tmp_path / "pkg.py").write_text("def load():\n    return [1, 2]\n")
    assert "returned list, expected a pandas DataFrame" in error_of(
        tmp_path, MINIMAL.replace("sklearn:load_wine", "python:pkg:load")
    )


def test_csv_source_and_non_numeric_features(tmp_path):
    (tmp_path / "d.csv").write_text(
        "a,b,target\n" + "".join(f"{i},x{i},{i % 2}\n" for i in range(8))
    )
    text = MINIMAL.replace("sklearn:load_wine", "csv:d.csv")
    assert "feature column 'b' is not numeric" in error_of(tmp_path, text)
    p = project.load(write(tmp_path, text + 'features = ["a"]\n'))
    frame = project.load_frame(p)
    assert list(frame.columns) == ["a", "b", "target"]
    assert list(project.holdout(p, frame).x_train.columns) == ["a"]


def test_python_loader_imports_from_the_project_folder(tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(EXAMPLE, other, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (other / "wine_classifier" / "data.py").write_text(
        "from sklearn.datasets import load_wine\n\n"
        "def load():\n    return load_wine(as_frame=True).frame.head(60)\n"
    )
    a = project.load_frame(project.load(EXAMPLE))
    b = project.load_frame(project.load(other))
    assert len(a) == 178 and len(b) == 60  # not the module cached from the first checkout
    assert "flavanoid_ratio" in a.columns


def test_data_hash_is_stable_and_sensitive():
    p = project.load(EXAMPLE)
    frame = project.load_frame(p)
    digest = project.data_hash(frame)
    assert digest == project.data_hash(project.load_frame(p))
    assert len(digest) == 64
    changed = frame.copy()
    changed.iloc[0, 0] += 0.001
    assert project.data_hash(changed) != digest
    assert project.data_hash(frame.rename(columns={"alcohol": "alc"})) != digest


def test_data_hash_is_the_same_in_another_process():
    code = (
        "from pathlib import Path; from taskyard import project; "
        f"p = project.load(Path({str(EXAMPLE)!r})); "
        "print(project.data_hash(project.load_frame(p)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    p = project.load(EXAMPLE)
    assert out.stdout.strip() == project.data_hash(project.load_frame(p))


def test_holdout_is_deterministic_and_stratified():
    p = project.load(EXAMPLE)
    frame = project.load_frame(p)
    a, b = project.holdout(p, frame), project.holdout(p, frame)
    assert list(a.x_test.index) == list(b.x_test.index)
    assert len(a.x_test) == 45 and len(a.x_train) == 133
    assert "target" not in a.x_train.columns
    full = frame["target"].value_counts(normalize=True)
    held = a.y_test.value_counts(normalize=True)
    assert (abs(full - held) < 0.03).all()


def test_holdout_needs_two_rows_per_class(tmp_path):
    (tmp_path / "d.csv").write_text("a,target\n1,0\n2,0\n3,1\n4,0\n")
    p = project.load(write(tmp_path, MINIMAL.replace("sklearn:load_wine", "csv:d.csv")))
    with pytest.raises(StepError, match="class '1' has a single row"):
        project.holdout(p, project.load_frame(p))
