"""Probing a started model server: wait until healthy, build a smoke request, send it.

The smoke request comes from the model itself (its logged serving example, else one row built
from its signature), so it needs no knowledge of the project; the answer must predict every row.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from taskyard.deployments import Deployment, running
from taskyard.errors import StepError

SMOKE_PREVIEW_BYTES = 300


def last_log_line(dep: Deployment) -> str:
    try:
        lines = [ln.strip() for ln in Path(dep.log).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def wait_healthy(dep: Deployment, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll ``/health`` until 200; fail fast when the server process dies.

    The server (:mod:`taskyard.serving`) listens at once and answers ``/health`` with 503
    while the model loads, so a connection alone means nothing: only 200 is "ready". A model
    that cannot load ends the server (exit 1), and its one ``error:`` line is the log's last.
    """
    deadline = time.monotonic() + timeout
    pause = 0.05  # a warm server is healthy in well under a second: look soon, then less often
    while True:
        exited = proc.poll() if proc is not None else (None if running(dep.pid) else -1)
        if exited is not None:
            tail = last_log_line(dep)
            raise StepError(
                f"the model server exited (code {exited}) before becoming healthy"
                + (f": {tail}" if tail else "")
            )
        try:
            with urllib.request.urlopen(dep.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):  # HTTPError (503: loading) is one of them
            pass
        if time.monotonic() > deadline:
            tail = last_log_line(dep)
            raise StepError(
                f"the model server at {dep.url} was not healthy after {timeout:.0f}s"
                + (f" (last log line: {tail})" if tail else "")
            )
        time.sleep(pause)
        pause = min(0.5, pause * 2)


def _sample(type_name: str) -> Any:
    t = type_name.lower()
    if t in ("boolean", "bool"):
        return False
    if t.startswith(("int", "long", "uint")):
        return 0
    if t.startswith(("float", "double")):
        return 0.0
    if t in ("datetime",):
        return "2024-01-01T00:00:00"
    return "a"


def _tensor(dtype: str, shape: tuple[int, ...]) -> Any:
    value = _sample(dtype)
    dims = [1 if d is None or d < 0 else d for d in shape] or [1]
    for d in reversed(dims):
        value = [value] * d
    return value


def payload_from_schema(schema: Any) -> dict[str, Any]:
    """One synthetic row from the signature's input schema, in the serving JSON format."""
    from mlflow.types.schema import ColSpec, TensorSpec

    inputs = schema.inputs
    if inputs and all(isinstance(i, TensorSpec) for i in inputs):
        if len(inputs) == 1 and not inputs[0].name:
            return {"inputs": _tensor(str(inputs[0].type), inputs[0].shape)}
        return {"inputs": {i.name: _tensor(str(i.type), i.shape) for i in inputs}}
    row = []
    for col in inputs:
        t = col.type
        row.append(_sample(t.name if isinstance(col, ColSpec) and hasattr(t, "name") else str(t)))
    names = [c.name for c in inputs]
    if all(names):
        return {"dataframe_split": {"columns": names, "data": [row]}}
    return {"inputs": [row]}


def smoke_payload(model_uri: str) -> dict[str, Any]:
    """The logged serving example if the model has one, else a row built from its signature."""
    from mlflow.models import Model
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        meta = Model.load(model_uri)
    except Exception as e:
        raise StepError(f"cannot read the MLmodel of {model_uri}: {str(e).splitlines()[0]}") from e
    example = (meta.saved_input_example_info or {}).get("serving_input_path")
    if example:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = get_artifact_repository(model_uri).download_artifacts(example, tmp)
                return json.loads(Path(path).read_text())
            except Exception:
                pass  # fall back to the signature
    if meta.signature is None or meta.signature.inputs is None:
        raise StepError(
            f"{model_uri} has neither an input example nor a signature; cannot build a smoke "
            "request (log the model with a signature)"
        )
    return payload_from_schema(meta.signature.inputs)


def _rows(payload: dict[str, Any]) -> int | None:
    if "dataframe_split" in payload:
        return len(payload["dataframe_split"].get("data", []))
    for key in ("dataframe_records", "instances", "inputs"):
        value = payload.get(key)
        if isinstance(value, list):
            return len(value)
    return None


def _http_error(e: urllib.error.HTTPError) -> str:
    """The scoring server's message, plus the exception it caught (last traceback line)."""
    text = e.read().decode(errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:200] if text else e.reason
    message = str(body.get("message", "")).strip().splitlines()
    trace = [ln.strip() for ln in str(body.get("stack_trace", "")).splitlines() if ln.strip()]
    head = message[0][:200] if message else str(e.reason)
    return f"{head} (cause: {trace[-1][:200]})" if trace else head


def smoke(dep: Deployment, payload: dict[str, Any], timeout: float = 60.0) -> str:
    """POST the payload to /invocations; return the answer's text when it predicts every row."""
    return smoke_url(dep.url, payload, timeout)


def smoke_url(url: str, payload: dict[str, Any], timeout: float = 60.0) -> str:
    """:func:`smoke` against a base URL (a cluster Service, an InferenceService address)."""
    url = url.rstrip("/")
    req = urllib.request.Request(
        url + "/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        raise StepError(f"smoke request got HTTP {e.code}: {_http_error(e)}") from e
    except OSError as e:
        raise StepError(f"smoke request to {url}/invocations failed: {e}") from e
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise StepError(f"smoke answer is not JSON: {body[:100]!r}") from e
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if preds is None:
        raise StepError(f"smoke answer has no predictions: {body[:100]!r}")
    want = _rows(payload)
    got = len(preds) if isinstance(preds, list) else None
    if isinstance(preds, dict):  # one list per named output
        lens = {len(v) for v in preds.values() if isinstance(v, list)}
        got = lens.pop() if len(lens) == 1 else None
    if want is not None and got != want:
        raise StepError(f"smoke answer has {got} predictions for {want} rows")
    if want is None and not preds:
        raise StepError("smoke answer has no predictions")
    return body[:SMOKE_PREVIEW_BYTES]
