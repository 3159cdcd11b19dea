"""The torch MLP and its MLflow pyfunc, logged as a "model from code".

MLflow copies THIS FILE into the model, so it must stay self-contained (torch, numpy, pandas,
mlflow; no taskyard import): the logged model then loads and serves where taskyard is not
installed. Weights are a plain ``state_dict`` loaded with ``weights_only=True`` and the rest is
JSON, so loading runs no pickle. Standardisation lives in the network's buffers, and the pyfunc
maps the argmax back to the class labels, so ``predict`` returns labels like scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn


class MLP(nn.Module):
    """Standardise -> [Linear -> ReLU]* -> Linear; for regression, de-standardise the output."""

    def __init__(self, n_in: int, hidden: list[int], n_out: int) -> None:
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(n_in))
        self.register_buffer("x_std", torch.ones(n_in))
        self.register_buffer("y_mean", torch.zeros(1))
        self.register_buffer("y_std", torch.ones(1))
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (classification) or standardised targets (regression)."""
        return self.net((x - self.x_mean) / self.x_std)

    def unscale(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.y_std + self.y_mean


def build(meta: dict[str, Any]) -> MLP:
    n_out = len(meta["classes"]) if meta["task"] == "classification" else 1
    return MLP(len(meta["features"]), list(meta["hidden"]), n_out)


class TorchMLPModel(mlflow.pyfunc.PythonModel):
    """Predicts class labels (classification) or values (regression) on the CPU."""

    def load_context(self, context: Any) -> None:
        self.meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.net = build(self.meta)
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.eval()
        self.classes_ = np.asarray(self.meta.get("classes") or [])

    def _forward(self, model_input: Any) -> torch.Tensor:
        frame = pd.DataFrame(model_input)
        if set(self.meta["features"]) <= set(map(str, frame.columns)):
            frame = frame[self.meta["features"]]
        x = torch.from_numpy(frame.to_numpy(dtype=np.float32, copy=True))
        with torch.inference_mode():
            return self.net(x)

    def predict_proba(self, model_input: Any) -> np.ndarray:
        return torch.softmax(self._forward(model_input).float(), dim=1).numpy()

    # A DataFrame hint: MLflow infers no schema from it (the logged signature is the schema).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        out = self._forward(model_input)
        if self.meta["task"] == "classification":
            return self.classes_[out.argmax(dim=1).numpy()]
        return self.net.unscale(out).squeeze(1).numpy()


SERVED = TorchMLPModel  # what taskyard.ml.log_code_model instantiates
mlflow.models.set_model(TorchMLPModel())
