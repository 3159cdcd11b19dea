"""The step cache: a task whose inputs were all seen before replays the stored results.

Why in the step, and why in MLflow: Tekton has no task cache, Argo's memoization keys are
hand-written and live in 1 MiB ConfigMaps, and KFP's key holds input artifact *names*, not
contents. A step that checks for itself, against the MLflow store every engine already points
it at, gives local, Tekton and Argo runs one cache with no engine feature.

The key is the SHA-256 of (see :func:`material`):
- the step's identity: its name, the image digest when the image param is pinned by one, else
  a hash of the taskyard code the step runs, plus the Python and ML library versions;
- every param after substitution (input results arrive as params), except paths into the
  workspace: a run folder is not content, so the content they point at is hashed instead;
- the inputs the step reads, as the step names them: the project folder's git commit (and any
  uncommitted change), the data's content hash, the champion the candidate is judged against.
Nothing else: not the run name, the workspace path, the results path or the tracking URI.

An entry is a run in the ``taskyard-cache`` experiment: tags for the key and the results, the
workspace files the step leaves (its record, a report) as artifacts. It only counts once its
status is FINISHED, which is the last thing written: a step killed while storing leaves a
RUNNING entry that no lookup returns. Only successful steps store; a failure is never replayed.
A step may tag its entries with more keys to find them by (``StepCache.tags``): evaluate's
score key, the decision's inputs without the champion (docs/caching.md, "The run after a
promotion").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from taskyard.errors import StepError
from taskyard.steps import _mlflow
from taskyard.steps._results import write_result
from taskyard.steps._store_read import ClientReader, Reader
from taskyard.steps._store_read import reader as store_reader

EXPERIMENT = "taskyard-cache"
KEY_TAG = "taskyard.cache.key"
STEP_TAG = "taskyard.cache.step"
ORIGIN_TAG = "taskyard.cache.origin"
RESULT_TAG = "taskyard.cache.result."
FILES_DIR = "outputs"
MATERIAL_FILE = "key.json"
FROM_RESULT = "cached-from"
# The environment env var the catalog sets to the task's image param (catalog/_common.py).
IMAGE_ENV = "TASKYARD_IMAGE"
# What changes a trained model or a test outcome besides the code: the interpreter and these.
LIBRARIES = (
    "numpy", "pandas", "scipy", "scikit-learn", "xgboost", "torch", "mlflow", "skops", "pytest",
)  # fmt: skip
_NOT_KEY = {"debug", "cache", "cache_max_age"}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_flags(p: argparse.ArgumentParser) -> None:
    from taskyard.steps._cli import boolean

    p.add_argument(
        "--cache", type=boolean, default=True, help="replay a stored result for the same inputs"
    )
    p.add_argument(
        "--cache-max-age",
        default="",
        help="ignore entries older than this (30d, 12h, 90m, 3600s); empty: any age",
    )


def parse_age(text: str) -> float | None:
    """``"12h"`` -> 43200.0; empty -> None (no limit)."""
    if not text.strip():
        return None
    m = _AGE.match(text.lower())
    if not m:
        raise StepError(f"--cache-max-age: {text!r} is not a duration like 30d, 12h, 90m or 60s")
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---- the key ----------------------------------------------------------------------------------
@cache
def code_hash() -> str:
    """SHA-256 over the taskyard package's Python files: the step code, whatever image it is in."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def identity() -> dict[str, Any]:
    """What the task definition contributes: an image digest where known, else the code."""
    from taskyard import __version__

    image = os.environ.get(IMAGE_ENV, "")
    digest = image.split("@", 1)[1] if "@sha256:" in image else ""
    return {
        "taskyard": __version__,
        "image": digest,
        "code": "" if digest else code_hash(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
    }


@cache
def library_versions() -> dict[str, str | None]:
    """Installed versions of what shapes a step's output (~40 ms of metadata parsing: cached,
    and computed once by the warm interpreter, whose life is one install of them)."""
    from importlib import metadata

    libraries: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    return libraries


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    """The step's params as parsed, without paths (their content is an input) or cache flags."""
    return {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in _NOT_KEY and not k.startswith("_") and not isinstance(v, Path)
    }


def _git(folder: Path, *argv: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *argv], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def tree_hash(folder: Path, skip: Iterable[str] = (".git", "__pycache__", ".venv")) -> str:
    """SHA-256 of every file under ``folder`` (names and bytes), for a folder outside git."""
    h = hashlib.sha256()
    skipped = set(skip)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if skipped & set(rel.parts) or not path.is_file():
            continue
        h.update(rel.as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def project_state(folder: Path) -> dict[str, str]:
    """The code a step reads: the git commit of ``folder``'s checkout plus any local change.

    git-clone leaves a clean checkout, so on an engine this is the commit alone. By hand, an
    edited or new file (not ignored) changes the key through a hash of the diff and of the
    untracked files; a folder outside git is hashed file by file.
    """
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return {"tree": tree_hash(folder)}
    state = {"commit": head.strip()}
    diff = _git(folder, "diff", "HEAD", "--binary", "--", ".") or ""
    untracked = _git(folder, "ls-files", "-z", "--others", "--exclude-standard", "--", ".") or ""
    if diff or untracked:
        h = hashlib.sha256(diff.encode())
        for name in sorted(filter(None, untracked.split("\0"))):
            path = folder / name
            if path.is_file():
                h.update(name.encode() + b"\0" + path.read_bytes())
        state["changes"] = h.hexdigest()
    return state


def material(step: str, args: argparse.Namespace, inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"step": step, "task": identity(), "params": params_of(args), "inputs": dict(inputs)}


def key_of(doc: Mapping[str, Any]) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- lookup, replay, store --------------------------------------------------------------------
@dataclass
class Hit:
    entry: str  # the cache entry's MLflow run id
    results: dict[str, str]
    origin: str
    stored: float  # epoch seconds


@dataclass
class StepCache:
    """One step's cache for one set of inputs: ``replay()`` on a hit, else ``store()`` after."""

    step: str
    source: Path
    key: str
    material: dict[str, Any]
    enabled: bool
    max_age: float | None
    valid: Callable[[dict[str, str]], bool] | None = None
    reader: Reader = field(default_factory=ClientReader)
    hit: Hit | None = None
    notes: list[str] = field(default_factory=list)
    # More tags for the entry: other keys a step finds its entries by (evaluate's score key).
    tags: dict[str, str] = field(default_factory=dict)

    _ready: threading.Thread | None = field(default=None, init=False, repr=False)
    _experiment_id: str = field(default="", init=False, repr=False)

    def _experiment(self) -> str:
        if not self._experiment_id:
            self._experiment_id = _mlflow.experiment(EXPERIMENT)
        return self._experiment_id

    def prepare(self) -> None:
        """After a miss, while the step works in another process (pytest): import mlflow and
        open the store in a thread (seconds cold: the import, a fresh store's schema), so
        :meth:`store` finds them ready. Any failure here is store()'s to report."""
        if not self.enabled or self._ready is not None:
            return

        def warm_up() -> None:
            with contextlib.suppress(Exception):
                self._experiment()

        self._ready = threading.Thread(target=warm_up, name="cache-prepare", daemon=True)
        self._ready.start()

    def lookup(self, tag: str = KEY_TAG, value: str | None = None) -> Hit | None:
        """The newest valid entry, within the max age, whose ``tag`` is ``value`` (default:
        this step's key)."""
        oldest = None if self.max_age is None else int((time.time() - self.max_age) * 1000)
        value = self.key if value is None else value
        for e in self.reader.entries(EXPERIMENT, tag, value, oldest, limit=5):
            results = {
                k.removeprefix(RESULT_TAG): v for k, v in e.tags.items() if k.startswith(RESULT_TAG)
            }
            if self.valid is not None and not self.valid(results):
                self.notes.append(f"entry {e.run_id} points at something deleted; skipped")
                continue
            return Hit(e.run_id, results, e.tags.get(ORIGIN_TAG, ""), e.start_time / 1000)
        return None

    def replay(self) -> bool:
        """On a hit: restore the workspace files, write the results; True. Else False."""
        if not self.enabled:
            print(f"cache: off for {self.step} (--cache false)", flush=True)
            return False
        try:
            hit = self.lookup()
        except Exception as e:  # a cache that cannot be read is a miss, not a failed step
            print(f"warning: cache: lookup failed, computing: {_mlflow.one_line(e)}", flush=True)
            return False
        for note in self.notes:
            print(f"cache: {note}", flush=True)
        if hit is None:
            print(f"cache: miss for {self.step} (key {self.key[:12]})", flush=True)
            return False
        try:
            self._restore(hit.entry)
        except Exception as e:  # the step computes, and rewrites every file it restored
            print(f"warning: cache: cannot restore entry {hit.entry}, computing: "
                  f"{_mlflow.one_line(e)}", flush=True)  # fmt: skip
            return False
        for name, value in hit.results.items():
            write_result(name, value)
        write_result(FROM_RESULT, hit.entry)
        self.hit = hit
        age = time.time() - hit.stored
        origin = f", first computed by run {hit.origin}" if hit.origin else ""
        print(
            f"cache: hit for {self.step} (key {self.key[:12]}): results of entry {hit.entry}, "
            f"stored {_ago(age)} ago{origin}",
            flush=True,
        )
        return True

    def _restore(self, entry: str) -> None:
        """Copy the entry's workspace files (the step's record, its reports) into this run's."""
        self.reader.copy_artifacts(entry, FILES_DIR, self.source)

    def store(
        self,
        results: Mapping[str, str],
        files: Iterable[Path | tuple[Path, bytes]] = (),
        origin: str = "",
    ) -> None:
        """Record a successful step. A store that fails costs a warning, never the step.

        ``files`` are workspace files to restore on a hit, each a path or (path, its bytes):
        the bytes the step wrote, when another step may rewrite the file meanwhile (the
        trials of a sweep share ``artifacts/train.json``).
        """
        if not self.enabled:
            return
        if self._ready is not None:
            self._ready.join()
        from mlflow import MlflowClient

        client = MlflowClient()
        entry = None
        try:
            tags = {
                KEY_TAG: self.key,
                STEP_TAG: self.step,
                ORIGIN_TAG: origin,
                **self.tags,
                **{RESULT_TAG + k: str(v) for k, v in results.items()},
            }
            entry = client.create_run(self._experiment(), tags=tags, run_name=f"{self.step}-cache")
            run_id = entry.info.run_id
            with tempfile.TemporaryDirectory(prefix="taskyard-cache-") as tmp:
                (Path(tmp) / MATERIAL_FILE).write_text(
                    json.dumps(self.material, indent=2, sort_keys=True, default=str)
                )
                client.log_artifact(run_id, str(Path(tmp) / MATERIAL_FILE))
                for item in files:
                    path, data = item if isinstance(item, tuple) else (item, item.read_bytes())
                    rel = path.resolve().relative_to(self.source.resolve())
                    copy = Path(tmp, FILES_DIR, rel)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    copy.write_bytes(data)
                if (Path(tmp) / FILES_DIR).is_dir():
                    client.log_artifacts(run_id, str(Path(tmp) / FILES_DIR), FILES_DIR)
            client.set_terminated(run_id, "FINISHED")  # only now can a lookup find it
            print(f"cache: stored {self.step} as entry {run_id} (key {self.key[:12]})", flush=True)
        except Exception as e:  # the work is done; a cache that cannot write is only slower
            if entry is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(entry.info.run_id, "FAILED")
            print(f"warning: cache: could not store {self.step}: {_mlflow.one_line(e)}", flush=True)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def open_cache(
    step: str,
    args: argparse.Namespace,
    source: Path,
    inputs: Mapping[str, Any],
    valid: Callable[[dict[str, str]], bool] | None = None,
    reader: Reader | None = None,
) -> StepCache:
    """The cache for this step and these inputs (the tracking URI set: ``_mlflow.configure()``);
    ``reader``: the one the step already asked about its inputs, else the fastest for the URI."""
    write_result(FROM_RESULT, "")  # a computed result says so: empty, until a hit replaces it
    doc = material(step, args, inputs)
    return StepCache(
        step=step,
        source=source,
        key=key_of(doc),
        material=doc,
        enabled=bool(getattr(args, "cache", False)),
        max_age=parse_age(getattr(args, "cache_max_age", "")),
        valid=valid,
        reader=reader or store_reader(_mlflow.tracking_uri()),
    )
