"""A Tekton bundle of the catalog: one OCI image, one layer per Task or Pipeline, pushed as is.

The contract (tektoncd/pipeline ``docs/tekton-bundle-contracts.md``, enforced by
``pkg/resolution/resolver/bundle/bundle.go`` ``checkImageCompliance``): every layer holds exactly
one Tekton resource, at most 20 layers (``MaximumBundleObjects``), each layer annotated with
``dev.tekton.image.apiVersion``, ``dev.tekton.image.kind`` (lower-cased, singular) and
``dev.tekton.image.name``; layers are compressed with a standard OCI media type (not zstd). The
resolver untars the layer and reads its one file (``readTarLayer``).

Written against the OCI distribution HTTP API with the standard library because no tool that
speaks it is installable here: ``tkn`` is not on PyPI or in Debian, and oras/crane are neither.
The layers are deterministic (fixed tar headers, gzip mtime 0), so one catalog gives one digest.
Inside the bundle, each Pipeline refers to its tasks through the ``bundles`` resolver at the same
reference (docs/bundle-resolver.md: params ``bundle``, ``name``, ``kind``).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

from taskyard.errors import TaskyardError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MAX_LAYERS = 20  # pkg/remote/oci/resolver.go MaximumBundleObjects
ANNOTATION_API = "dev.tekton.image.apiVersion"
ANNOTATION_KIND = "dev.tekton.image.kind"
ANNOTATION_NAME = "dev.tekton.image.name"
DEFAULT_NAME = "taskyard-catalog"


class BundleError(TaskyardError):
    """A bundle that breaks the contract, or a registry that refused it (exit 1)."""


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    annotations: dict[str, str]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Bundle:
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def manifest(self) -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self.config.descriptor(),
            "layers": [layer.descriptor() for layer in self.layers],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def _tar_one(name: str, data: bytes) -> bytes:
    """A tar of one file with fixed headers (reproducible), gzipped with mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def layer(doc: dict[str, Any]) -> Blob:
    """The contract's layer for one Tekton resource."""
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            raise BundleError(f"a bundle resource has no {key}")
    name = (doc.get("metadata") or {}).get("name")
    if not name:
        raise BundleError(f"a {doc['kind']} without metadata.name cannot go in a bundle")
    if doc["kind"] not in ("Task", "Pipeline", "StepAction"):
        raise BundleError(f"{doc['kind']} {name}: only Tekton Tasks and Pipelines go in a bundle")
    kind = doc["kind"].lower()
    text = yaml.safe_dump(doc, sort_keys=False).encode()
    return Blob(
        LAYER_TYPE,
        _tar_one(f"{kind}-{name}.yaml", text),
        {ANNOTATION_API: doc["apiVersion"], ANNOTATION_KIND: kind, ANNOTATION_NAME: name},
    )


def build(docs: list[dict[str, Any]]) -> Bundle:
    """The bundle of ``docs`` (checked against the contract: unique identities, <= 20)."""
    if not docs:
        raise BundleError("an empty bundle")
    if len(docs) > MAX_LAYERS:
        raise BundleError(f"{len(docs)} resources: a Tekton bundle holds at most {MAX_LAYERS}")
    layers = tuple(layer(d) for d in docs)
    seen: set[tuple[str, ...]] = set()
    for b in layers:
        key = (b.annotations[ANNOTATION_API], b.annotations[ANNOTATION_KIND])
        key += (b.annotations[ANNOTATION_NAME],)
        if key in seen:
            raise BundleError(f"two bundle layers are {key[1]} {key[2]!r}")
        seen.add(key)
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(b.data)).hexdigest() for b in layers]
    config = {"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    data = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    return Bundle(Blob(CONFIG_TYPE, data, {}), layers)


def bundle_ref(pt: dict[str, Any], ref: str) -> dict[str, Any]:
    """A ``taskRef`` through the bundles resolver, into the bundle at ``ref``."""
    name = pt["taskRef"]["name"]
    return {
        "resolver": "bundles",
        "params": [
            {"name": "bundle", "value": ref},
            {"name": "name", "value": name},
            {"name": "kind", "value": "task"},
        ],
    }


def catalog_docs(ref: str) -> list[dict[str, Any]]:
    """Every catalog Task, then every Pipeline with its tasks taken from the bundle at ``ref``."""
    from taskyard.catalog import PIPELINES, TASKS
    from taskyard.render import tekton

    docs = [tekton.task(t) for t in TASKS.values()]
    for p in PIPELINES.values():
        doc = copy.deepcopy(tekton.pipeline(p))
        for key in ("tasks", "finally"):
            for pt in doc["spec"].get(key, []):
                pt["taskRef"] = bundle_ref(pt, ref)
        docs.append(doc)
    return docs


# ---- pushing (OCI distribution spec: blobs by POST+PUT, then the manifest by tag) -------------
_REF = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*):(?P<tag>[\w][\w.-]*)$")


def parse_ref(ref: str) -> tuple[str, str, str]:
    m = _REF.match(ref)
    if not m or ("." not in m["host"] and ":" not in m["host"] and m["host"] != "localhost"):
        raise BundleError(f"{ref!r} is not REGISTRY/REPOSITORY:TAG (e.g. ghcr.io/you/catalog:0.1)")
    return m["host"], m["repo"], m["tag"]


class Registry:
    """The few registry calls a push needs; anonymous, basic or bearer-token auth."""

    def __init__(self, host: str, *, plain_http: bool = False) -> None:
        self.base = ("http://" if plain_http else "https://") + host
        user, password = os.environ.get("TASKYARD_REGISTRY_USER"), None
        if user:
            password = os.environ.get("TASKYARD_REGISTRY_PASSWORD", "")
        self.basic = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        )
        self.token: str | None = None

    def call(
        self, method: str, url: str, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str]]:
        url = url if url.startswith("http") else self.base + url
        for attempt in (1, 2):
            req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
            auth = f"Bearer {self.token}" if self.token else self.basic
            if auth:
                req.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, dict(resp.headers)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "")
                if e.code == 401 and attempt == 1 and challenge.startswith("Bearer "):
                    self.token = self._token(challenge)
                    continue
                if e.code == 404 and method == "HEAD":
                    return 404, dict(e.headers)
                detail = e.read().decode(errors="replace").strip().splitlines()[:1]
                raise BundleError(
                    f"registry {method} {urllib.parse.urlsplit(url).path}: HTTP {e.code} "
                    + (detail[0][:200] if detail else "")
                ) from None
            except urllib.error.URLError as e:
                raise BundleError(f"registry {self.base} unreachable: {e.reason}") from None
        raise BundleError(f"registry {self.base}: authentication failed")

    def _token(self, challenge: str) -> str:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k != "realm"})
        req = urllib.request.Request(f"{fields.get('realm', '')}?{query}")
        if self.basic:
            req.add_header("Authorization", self.basic)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, ValueError) as e:
            raise BundleError(f"registry token from {fields.get('realm')!r} failed: {e}") from None
        return body.get("token") or body.get("access_token") or ""

    def put_blob(self, repo: str, blob: Blob) -> None:
        status, _ = self.call("HEAD", f"/v2/{repo}/blobs/{blob.digest}")
        if status == 200:
            return
        _, headers = self.call("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        location = headers.get("Location") or headers.get("location") or ""
        if not location:
            raise BundleError("registry gave no upload location")
        if not location.startswith("http"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(blob.digest)}"
        self.call("PUT", url, blob.data, {"Content-Type": "application/octet-stream"})

    def put_manifest(self, repo: str, tag: str, manifest: bytes) -> str:
        _, headers = self.call(
            "PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_TYPE}
        )
        return headers.get("Docker-Content-Digest", "")


def push(bundle: Bundle, ref: str, *, plain_http: bool = False) -> str:
    """Push ``bundle`` as ``ref``; return ``ref@digest`` (the digest the registry confirmed)."""
    host, repo, tag = parse_ref(ref)
    registry = Registry(host, plain_http=plain_http)
    for blob in (*bundle.layers, bundle.config):
        registry.put_blob(repo, blob)
    confirmed = registry.put_manifest(repo, tag, bundle.manifest)
    if confirmed and confirmed != bundle.digest:
        raise BundleError(f"registry stored {confirmed}, expected {bundle.digest}")
    return f"{ref}@{bundle.digest}"
