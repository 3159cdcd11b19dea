"""What a logged model may hold, and what it needs to load: skops trust, code, requirements.

skops loads only types on an allow-list (unlike pickle, a champion pulled from the registry
cannot run arbitrary code). The list is derived, type by type, from what the model holds:

- the libraries taskyard trains with (scikit-learn, NumPy, SciPy, xgboost, pandas) and Python's
  own containers;
- the project's own modules (files under the project folder): its transformers and functions;
- the packages the project declares in its requirements (``requirements.txt`` or
  ``pyproject.toml``), e.g. a third-party encoder it depends on.

Anything else fails at train time with the type named, not at serving time. The project's
packages travel with the model (MLflow ``code_paths``), so the serving process imports the same
code; the declared distributions are pinned at their installed versions.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from taskyard.errors import StepError

LIBRARIES = ("sklearn", "numpy", "scipy", "xgboost", "pandas", "builtins", "collections")
REQUIREMENT_FILES = ("requirements.txt", "pyproject.toml")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def declared_distributions(root: Path) -> list[str]:
    """Distribution names the project's requirements file lists (no versions, no extras)."""
    req = root / "requirements.txt"
    lines: list[str] = []
    if req.is_file():
        lines = [ln for ln in req.read_text().splitlines() if not ln.strip().startswith("-")]
    elif (root / "pyproject.toml").is_file():
        try:
            data = tomllib.loads((root / "pyproject.toml").read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return []
        lines = list(data.get("project", {}).get("dependencies", []) or [])
    names = []
    for line in lines:
        m = _NAME.match(line.split("#", 1)[0])
        if m:
            names.append(m.group(1))
    return names


def _top_packages(distributions: Iterable[str]) -> set[str]:
    """Import names of installed distributions (``scikit-learn`` -> ``sklearn``)."""
    wanted = {d.lower().replace("_", "-") for d in distributions}
    tops = set()
    for top, dists in metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in wanted for d in dists):
            tops.add(top)
    return tops


def project_modules(root: Path) -> set[str]:
    """Top-level names of the project's own modules that are imported now."""
    root = root.resolve()
    tops = set()
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(root):
            tops.add(name.split(".")[0])
    return tops


def trusted(untrusted: Iterable[str], root: Path | None) -> list[str]:
    """The types skops may rebuild for this model; StepError naming any other type.

    ``root`` None: a built-in model, which may hold library types only.
    """
    allowed = set(LIBRARIES)
    if root is not None:
        allowed |= project_modules(root) | _top_packages(declared_distributions(root))
    types = sorted(set(untrusted))
    odd = [t for t in types if t.split(".")[0] not in allowed]
    if odd:
        raise StepError(
            f"the model holds types skops will not load safely: {', '.join(odd)}",
            "declare the package in the project's requirements, or keep to scikit-learn types",
        )
    return types


def code_paths(root: Path, types: Iterable[str] = ()) -> list[str]:
    """The project's package folders/modules a model needs at load time.

    With ``types``: only the packages those types come from; without: every project module
    imported now (a PythonModel may reach any of them).
    """
    mine = project_modules(root)
    tops = {t.split(".")[0] for t in types} & mine if types else mine
    out = []
    for top in sorted(tops):
        for candidate in (root / top, root / f"{top}.py"):
            if candidate.exists():
                out.append(str(candidate))
                break
    return out


def requirement_pins(root: Path) -> list[str]:
    """``name==version`` of each declared distribution that is installed here."""
    out = []
    for name in declared_distributions(root):
        try:
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return out


def library_pins(types: Iterable[str]) -> list[str]:
    """Pins for the training libraries the types come from (xgboost only when used)."""
    from taskyard.ml import pins

    tops = {t.split(".")[0] for t in types}
    return pins(("xgboost", "xgboost-cpu")) if "xgboost" in tops else []
