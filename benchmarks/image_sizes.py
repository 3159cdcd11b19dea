"""How big each task image is: uncompressed, as pulled (gzip of ``docker save``), and per part.

    .venv/bin/python benchmarks/image_sizes.py [--build] [--no-compressed] [NAME ...]

Uses the daemon ``DOCKER_HOST`` points at; when none answers (and we are root), starts a
private Debian dockerd as the tests do (tests/dockerd.py) and stops it at the end. ``--build``
builds the images first (``taskyard images build --debootstrap``); otherwise they must exist.

Per image it prints the uncompressed size (what ``docker images`` shows), the compressed size
(``docker save | gzip -1`` — close to what a registry stores and a node pulls), the base it was
built on and the share of the Python virtualenv. The README of images/ records these figures.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parents[1]))

from taskyard import images


class _Counter:
    """A sink that counts what gzip writes: a compressed size without storing the archive."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def compressed_size(ref: str) -> int:
    counter = _Counter()
    proc = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=1) as gz:  # type: ignore[arg-type]
        while chunk := proc.stdout.read(1 << 20):
            gz.write(chunk)
    if proc.wait() != 0:
        raise SystemExit(f"error: docker save {ref} failed")
    return counter.n


def venv_size(ref: str) -> int:
    """Bytes of the layer that copies /opt/taskyard (the virtualenv) into the final stage."""
    out = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}\t{{.Size}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        created, _, size = line.rpartition("\t")
        if "/opt/taskyard" in created and "COPY" in created:
            return _parse(size)
    return 0


def _parse(size: str) -> int:
    units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    for unit in ("kB", "KB", "MB", "GB", "B"):
        if size.endswith(unit):
            return int(float(size[: -len(unit)]) * units[unit])
    return 0


def daemon_answers() -> bool:
    proc = subprocess.run(["docker", "version"], capture_output=True, check=False)
    return proc.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="images (default: every one that is built here)")
    ap.add_argument("--build", action="store_true", help="build them first (debootstrap base)")
    ap.add_argument("--no-compressed", action="store_true", help="skip the gzip measurement")
    args = ap.parse_args()
    daemon = None
    if not daemon_answers():
        from tests.dockerd import Dockerd, unavailable

        reason = unavailable()
        if reason:
            raise SystemExit(f"error: no Docker daemon answers and none can start: {reason}")
        daemon = Dockerd().start()
        os.environ["DOCKER_HOST"] = daemon.host
    try:
        if args.build:
            base = images.ensure_base(log=sys.stderr)
            images.build(args.names, base=base, log=None)
        built = images.describe(args.names)
        if not built:
            raise SystemExit("error: no task image is built here (run with --build)")
        table = Table(title="task images (linux/amd64)")
        for col in ("image", "tag", "uncompressed", "compressed (gzip)", "virtualenv layer"):
            table.add_column(col, justify="left" if col in ("image", "tag") else "right")
        for b in built:
            comp = "-" if args.no_compressed else images.human(compressed_size(b.tag))
            table.add_row(b.name, b.tag, images.human(b.size), comp, images.human(venv_size(b.tag)))
        if images.image_exists(images.DEBOOTSTRAP_BASE):
            base = images.inspect(images.DEBOOTSTRAP_BASE)
            table.add_row("(base)", images.DEBOOTSTRAP_BASE, images.human(base["Size"]), "", "")
        Console(width=max(Console().width, 110)).print(table)
    finally:
        if daemon is not None:
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
