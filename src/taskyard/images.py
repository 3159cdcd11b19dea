"""Build the task images under ``images/`` and report their tags, digests and sizes.

The catalog names each task's image ``ghcr.io/taskyard/<name>:<version>``; this module builds
exactly those tags from ``images/<name>/Dockerfile`` with the repository root as context.
One more image is no task's: ``serve``, the model server, built FROM the train image of the
same registry and version (``Image.from_image``), so it is built after it.
Where no registry can be reached, :func:`ensure_base` makes the base image with ``debootstrap``
(Debian bookworm from the host's apt mirror) and ``docker import``, and caches the root
filesystem as a tarball so the next build (or test session) skips the 70-second bootstrap.
Builds run with ``--network host``: a daemon started with ``--bridge=none`` has no other network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from taskyard import __version__, envs
from taskyard.catalog._common import REGISTRY
from taskyard.errors import TaskyardError

DEFAULT_BASE = "python:3.11-slim-bookworm"
DEBOOTSTRAP_BASE = "taskyard/base:bookworm"
SUITE = "bookworm"
# What the images need from the base: python3.11 with venv (as python:3.11-slim has).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
TORCH_VERSION = "2.13.0"


@dataclass(frozen=True)
class Image:
    """One task image: where its Dockerfile is, and what its build stage wants staged."""

    name: str
    wheels: tuple[str, ...] = ()  # local wheels to stage (distribution names)
    built_in_ci: bool = True  # train-gpu is linted and documented, not built on a CPU machine
    # Built FROM another catalog image of the same registry and version (not from the base);
    # its tag arrives as --build-arg <NAME>_IMAGE, e.g. TRAIN_IMAGE.
    from_image: str = ""
    task_image: bool = True  # a catalog task's default image (serve is a deployment's)

    @property
    def from_arg(self) -> str:
        return self.from_image.upper().replace("-", "_") + "_IMAGE"


# In build order: an image comes after the one it is built FROM.
IMAGES: dict[str, Image] = {
    "git": Image("git"),
    "steps": Image("steps"),
    "train": Image("train", wheels=("torch",)),
    "serve": Image("serve", from_image="train", task_image=False),
    "train-gpu": Image("train-gpu", built_in_ci=False),
}


class ImageError(TaskyardError):
    """A build or docker call failed (exit 1)."""


def repo_root() -> Path:
    """The checkout holding ``images/`` (the package is installed editable from it)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "images").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    raise ImageError(
        "cannot find the images/ folder next to the taskyard sources",
        "run from a taskyard checkout (pip install -e .)",
    )


def catalog_images() -> set[str]:
    """The image names the catalog's tasks default to (``REGISTRY/<name>:<version>``): every
    ``IMAGES`` entry with ``task_image`` (serve runs models, not tasks)."""
    from taskyard.catalog import TASKS
    from taskyard.catalog.tasks import train

    names = set()
    for task in [*TASKS.values(), train.GPU_TASK]:
        for p in task.params:
            if p.name == "image" and p.default:
                names.add(p.default.removeprefix(REGISTRY + "/").rsplit(":", 1)[0])
    return names


def tag(name: str, registry: str = REGISTRY, version: str = __version__) -> str:
    return f"{registry.rstrip('/')}/{name}:{version}"


def select(names: Sequence[str], *, all_images: bool = False) -> list[Image]:
    """The images to act on, in build order (``IMAGES``' order: train before serve): the named
    ones, or every one built in CI (``all_images``: all)."""
    if not names:
        return [i for i in IMAGES.values() if all_images or i.built_in_ci]
    unknown = [n for n in names if n not in IMAGES]
    if unknown:
        raise ImageError(f"unknown image {unknown[0]!r}", "known: " + ", ".join(IMAGES))
    return [i for n, i in IMAGES.items() if n in names]


# ---- docker ------------------------------------------------------------------------------------
def require_docker(context: str = "") -> None:
    """Fail in one line when the docker CLI is missing (the daemon is checked where it is used)."""
    if shutil.which("docker") is None:
        raise ImageError(f"{context}the docker CLI is not installed", "apt-get install docker.io")


def docker(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (``DOCKER_HOST`` picks the daemon); fail with its last stderr line."""
    require_docker()
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ImageError(f"docker {args[0]} failed: {last}")
    return proc


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def inspect(ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]


# ---- the debootstrap base ----------------------------------------------------------------------
def cache_dir() -> Path:
    """``$TASKYARD_IMAGE_CACHE`` or ``~/.cache/taskyard/images``: the base rootfs tarball."""
    env = os.environ.get("TASKYARD_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "taskyard" / "images"


def apt_mirror() -> str:
    """The Debian mirror apt already uses here (deb822 ``URIs:`` or one-line ``deb``)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        with contextlib.suppress(OSError):
            text = f.read_text()
            for m in re.finditer(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s*)?)(\S+)", text, re.M):
                if "security" not in m.group(1):
                    return m.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(
    ref: str = DEBOOTSTRAP_BASE, *, cache: Path | None = None, log: TextIO | None = None
) -> str:
    """Make ``ref`` exist in the daemon: as is, from the cached rootfs, or via debootstrap."""
    if image_exists(ref):
        return ref
    cache = cache or cache_dir()
    tarball = cache / f"base-{SUITE}.tar"
    if not tarball.is_file():
        _debootstrap(tarball, log)
    _say(log, f"importing {tarball} as {ref}")
    with open(tarball, "rb") as fh:
        docker(
            "import",
            "--change",
            'CMD ["python3"]',
            "--message",
            f"debootstrap --variant=minbase {SUITE}",
            "-",
            ref,
            stdin=fh,
        )
    return ref


def _debootstrap(tarball: Path, log: TextIO | None) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed", "apt-get install debootstrap")
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root", "build the base as root, or use --base")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    mirror = apt_mirror()
    _say(log, f"debootstrap {SUITE} from {mirror} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="taskyard-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
        proc = subprocess.run(
            [*cmd, SUITE, str(rootfs), mirror], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["?"]
            raise ImageError(f"debootstrap failed: {tail[0]}")
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".part")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.replace(tarball)  # atomic: a concurrent reader never sees half a tarball


# ---- building ----------------------------------------------------------------------------------
def find_links() -> list[Path]:
    """The folders pip's ``find-links`` names here (env and pip config)."""
    found = os.environ.get("PIP_FIND_LINKS", "").split()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            found += value.strip("'\"").split()
    return [Path(f.removeprefix("file://")) for f in dict.fromkeys(found) if "://" not in f[:8]]


def local_wheel(dist: str, version: str = TORCH_VERSION) -> Path | None:
    """A CPU wheel of ``dist==version`` for CPython 3.11 x86_64 in pip's find-links, if any."""
    for folder in find_links():
        for whl in sorted(folder.glob(f"{dist}-{version}*-cp311-cp311-*x86_64.whl")):
            if "+cpu" in whl.name or dist != "torch":
                return whl
    return None


def build_ca() -> Path | None:
    """The CA bundle pip uses here, for a TLS-intercepting proxy during the build stage."""
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


@contextlib.contextmanager
def staged_context(image: Image, root: Path | None = None) -> Iterator[Path]:
    """A build context with what the Dockerfiles COPY, plus ``images/extra`` filled in."""
    root = root or repo_root()
    with tempfile.TemporaryDirectory(prefix=f"taskyard-ctx-{image.name}-") as tmp:
        ctx = Path(tmp)
        for f in ("pyproject.toml", "README.md", ".dockerignore"):
            shutil.copy2(root / f, ctx / f)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(root / "src", ctx / "src", ignore=ignore)
        shutil.copytree(root / "images" / image.name, ctx / "images" / image.name)
        extra = ctx / "images" / "extra"
        (extra / "wheels").mkdir(parents=True)
        for dist in image.wheels:
            whl = local_wheel(dist)
            if whl is not None:
                _link_or_copy(whl, extra / "wheels" / whl.name)
        ca = build_ca()
        if ca is not None:
            shutil.copyfile(ca, extra / "ca.crt")
        yield ctx


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def revision(root: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(root or repo_root()), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build(
    names: Sequence[str] = (),
    *,
    base: str = DEFAULT_BASE,
    registry: str = REGISTRY,
    version: str = __version__,
    log: TextIO | None = None,
) -> list[str]:
    """Build the named images (default: all but train-gpu); return the tags, in order.

    An image built FROM another (serve FROM train) takes that image's tag of the same registry
    and version; it must be built in this call or exist already.
    """
    images = select(names)
    rev = revision()
    tags: list[str] = []
    for image in images:
        ref = tag(image.name, registry, version)
        build_args = [("VERSION", version), ("REVISION", rev)]
        if image.from_image:
            parent = tag(image.from_image, registry, version)
            if parent not in tags and not image_exists(parent):
                raise ImageError(
                    f"{image.name} is built FROM {parent}, which is not built",
                    f"taskyard images build {image.from_image} {image.name}",
                )
            build_args.insert(0, (image.from_arg, parent))
            _say(log, f"building {ref} (from {parent})")
        else:
            build_args.insert(0, ("BASE_IMAGE", base))
            _say(log, f"building {ref} (base {base})")
        with staged_context(image) as ctx:
            args = ["--network", "host", "-f", f"images/{image.name}/Dockerfile", "-t", ref]
            for key, value in build_args:
                args += ["--build-arg", f"{key}={value}"]
            _docker_build([*args, str(ctx)], log)
        tags.append(ref)
    return tags


def _docker_build(args: list[str], log: TextIO | None) -> None:
    require_docker()
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the classic builder, said plainly
    proc = subprocess.Popen(
        ["docker", "build", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-20:], line.rstrip()]
        if log is not None:
            log.write(line)
    if proc.wait() != 0:
        last = next((t for t in reversed(tail) if t.strip()), f"exit code {proc.returncode}")
        raise ImageError(f"docker build failed: {last}")


# ---- reporting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    name: str
    tag: str
    id: str  # the local image id (sha256 of the config)
    repo_digest: str  # REGISTRY/name@sha256:… once pushed; "" before
    size: int  # bytes, uncompressed


def describe(
    names: Iterable[str] = (), registry: str = REGISTRY, version: str = __version__
) -> list[Built]:
    """What the daemon holds for each image tag (missing ones are left out)."""
    out = []
    for image in select(list(names), all_images=True):
        ref = tag(image.name, registry, version)
        if not image_exists(ref):
            continue
        data = inspect(ref)
        digests = [d for d in data.get("RepoDigests") or [] if d.startswith(ref.rsplit(":", 1)[0])]
        out.append(Built(image.name, ref, data["Id"], digests[0] if digests else "", data["Size"]))
    return out


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _say(log: TextIO | None, text: str) -> None:
    if log is not None:
        log.write(f"taskyard: {text}\n")
        log.flush()


# ---- a project's own train image ---------------------------------------------------------------
_catalog_tag = tag  # `tag` is also build_project_image's keyword
PROJECT_ENV_DIR = "/opt/taskyard-project"  # the project's env inside a project image
_STAGED = "/tmp/taskyard-project"  # where the build stage sees the project's requirement files


def project_tag(project_dir: Path, registry: str = REGISTRY) -> str:
    """A default tag: ``REGISTRY/train-<folder>:<requirements key>`` (new pins, new tag)."""
    reqs = _project_requirements(project_dir)
    name = re.sub(r"[^a-z0-9._-]+", "-", project_dir.resolve().name.lower()).strip("-._")
    digest = envs.env_key(reqs, envs.Base("/opt/taskyard", ()))[:12]
    return f"{registry.rstrip('/')}/train-{name or 'project'}:{digest}"


def _project_requirements(project_dir: Path) -> envs.Requirements:
    try:
        reqs = envs.find_requirements(project_dir)
    except TaskyardError as e:
        raise ImageError(str(e)) from None
    if reqs is None:
        raise ImageError(
            f"{project_dir} has no requirements.txt and no [project] dependencies",
            "the catalog's train image already runs a project without its own requirements",
        )
    return reqs


def project_dockerfile(base_tag: str, title: str) -> str:
    """The generated Dockerfile of a project image (hadolint-clean; a test lints it).

    The build stage runs this checkout's :func:`taskyard.envs.build_at` (the module is staged as
    a script, so a base image built from an older checkout works too), so the image holds the
    same layout as a local run: the project's env at ``/opt/taskyard-project`` (its pins first
    on ``sys.path``), layered over ``/opt/taskyard``. Putting its ``bin`` first on ``PATH``
    makes every task's ``python -m taskyard.steps.…`` run in it, and
    ``TASKYARD_PROJECT_ENV=off`` stops the steps from making another one at run time. Only the
    env crosses to the final stage: the build CA (a TLS-intercepting proxy) never does.
    """
    return f"""\
# Generated by `taskyard images build --project`: the catalog's train image plus the project's
# own requirements, in a project environment layered over taskyard's (see taskyard/envs.py).
FROM {base_tag} AS build
# Root only here, to write under /opt: this stage is thrown away; the image's user is 65532.
# hadolint ignore=DL3002
USER 0:0
COPY project/ {_STAGED}/
COPY envs.py /tmp/taskyard-envs.py
# ca.crt: only for a TLS-intercepting proxy at build time; it never reaches the final stage.
RUN if [ -s {_STAGED}/ca.crt ]; then export PIP_CERT={_STAGED}/ca.crt; fi \\
 && PIP_NO_CACHE_DIR=1 /opt/taskyard/bin/python /tmp/taskyard-envs.py build \\
      {_STAGED} {PROJECT_ENV_DIR}

FROM {base_tag}
LABEL org.opencontainers.image.title="{title}" \\
      org.opencontainers.image.description="taskyard train image with the project's requirements" \\
      org.opencontainers.image.base.name="{base_tag}"
COPY --from=build {PROJECT_ENV_DIR} {PROJECT_ENV_DIR}
ENV PATH={PROJECT_ENV_DIR}/bin:$PATH TASKYARD_PROJECT_ENV=off
USER 65532:65532
"""


def stage_project(project_dir: Path, ctx: Path, base_tag: str, title: str) -> None:
    """Fill a build context: the Dockerfile and ``project/`` with only the requirement files."""
    reqs = _project_requirements(project_dir)
    root = project_dir.resolve()
    staged = ctx / "project"
    staged.mkdir(parents=True)
    names = [reqs.origin.name] if reqs.origin.name == "pyproject.toml" else []
    names += [n for n, _ in reqs.digest_inputs if ":" not in n]
    for name in names:
        src = (root / name).resolve()
        if not src.is_relative_to(root):
            raise ImageError(f"{name} lies outside {project_dir}; keep includes in the project")
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, staged / name)
    ca = build_ca()
    (staged / "ca.crt").write_bytes(ca.read_bytes() if ca is not None else b"")
    shutil.copy2(envs.__file__, ctx / "envs.py")
    (ctx / "Dockerfile").write_text(project_dockerfile(base_tag, title))


def build_project_image(
    project_dir: Path,
    *,
    base_tag: str | None = None,
    tag: str | None = None,
    log: TextIO | None = None,
) -> str:
    """Build a train image FROM the catalog's with ``project_dir``'s requirements; its tag.

    ``base_tag`` defaults to the catalog's train image of this version (build it first with
    ``taskyard images build train``), ``tag`` to :func:`project_tag`.
    """
    base_ref = base_tag or _catalog_tag("train")
    ref = tag or project_tag(project_dir)
    require_docker()
    if not image_exists(base_ref):
        raise ImageError(f"the base image {base_ref} is not built", "taskyard images build train")
    _say(log, f"building {ref} (from {base_ref}) with {project_dir}'s requirements")
    with tempfile.TemporaryDirectory(prefix="taskyard-ctx-project-") as tmp:
        ctx = Path(tmp)
        stage_project(project_dir, ctx, base_ref, title=ref.rsplit("/", 1)[-1].split(":")[0])
        _docker_build(["--network", "host", "-t", ref, str(ctx)], log)
    return ref
