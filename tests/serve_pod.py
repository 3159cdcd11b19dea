"""Run a rendered model-server container spec as a pod would: its own network namespace.

A pod is containers sharing one network namespace. Here the namespace belongs to an MLflow
server container (``--network none``: loopback only, nothing bound on the host), and the model
server joins it (``--network container:…``) started from the Deployment's container spec, field
by field: image, command (entrypoint), args, env, user/group, capabilities,
no-new-privileges, read-only root, the emptyDir mounts. A prober joins the same namespace and
polls the probe URLs the spec names. Used by tests/test_docker_executor.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from taskyard.engines._common import security, shared_folder
from taskyard.run.docker import container_suffix

REGISTER = """
import json, time, mlflow
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
for _ in range(120):
    try:
        mlflow.MlflowClient().search_experiments(max_results=1); break
    except Exception:
        time.sleep(0.5)
x, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=500).fit(x, y)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x, y),
                                    input_example=x.head(2), registered_model_name=NAME)
client = mlflow.MlflowClient()
client.set_registered_model_alias(NAME, "champion", "1")
rows = x.iloc[[0, 60, 120]]
print(json.dumps({"columns": list(x.columns), "rows": rows.values.tolist(),
                  "expected": model.predict(rows).tolist()}))
"""

PROBE = """
import json, sys, time, urllib.request, urllib.error
ready, live, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""
seen, live_seen, deadline = [], [], time.monotonic() + 180
while time.monotonic() < deadline:
    status, _ = get(ready)
    seen.append(status)
    live_seen.append(get(live)[0])
    if status == 200:
        break
    time.sleep(0.05)
answers = []
for _ in range(3):
    req = urllib.request.Request(ready.rsplit("/", 1)[0] + "/invocations",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        answers.append(json.loads(r.read())["predictions"])
metrics = get(ready.rsplit("/", 1)[0] + "/metrics")[1]
print(json.dumps({"readiness": seen, "liveness": live_seen, "answers": answers,
                  "metrics": metrics}))
"""


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {args[0]} failed: {proc.stderr[-2000:]}")
    return proc


def run_argv(ctr: dict[str, Any], pod: dict[str, Any], scratch: Path, name: str, net: str):
    """``docker run`` for one container of a pod spec; nothing added that the spec lacks."""
    sec = security({**pod.get("securityContext", {}), **ctr.get("securityContext", {})}, "ctr")
    argv = ["run", "-d", "--init", "--name", name, "--network", f"container:{net}"]
    if sec["user"] is not None:
        argv += ["--user", f"{sec['user']}" + (f":{sec['group']}" if sec["group"] else "")]
    for cap in sec["cap_drop"]:
        argv += ["--cap-drop", cap]
    if sec["no_new_privileges"]:
        argv += ["--security-opt", "no-new-privileges"]
    if sec["read_only_root"]:
        argv += ["--read-only"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in ctr.get("volumeMounts", []):
        assert "emptyDir" in volumes[mount["name"]], "only emptyDir volumes are expected"
        host = shared_folder(scratch / mount["name"])  # a fresh emptyDir: empty, writable
        argv += ["-v", f"{host}:{mount['mountPath']}"]
    for env in ctr.get("env", []):
        argv += ["-e", f"{env['name']}={env['value']}"]
    command = ctr.get("command") or []
    if command:
        argv += ["--entrypoint", command[0]]
    return [*argv, ctr["image"], *command[1:], *ctr.get("args", [])]


class Pod:
    """The MLflow 'sidecar' that owns the network namespace, and the containers that join it."""

    def __init__(self, image: str, scratch: Path, port: int = 5000) -> None:
        self.image, self.scratch, self.port = image, scratch, port
        self.net = "taskyard-pod" + container_suffix()
        self.names = [self.net]
        store = shared_folder(scratch / "store")
        docker(
            "run", "-d", "--init", "--name", self.net, "--network", "none",
            "-v", f"{store}:/store", "-e", "HOME=/store", image,
            "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", "sqlite:////store/mlflow.db",
            "--serve-artifacts", "--artifacts-destination", "/store/artifacts",
            "--workers", "1",
        )  # fmt: skip

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def python(self, script: str, *args: str, env: dict[str, str] | None = None) -> str:
        flags = [x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")]
        proc = docker(
            "run", "--rm", "--network", f"container:{self.net}", "-e", "HOME=/tmp",
            "-e", f"MLFLOW_TRACKING_URI={self.tracking_uri}", *flags, self.image,
            "python", "-c", script, *args, timeout=600,
        )  # fmt: skip
        return proc.stdout.strip().splitlines()[-1]

    def register(self, name: str) -> dict[str, Any]:
        return json.loads(self.python(f"NAME = {name!r}\n{REGISTER}"))

    def start(self, ctr: dict[str, Any], pod: dict[str, Any]) -> str:
        name = "taskyard-model-server" + container_suffix()
        self.names.append(name)
        docker(*run_argv(ctr, pod, self.scratch / "pod", name, self.net))
        return name

    def logs(self, name: str) -> str:
        proc = docker("logs", name, check=False)
        return proc.stdout + proc.stderr

    def stop(self) -> None:
        for name in reversed(self.names):
            docker("rm", "-f", name, check=False)
