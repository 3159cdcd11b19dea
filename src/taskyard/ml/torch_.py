"""torch: a small seeded MLP, with CUDA + mixed precision when a GPU is there.

On CUDA the forward pass runs under autocast: bf16 where the GPU supports it (no loss scaling
needed), else fp16 with a GradScaler. On the CPU it trains in fp32. The logged model always
predicts on the CPU in fp32 (see ``torch_pyfunc``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskyard.errors import StepError
from taskyard.ml import BASE_REQUIREMENTS, FitSpec, pick_device, pins

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

DEFAULTS: dict[str, Any] = {
    "hidden": [64, 32],
    "epochs": 100,
    "lr": 0.01,
    "batch_size": 32,
    "weight_decay": 0.0,
}


def _hidden(value: Any) -> list[int]:
    """``64``, ``[64, 32]`` or ``"64x32"`` (commas separate overrides, so ``x`` here)."""
    try:
        if isinstance(value, int | float):
            sizes = [int(value)]
        elif isinstance(value, str):
            sizes = [int(v) for v in value.replace(" ", "x").split("x") if v]
        else:
            sizes = [int(v) for v in value]
    except (TypeError, ValueError):
        raise StepError(f"hyperparameter hidden={value!r}: expected sizes like 64x32") from None
    if not sizes or min(sizes) < 1:
        raise StepError(f"hyperparameter hidden={value!r}: sizes must be positive")
    return sizes


def resolve_params(given: dict[str, Any]) -> dict[str, Any]:
    from taskyard.ml import check_params

    given = {k.replace("-", "_"): v for k, v in given.items()}
    check_params(given, DEFAULTS, "the torch MLP")
    p = {**DEFAULTS, **given}
    p["hidden"] = _hidden(p["hidden"])
    try:
        p["epochs"], p["batch_size"] = int(p["epochs"]), int(p["batch_size"])
        p["lr"], p["weight_decay"] = float(p["lr"]), float(p["weight_decay"])
    except (TypeError, ValueError) as e:
        raise StepError(f"torch hyperparameters: {e}") from None
    if p["epochs"] < 1 or p["batch_size"] < 1 or p["lr"] <= 0:
        raise StepError("torch hyperparameters: epochs, batch_size and lr must be positive")
    return p


class TorchModel:
    def __init__(self, net: Any, meta: dict[str, Any], params: dict[str, Any], device: str):
        self.net = net
        self.meta = meta
        self.params = {**params, "hidden": "x".join(map(str, params["hidden"]))}
        self.device = device

    def log_model(self, name: str, input_example: pd.DataFrame) -> ModelInfo:
        import torch

        from taskyard.ml import log_code_model, torch_pyfunc

        with tempfile.TemporaryDirectory() as tmp:
            weights, meta = Path(tmp) / "weights.pt", Path(tmp) / "meta.json"
            torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, weights)
            meta.write_text(json.dumps(self.meta, indent=2))
            artifacts = {"weights": str(weights), "meta": str(meta)}
            requirements = pins(("mlflow", "mlflow-skinny"), "torch", *BASE_REQUIREMENTS[1:])
            return log_code_model(name, torch_pyfunc, artifacts, input_example, requirements)


def fit(spec: FitSpec, x: pd.DataFrame, y: pd.Series) -> TorchModel:
    import numpy as np
    import torch

    from taskyard.ml.torch_pyfunc import MLP

    p = resolve_params(spec.params)
    device = pick_device(spec.device, "torch")
    torch.manual_seed(spec.seed)
    classification = spec.task == "classification"
    xs = torch.from_numpy(x.to_numpy(dtype=np.float32, copy=True))
    if classification:
        classes, codes = np.unique(y.to_numpy(), return_inverse=True)
        ys = torch.as_tensor(codes, dtype=torch.long)
        n_out = len(classes)
    else:
        classes, n_out = None, 1
        ys = torch.from_numpy(y.to_numpy(dtype=np.float32, copy=True)).unsqueeze(1)
    net = MLP(xs.shape[1], p["hidden"], n_out)
    net.x_mean.copy_(xs.mean(0))
    net.x_std.copy_(xs.std(0).clamp_min(1e-6))
    if not classification:
        net.y_mean.copy_(ys.mean(0))
        net.y_std.copy_(ys.std(0).clamp_min(1e-6))
        ys = (ys - net.y_mean) / net.y_std
    amp = train_loop(net, xs, ys, p, classification=classification, device=device, seed=spec.seed)
    net.eval()
    meta = {
        "task": spec.task,
        "features": [str(c) for c in x.columns],
        "hidden": p["hidden"],
        "classes": None if classes is None else classes.tolist(),
    }
    info = {**p, "amp": amp}
    return TorchModel(net, meta, info, device)


def train_loop(
    net: Any,
    xs: Any,
    ys: Any,
    p: dict[str, Any],
    *,
    classification: bool,
    device: str,
    seed: int,
) -> str:
    """Train ``net`` in place (AdamW, seeded shuffling); return the AMP dtype used or "off".

    The one loop for taskyard's MLP and a project's own module (``ctx.fit_torch``). ``net``
    ends on the CPU in eval mode.
    """
    import torch

    net, xs, ys = net.to(device), xs.to(device), ys.to(device)
    amp = device == "cuda"
    dtype = torch.bfloat16  # also the (unused) autocast dtype on the CPU
    if amp and not torch.cuda.is_bf16_supported():
        dtype = torch.float16  # pre-Ampere GPUs: fp16, with loss scaling below
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    gen = torch.Generator().manual_seed(seed)  # shuffling is seeded too
    net.train()
    for _ in range(p["epochs"]):
        for idx in torch.randperm(len(xs), generator=gen).split(p["batch_size"]):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device, dtype=dtype, enabled=amp):
                loss = loss_fn(net(xs[idx]).float(), ys[idx])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    net.cpu().eval()
    return str(dtype).removeprefix("torch.") if amp else "off"
