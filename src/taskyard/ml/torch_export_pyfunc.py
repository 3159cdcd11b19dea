"""The pyfunc for a project's own torch module, exported with ``torch.export``.

MLflow copies THIS FILE into the model (a "model from code"), so it stays self-contained:
torch, numpy, pandas, mlflow, and skops when a preprocessor is bundled; no taskyard import.
Nothing here unpickles: the module is a ``torch.export`` program (its graph and weights, no
Python class needed to load it), the preprocessor a skops file loaded with the trusted types
recorded at train time, the rest JSON. Predictions are class labels (the argmax mapped back
to the sorted training labels) or values, like scikit-learn's ``predict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch


class ExportedTorchModel(mlflow.pyfunc.PythonModel):
    """Raw rows -> (preprocessor) -> float32 tensor -> module -> labels or values."""

    def load_context(self, context: Any) -> None:
        artifacts = context.artifacts
        self.meta = json.loads(Path(artifacts["meta"]).read_text())
        self.module = torch.export.load(artifacts["module"]).module()
        self.preprocess = None
        if "preprocess" in artifacts:
            import skops.io

            self.preprocess = skops.io.load(artifacts["preprocess"], trusted=self.meta["trusted"])
        self.classes_ = np.asarray(self.meta.get("classes") or [])

    def _forward(self, model_input: Any) -> torch.Tensor:
        frame = pd.DataFrame(model_input)
        if set(self.meta["features"]) <= set(map(str, frame.columns)):
            frame = frame[self.meta["features"]]
        values = self.preprocess.transform(frame) if self.preprocess is not None else frame
        if hasattr(values, "toarray"):  # a sparse matrix from a one-hot encoder
            values = values.toarray()
        x = torch.from_numpy(np.asarray(values, dtype=np.float32).copy())
        with torch.inference_mode():
            return self.module(x)

    def predict_proba(self, model_input: Any) -> np.ndarray:
        return torch.softmax(self._forward(model_input).float(), dim=1).numpy()

    # A DataFrame hint: MLflow infers no schema from it (the logged signature is the schema).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        out = self._forward(model_input).float()
        if self.meta["task"] == "classification":
            return self.classes_[out.argmax(dim=1).numpy()]
        return out[:, 0].numpy()


SERVED = ExportedTorchModel  # what taskyard.ml.log_code_model instantiates
mlflow.models.set_model(ExportedTorchModel())
