"""checkov's Kubernetes checks on everything ``taskyard render`` writes: none may fail unless
``tools/checkov/skips.yaml`` skips it with a reason. checkov lives in its own venv
(``make test`` creates tools/checkov/.venv); outside CI a missing install skips, in CI it fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from taskyard.render import emit

ROOT = Path(__file__).resolve().parents[1]
CHECKOV = ROOT / "tools" / "checkov" / ".venv" / "bin" / "checkov"
SKIPS = ROOT / "tools" / "checkov" / "skips.yaml"


def skips() -> dict[str, str]:
    data = yaml.safe_load(SKIPS.read_text())
    bad = [k for k, v in data.items() if not str(v).strip()]
    assert not bad, f"a skip without a reason: {bad}"
    return data


def checkov(folder: Path) -> list[dict]:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV.relative_to(ROOT)} missing in CI: run `make test`")
        pytest.skip("checkov not installed: `make test` creates tools/checkov/.venv")
    cmd = [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "--output", "json"]
    cmd += ["--skip-download", "--skip-check", ",".join(skips()), "--quiet", "--compact"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # no calls home for guidelines (offline)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: checks failed
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    if not any(r.get("check_type") == "kubernetes" for r in reports):
        return []  # checkov prints a bare summary when it finds no resource
    return [f for r in reports for f in r["results"]["failed_checks"]]


def test_rendered_yaml_passes_checkov(tmp_path: Path) -> None:
    emit.write(tmp_path)  # a fresh render: exactly what `taskyard render` commits
    failed = checkov(tmp_path)
    lines = sorted(
        f"{f['check_id']} {f['file_path']} {f['resource']}: {f['check_name']}" for f in failed
    )
    assert lines == [], "checkov failed checks:\n" + "\n".join(lines)


def test_checkov_catches_a_planted_privileged_pod(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad"},
        "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]
        },
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    assert "CKV_K8S_16" in {f["check_id"] for f in checkov(tmp_path)}  # privileged container
