"""``taskyard images build|digests|bundle``: build the task images, print their pins, push a
Tekton bundle of the catalog (docs/distribution.md)."""

from __future__ import annotations

import argparse
import os
import sys

from taskyard import __version__
from taskyard.cli._common import UsageError


def add_images(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "images",
        parents=[common],
        help="build the task images, print their digests",
        description="Build images/NAME/Dockerfile as REGISTRY/NAME:VERSION (images/README.md).",
    )
    isub = p.add_subparsers(dest="images_command", metavar="build|digests|bundle", required=True)
    b = isub.add_parser(
        "build", parents=[common], help="build task images (default: all but train-gpu)"
    )
    b.add_argument("names", nargs="*", metavar="NAME", help="git, steps, train, serve, train-gpu")
    b.add_argument(
        "--base",
        default=os.environ.get("TASKYARD_BASE_IMAGE"),
        metavar="IMAGE",
        help="base image (default: python:3.11-slim-bookworm, or $TASKYARD_BASE_IMAGE)",
    )
    b.add_argument(
        "--debootstrap",
        action="store_true",
        help="no registry here: make the base with debootstrap + docker import (needs root)",
    )
    b.add_argument(
        "--project",
        metavar="DIR",
        help="instead: a train image FROM the catalog's train image with DIR's requirements",
    )
    b.add_argument(
        "--tag",
        metavar="TAG",
        help="with --project: its tag (default: REGISTRY/train-<folder>:<requirements key>)",
    )
    _tag_flags(b)
    b.set_defaults(func=_cmd_build)
    d = isub.add_parser("digests", parents=[common], help="tag, image id, pinned digest, size")
    d.add_argument("names", nargs="*", metavar="NAME")
    _tag_flags(d)
    d.set_defaults(func=_cmd_digests)
    bu = isub.add_parser(
        "bundle",
        parents=[common],
        help="the catalog as a Tekton bundle (OCI image): print it, or --push it",
    )
    bu.add_argument("--registry", required=True, help="e.g. ghcr.io/you or 127.0.0.1:5000")
    bu.add_argument("--name", default="taskyard-catalog", help="repository (default: %(default)s)")
    bu.add_argument("--version", default=__version__, help=f"tag (default: {__version__})")
    bu.add_argument("--push", action="store_true", help="push it (default: only print it)")
    bu.add_argument(
        "--plain-http", action="store_true", help="a registry without TLS (127.0.0.1 tests)"
    )
    bu.set_defaults(func=_cmd_bundle)


def _tag_flags(p: argparse.ArgumentParser) -> None:
    from taskyard.images import REGISTRY

    p.add_argument("--registry", default=REGISTRY, help=f"default: {REGISTRY}")
    p.add_argument("--version", default=__version__, help=f"tag (default: {__version__})")


def _cmd_build(args: argparse.Namespace) -> int:
    from taskyard import images

    if args.project is not None:
        return _build_project(args)
    if args.tag is not None:
        raise UsageError("--tag is for --project; catalog images are tagged REGISTRY/NAME:VERSION")
    base = args.base or images.DEFAULT_BASE
    if args.debootstrap:
        if args.base:
            raise UsageError("--base and --debootstrap exclude each other")
        base = images.ensure_base(log=sys.stderr)
    tags = images.build(
        args.names, base=base, registry=args.registry, version=args.version, log=sys.stderr
    )
    for built in images.describe(args.names, args.registry, args.version):
        if built.tag in tags:
            print(f"{built.tag}  {built.id}  {images.human(built.size)}")
    return 0


def _build_project(args: argparse.Namespace) -> int:
    """The project's train image, on top of the catalog's train image of --registry/--version."""
    from pathlib import Path

    from taskyard import images

    clash = [
        f
        for f, on in (
            ("NAME", args.names),
            ("--base", args.base != os.environ.get("TASKYARD_BASE_IMAGE")),  # given, not env
            ("--debootstrap", args.debootstrap),
        )
        if on
    ]
    if clash:
        raise UsageError(f"--project builds FROM the catalog's train image: drop {clash[0]}")
    project = Path(args.project)
    if not project.is_dir():
        raise UsageError(f"--project {args.project}: not a folder")
    ref = images.build_project_image(
        project,
        base_tag=images.tag("train", args.registry, args.version),
        tag=args.tag or images.project_tag(project, args.registry),
        log=sys.stderr,
    )
    print(ref)
    return 0


def _cmd_digests(args: argparse.Namespace) -> int:
    from taskyard import images
    from taskyard.errors import TaskyardError

    found = images.describe(args.names, args.registry, args.version)
    if not found:
        raise TaskyardError("no task image is built here", "taskyard images build")
    for b in found:
        pin = b.repo_digest or f"(not pushed; push it, then pin {b.tag.rsplit(':', 1)[0]}@sha256:…)"
        print(f"{b.name}\t{b.tag}\t{b.id}\t{images.human(b.size)}\t{pin}")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    """Print the bundle's layers and digest; with --push, push it and print REF@DIGEST."""
    from taskyard import bundle

    ref = f"{args.registry.rstrip('/')}/{args.name}:{args.version}"
    bundle.parse_ref(ref)
    built = bundle.build(bundle.catalog_docs(ref))
    if args.push:
        print(bundle.push(built, ref, plain_http=args.plain_http))
        return 0
    for layer in built.layers:
        a = layer.annotations
        print(f"{a[bundle.ANNOTATION_KIND]}\t{a[bundle.ANNOTATION_NAME]}\t{layer.digest}")
    print(f"{ref}@{built.digest}  (not pushed: add --push)")
    return 0
