"""The project's own environment: its requirements layered over taskyard's, cached by hash.

A project that brings a ``requirements.txt`` (or ``[project] dependencies`` in its
``pyproject.toml``) gets, on the local runner, a virtual environment of its own under
``<taskyard home>/envs/<key>``, made once and reused by every later run with the same
requirements. The steps that import the project's code (run-tests, train, evaluate, promote)
re-exec themselves with that environment's python (:func:`reexec_in_project_env`).

Layout — why the project's pins win and taskyard still imports:

- the env's own ``site-packages`` holds what the project's requirements need and taskyard's
  environment does not already satisfy (a pin to another version, a package taskyard lacks);
- ``zz_taskyard_base.pth`` in it calls ``site.addsitedir`` on taskyard's own site-packages.
  Python processes that file *after* it put the env's site-packages on ``sys.path``, so
  taskyard's folders come **after** the project's: a package in both is the project's version,
  while taskyard, MLflow, pytest and the rest stay importable. ``addsitedir`` (not a bare path
  line) also runs the ``.pth`` files over there, e.g. an editable taskyard install. The name
  sorts last so the project's own ``.pth`` files (its editable installs) come first too.

The ``.pth`` is written *before* the install, so pip sees taskyard's packages and installs only
the difference — exactly what ``pip install -r requirements.txt`` into taskyard's own
environment does in the project image (``taskyard images build --project``), so a local run
and a cluster run import the same versions. uv is not used for this: it counts only packages
in the target environment's own site-packages and would reinstall the whole closure
(scikit-learn, numpy, scipy for a bare ``scikit-learn``) over taskyard's.

Cache key: the requirement files' bytes (``-r``/``-c`` includes too; for ``pyproject.toml``
only its dependency list), the Python implementation, version and platform, taskyard's
version, and the prefix of taskyard's environment (the ``.pth`` points into it, and a docker
container sharing the taskyard home has another one). Creation is atomic: built in a
temporary folder next to its final place and renamed under a file lock, so two concurrent runs
build it once, and a failed install leaves nothing behind.

``TASKYARD_PROJECT_ENV=off`` disables all this (project images set it: their requirements are
installed already).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taskyard import __version__
from taskyard.errors import StepError
from taskyard.home import home

SWITCH = "TASKYARD_PROJECT_ENV"  # off: never make or use a project environment
ACTIVE = "TASKYARD_PROJECT_ENV_ACTIVE"  # set by the re-exec: the env this process runs in
MARKER = "taskyard-env.json"  # written last inside the env; its presence means "complete"
PTH = "zz_taskyard_base.pth"
REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
_INCLUDE = re.compile(r"^(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+)(\S+)")
_HASH_OPTION = re.compile(r"\s--hash[=\s]\S+")


@dataclass(frozen=True)
class Requirements:
    """What a project asks for: where it came from, the lines pip takes, what keys the cache."""

    origin: Path  # requirements.txt or pyproject.toml
    lines: tuple[str, ...]  # the requirement lines (for pyproject: its dependency strings)
    digest_inputs: tuple[tuple[str, str], ...]  # (file, sha256) of every file that counts

    @property
    def label(self) -> str:
        return self.origin.name


@dataclass(frozen=True)
class Base:
    """taskyard's own environment: the one every project environment is layered over."""

    prefix: str
    site_dirs: tuple[str, ...]


# ---- pure helpers ------------------------------------------------------------------------------
def enabled(environ: dict[str, str] | None = None) -> bool:
    """False when ``TASKYARD_PROJECT_ENV`` says off; an unknown value is a one-line error."""
    value = (os.environ if environ is None else environ).get(SWITCH, "").strip().lower()
    if value in ("", "auto", "on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise StepError(f"{SWITCH}={value!r} is not understood", "use off, or leave it unset")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def requirement_lines(text: str) -> list[str]:
    """The logical lines of a requirements file: comments dropped, ``\\`` continuations joined."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        line = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
        if line:
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def _with_includes(path: Path, root: Path, seen: dict[str, str]) -> None:
    """Hash ``path`` and every ``-r``/``-c`` file it names (they change what gets installed)."""
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    if rel in seen:
        return
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StepError(f"cannot read {rel}: {e.strerror or e}") from None
    seen[rel] = _sha256(data)
    for line in requirement_lines(data.decode(errors="replace")):
        m = _INCLUDE.match(line)
        if m:
            _with_includes((path.parent / m.group(1)).resolve(), root, seen)


def find_requirements(project_root: Path) -> Requirements | None:
    """``requirements.txt`` if the project has one, else ``pyproject.toml``'s dependencies."""
    req = project_root / REQUIREMENTS
    if req.is_file():
        seen: dict[str, str] = {}
        _with_includes(req.resolve(), project_root.resolve(), seen)
        lines = requirement_lines(req.read_text(errors="replace"))
        return Requirements(req, tuple(lines), tuple(sorted(seen.items()))) if lines else None
    pyproject = project_root / PYPROJECT
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise StepError(f"cannot read {pyproject.name}: {e}") from None
    deps = data.get("project", {}).get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise StepError(f"{pyproject.name}: [project] dependencies must be a list of strings")
    if not deps:
        return None
    # Only the dependency list counts: a changed pytest option must not rebuild the env.
    digest = _sha256(json.dumps(deps).encode())
    return Requirements(pyproject, tuple(deps), ((f"{PYPROJECT}:dependencies", digest),))


def interpreter_id() -> tuple[str, str, str, str]:
    """The interpreter an env is made for: implementation, version, OS and machine."""
    return (
        platform.python_implementation(),
        platform.python_version(),
        sys.platform,
        platform.machine(),
    )


def env_key(
    reqs: Requirements,
    base: Base,
    *,
    python: tuple[str, ...] | None = None,
    taskyard: str = __version__,
) -> str:
    """The cache key: same requirements, interpreter, taskyard and base env -> same folder."""
    payload = {
        "format": 1,
        "requirements": reqs.digest_inputs,
        "python": python or interpreter_id(),
        "taskyard": taskyard,
        "base": base.prefix,
    }
    return _sha256(json.dumps(payload, sort_keys=True).encode())[:16]


def pth_line(site_dirs: tuple[str, ...]) -> str:
    """The one ``import`` line that appends taskyard's site-packages after the env's own.

    ``site`` runs it with ``exec`` in a function's scope, where a comprehension could not see
    the name just imported; ``map`` runs in that same scope.
    """
    return f"import site; list(map(site.addsitedir, {list(site_dirs)!r}))\n"


def site_packages(env: Path) -> Path:
    """The env's purelib (POSIX venv layout, as ``python -m venv`` makes it)."""
    return env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def envs_dir() -> Path:
    return home() / "envs"


def is_project_env(prefix: Path) -> bool:
    return (prefix / MARKER).is_file()


def current_base() -> Base:
    """taskyard's environment as this process sees it, even from inside a project env."""
    prefix = Path(sys.prefix)
    if is_project_env(prefix):  # re-exec'd: the base is the one this env was layered over
        data = json.loads((prefix / MARKER).read_text())
        return Base(data["base"], tuple(data["base_site_dirs"]))
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else ""
    if user and Path(user).is_dir():
        dirs.append(user)
    return Base(str(prefix.resolve()), tuple(dict.fromkeys(dirs)))


def _simple_requirement(line: str):  # -> packaging Requirement | None
    """A plain ``name[spec][; marker]`` line, or None for anything pip must look at itself."""
    try:  # MLflow's dependency, so there wherever the ML steps run; if not, pip decides
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return None

    line = _HASH_OPTION.sub("", f" {line}").strip()
    if line.startswith(("-", ".", "/")) or "://" in line:
        return None
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return None
    return None if req.url or req.extras else req


def satisfied_here(reqs: Requirements) -> bool:
    """True when taskyard's own environment already meets every requirement (no env needed).

    Conservative: includes, editable/path/URL requirements and extras count as unmet, so pip
    decides for those.
    """
    from importlib import metadata

    for line in reqs.lines:
        req = _simple_requirement(line)
        if req is None:
            return False
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def one_line_reason(output: str) -> str:
    """pip's own reason from its output: its last ``ERROR:`` line, else its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("ERROR:", "error:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "no output"


# ---- creation ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (dropped by the kernel if the holder dies)."""
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run building the environment {path.stem}", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ready(env: Path) -> bool:
    """A complete env: its marker is there (written last) and its python still runs."""
    return (env / MARKER).is_file() and python_of(env).exists()


def _retarget(env: Path, old: str, new: str) -> None:
    """Point what pip and venv wrote in ``bin/`` (script shebangs, activate) at the final path."""
    for f in [*(env / "bin").iterdir(), env / "pyvenv.cfg"]:
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        if old.encode() in data:
            f.write_bytes(data.replace(old.encode(), new.encode()))


def _install_command(env_python: Path, reqs: Requirements, build: Path) -> list[str]:
    """pip of taskyard's interpreter, installing into the env (``--python``, pip >= 22.3)."""
    if reqs.origin.name == REQUIREMENTS:
        source = ["-r", str(reqs.origin.resolve())]
    else:
        listed = build / "taskyard-requirements.txt"
        listed.write_text("\n".join(reqs.lines) + "\n")
        source = ["-r", str(listed)]
    return [
        sys.executable, "-m", "pip", "--python", str(env_python), "install",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", *source,
    ]  # fmt: skip


def _build(final: Path, reqs: Requirements, base: Base, key: str) -> None:
    """Make the env in a temporary sibling folder and rename it into place (caller holds lock)."""
    if importlib.util.find_spec("pip") is None:
        raise StepError(
            "taskyard's environment has no pip to install the project's requirements with",
            f"run `{sys.executable} -m ensurepip`, or set {SWITCH}=off",
        )
    parent = final.parent
    for stale in parent.glob(f".{key}.tmp-*"):  # left by a build that was killed (-9)
        shutil.rmtree(stale, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=parent))
    build.chmod(0o755)  # mkdtemp's 0700 would hide the env from an image's non-root user
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--prompt", key, str(build)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StepError(
                f"cannot create the project environment: {one_line_reason(proc.stderr)}"
            )
        sp = site_packages(build)
        sp.mkdir(parents=True, exist_ok=True)
        # Before the install: pip must see taskyard's packages to install only the difference.
        (sp / PTH).write_text(pth_line(base.site_dirs))
        cmd = _install_command(python_of(build), reqs, build)
        proc = subprocess.run(
            cmd,
            cwd=reqs.origin.parent,  # pip reads `./local-pkg` lines relative to the cwd
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = proc.stdout.strip().splitlines()[-30:]
            print("\n".join(tail), flush=True)  # pip's story in the task log; the reason below
            raise StepError(
                f"cannot install the project's {reqs.label}: {one_line_reason(proc.stdout)}",
                f"fix {reqs.label}, or set {SWITCH}=off to use taskyard's environment as is",
            )
        installed = [ln for ln in proc.stdout.splitlines() if ln.startswith("Successfully")]
        marker = {
            "key": key,
            "requirements": reqs.label,
            "inputs": dict(reqs.digest_inputs),
            "python": platform.python_version(),
            "taskyard": __version__,
            "base": base.prefix,
            "base_site_dirs": list(base.site_dirs),
            "installer": "pip",
            "installed": installed[-1] if installed else "nothing (all satisfied)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _retarget(build, str(build), str(final))
        (build / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if final.exists():  # an incomplete or broken leftover: out of the way, atomically
            shutil.rmtree(final.rename(parent / f".{key}.tmp-old-{os.getpid()}"))
        build.rename(final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def ensure(project_root: Path) -> Path | None:
    """The python of the project's environment, made if needed; None when none is needed.

    None: no requirements, ``TASKYARD_PROJECT_ENV=off``, or taskyard's environment already
    satisfies them all. Prints one line saying which env is used and whether it was made.
    """
    reqs = find_requirements(project_root)
    if reqs is None:
        return None
    if not enabled():
        print(f"project environment: off ({SWITCH}=off), {reqs.label} not installed", flush=True)
        return None
    if satisfied_here(reqs):
        print(
            f"project environment: not needed, taskyard's environment satisfies {reqs.label}",
            flush=True,
        )
        return None
    base = current_base()
    key = env_key(reqs, base)
    final = envs_dir() / key
    if ready(final):
        print(f"project environment {final} ({reqs.label}): reused", flush=True)
        return python_of(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _locked(final.parent / f"{key}.lock"):
        if ready(final):  # another run built it while we waited
            print(f"project environment {final} ({reqs.label}): reused", flush=True)
            return python_of(final)
        print(f"project environment {final} ({reqs.label}): creating", flush=True)
        _build(final, reqs, base, key)
    installed = json.loads((final / MARKER).read_text())["installed"]
    print(
        f"project environment {final} ({reqs.label}): created in "
        f"{time.monotonic() - started:.1f}s; {installed}",
        flush=True,
    )
    return python_of(final)


def build_at(project_root: Path, dest: Path) -> Path:
    """Make the project's env at ``dest`` (a project image's build stage); return its python.

    The same layout and the same code as :func:`ensure`, only at a fixed place and without
    the cache: ``taskyard images build --project`` runs it as ``python -m taskyard.envs``.
    """
    reqs = find_requirements(project_root)
    if reqs is None:
        raise StepError(f"{project_root} has no {REQUIREMENTS} and no [project] dependencies")
    if dest.exists():
        raise StepError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = current_base()
    _build(dest, reqs, base, env_key(reqs, base))
    print(f"project environment {dest} ({reqs.label}): created", flush=True)
    return python_of(dest)


def active() -> Path | None:
    """The project env this process runs in (after a re-exec), or None."""
    value = os.environ.get(ACTIVE, "")
    if value and Path(sys.prefix).resolve() == Path(value).resolve():
        return Path(value)
    return None


def project_root(source: Path, subdirectory: str) -> Path:
    """``source/subdirectory`` as the steps read it (empty or ``repo/``: fine either way)."""
    sub = subdirectory.strip()
    return source / sub if sub else source


def reexec_in_project_env(source: Path, subdirectory: str, module: str) -> None:
    """Run the rest of this step with the project's python, if it has requirements.

    Call at the very start of a step's ``run(args)``: the step's process is replaced by
    ``<env python> -m taskyard.steps.<module> <same args>`` (same pid, so the runner's
    signals, process group and parent-death signal still apply). Returns when no env is
    needed or this process already runs in it.
    """
    if active() is not None:
        return
    root = project_root(source, subdirectory)
    if not root.is_dir():
        return  # the step itself reports a missing project folder
    py = ensure(root)
    if py is None:
        return
    env = py.parent.parent
    if os.environ.get(ACTIVE) == str(env):
        raise StepError(f"re-running with {py} did not switch to its environment")
    os.environ[ACTIVE] = str(env)
    # Activated as `source bin/activate` would: `python` and the env's scripts come first for
    # whatever the step starts (pytest, a project's test shelling out to `python`).
    os.environ["VIRTUAL_ENV"] = str(env)
    os.environ["PATH"] = os.pathsep.join([str(py.parent), os.environ.get("PATH", "")])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(str(py), [str(py), "-m", f"taskyard.steps.{module}", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> None:
    """``python -m taskyard.envs build PROJECT DEST``: what a project image's build runs."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "build":
        sys.exit("usage: python -m taskyard.envs build PROJECT_DIR DEST")
    try:
        build_at(Path(args[1]), Path(args[2]))
    except StepError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
