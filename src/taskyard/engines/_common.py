"""What both emulations share: strict field checks, Go durations, documents, host folders."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from taskyard.errors import RunError


class Unsupported(RunError):
    """A field the emulation does not implement: named, never skipped silently."""


def fields(
    obj: Any, where: str, allowed: Iterable[str], ignored: Iterable[str] = ()
) -> Mapping[str, Any]:
    """``obj`` as a mapping whose keys are all in ``allowed`` or ``ignored``, else one line.

    ``ignored`` are fields with no effect on one machine (scheduling hints, cluster
    bookkeeping); everything else that is not implemented is an error naming the field.
    """
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise RunError(f"{where}: expected a mapping, got {type(obj).__name__}")
    known = set(allowed) | set(ignored)
    for key in obj:
        if key not in known:
            raise Unsupported(f"{where}.{key} is not supported by taskyard run")
    return obj


def items(obj: Any, where: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise RunError(f"{where}: expected a list, got {type(obj).__name__}")
    return obj


def text(obj: Any, where: str) -> str:
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int | float):
        return str(obj)
    if not isinstance(obj, str):
        raise RunError(f"{where}: expected a string, got {type(obj).__name__}")
    return obj


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(value: Any, where: str) -> float:
    """A Go ``time.Duration`` string (Tekton's timeouts: ``1h30m``, ``90s``; ``0`` = none)."""
    raw = text(value, where).strip()
    if raw == "0":
        return 0.0
    parts = _DURATION.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise RunError(f"{where}: {raw!r} is not a duration like 1h30m or 90s")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def load_documents(paths: Iterable[Path]) -> list[tuple[Path, dict]]:
    """Every YAML document of the files; of a folder's ``*.yaml``, the Kubernetes objects.

    A folder (the catalog's ``tasks/``) may hold other YAML (``artifacthub-repo.yml``,
    ``kustomization.yaml``): those are passed over, while a file named alone must parse.
    """
    out: list[tuple[Path, dict]] = []
    for path in paths:
        if path.is_file():
            out += [(path, d) for d in parse_yaml(path.read_text(), str(path))]
            continue
        if not path.is_dir():
            raise RunError(f"no such file: {path}")
        for f in sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")):
            try:
                docs = list(yaml.safe_load_all(f.read_text()))
            except yaml.YAMLError:
                continue
            out += [
                (f, d) for d in docs if isinstance(d, dict) and "kind" in d and "apiVersion" in d
            ]
    return out


def parse_yaml(source: str, where: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(source) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise RunError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            raise RunError(f"{where}: every document must be a Kubernetes object with a kind")
    return docs


def git_show(root: Path, revision: str, path: str) -> str:
    """A file at a revision of a local repository: what the git resolver fetches."""
    proc = subprocess.run(
        ["git", "-C", str(root), "show", f"{revision}:{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise RunError(f"git resolver: {path} at {revision!r} in {root}: {last}")
    return proc.stdout


def local_repo(url: str, roots: Mapping[str, Path]) -> Path:
    """The local clone a git-resolver URL maps to (``--git-repo URL=DIR``, or a local URL)."""
    if url in roots:
        return roots[url]
    local = url.removeprefix("file://")
    if local.startswith("/") and Path(local).exists():
        return Path(local)
    raise RunError(
        f"git resolver: {url} is not reachable from here",
        f"map it to a local clone with --git-repo {url}=PATH",
    )


def shared_folder(path: Path) -> Path:
    """A folder any container user may write to, as a fresh emptyDir/PVC is (mode 0777)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    return path


# A container's securityContext fields the emulation honours (Kubernetes core/v1
# SecurityContext); the rest (seLinuxOptions, windowsOptions, procMount, ...) are errors.
SECURITY_FIELDS = (
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "capabilities",
    "readOnlyRootFilesystem",
    "seccompProfile",
    "privileged",
)


def security(sec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A merged (pod under container) securityContext as :class:`Container` arguments."""
    if sec.get("privileged"):
        raise Unsupported(f"{where}.privileged is not supported by taskyard run")
    caps = fields(sec.get("capabilities"), f"{where}.capabilities", ("drop",))
    seccomp = fields(sec.get("seccompProfile"), f"{where}.seccompProfile", ("type",))
    kind = seccomp.get("type", "RuntimeDefault")
    if kind not in ("RuntimeDefault", "Unconfined"):
        raise Unsupported(f"{where}.seccompProfile.type {kind!r} is not supported by taskyard run")
    return {
        "seccomp": kind,
        "user": sec.get("runAsUser"),
        "group": sec.get("runAsGroup"),
        "run_as_non_root": bool(sec.get("runAsNonRoot")),
        "cap_drop": tuple(caps.get("drop") or ()),
        "no_new_privileges": sec.get("allowPrivilegeEscalation") is False,
        "read_only_root": bool(sec.get("readOnlyRootFilesystem")),
    }


def gpu_limit(resources: Any) -> int:
    """``limits["nvidia.com/gpu"]`` of a container's resources (0 when none)."""
    limits = (resources or {}).get("limits") or {}
    return int(str(limits.get("nvidia.com/gpu", 0) or 0))
