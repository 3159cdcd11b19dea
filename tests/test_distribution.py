"""Distribution: install sets (kustomize), git-resolver Pipelines, ClusterWorkflowTemplates,
Artifact Hub metadata, core kinds under kubernetes-validate, and the Tekton bundle push."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard import __version__, bundle
from taskyard.catalog import PIPELINES, TASKS
from taskyard.errors import RenderError
from taskyard.render import artifacthub, cluster, emit, kustomize, resolver, tekton
from tests import schemas

ROOT = Path(__file__).resolve().parents[1]
RENDERED = emit.rendered()
SETS = {s.folder: s for s in kustomize.install_sets(RENDERED)}
# API groups of Kubernetes' own kinds (what kubernetes-validate knows); CRDs are checked elsewhere.
CORE_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io"}
CORE_GROUPS |= {"networking.k8s.io", "scheduling.k8s.io", "storage.k8s.io", "coordination.k8s.io"}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def resolve(folder: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """What ``kubectl apply -k folder`` would apply, read from the committed files: (path, doc)."""
    assert folder not in seen, f"cycle through {folder}"
    kz = yaml.safe_load((ROOT / folder / kustomize.FILE).read_text())
    assert set(kz) == {"apiVersion", "kind", "resources"} and kz["kind"] == "Kustomization"
    out = []
    for res in kz["resources"]:
        rel = posixpath.normpath(posixpath.join(folder, res))
        path = ROOT / rel
        if path.is_dir():
            assert (path / kustomize.FILE).is_file(), f"{folder}: {res} is no kustomization"
            out += resolve(rel, (*seen, folder))
        else:
            assert path.is_file(), f"{folder}: {res} does not exist"
            assert rel.startswith(folder + "/"), f"{folder}: file {res} outside the set's folder"
            out += [(rel, d) for d in _docs(path.read_text())]
    return out


def _ids(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


# ---- install sets ----------------------------------------------------------------------------
def test_committed_distribution_files_match_a_fresh_render() -> None:
    assert emit.drift(ROOT, ["distribution"]) == [], "run `taskyard render`"


def test_every_set_applies_and_holds_no_generate_name_object() -> None:
    assert set(SETS) >= {"tasks", "pipelines", "resolver", "hera", "hera/cron", "hera/cluster"}
    assert {"triggers/tekton", "triggers/argo-events"} <= set(SETS)
    for folder in SETS:
        for rel, doc in resolve(folder):
            assert "/samples/" not in rel, (folder, rel)
            assert "generateName" not in doc["metadata"] and doc["metadata"].get("name"), rel


def test_sets_install_exactly_the_right_things() -> None:
    tasks = _ids([d for _, d in resolve("tasks")])
    assert tasks == {("Task", t.name) for t in TASKS.values()}
    pipelines = [d for _, d in resolve("pipelines")]
    needed = {
        ("Task", pt["taskRef"]["name"])
        for d in pipelines
        if d["kind"] == "Pipeline"
        for pt in d["spec"]["tasks"] + d["spec"].get("finally", [])
    }
    assert needed <= _ids(pipelines)
    assert {("Pipeline", p) for p in PIPELINES} <= _ids(pipelines)
    assert {d["kind"] for _, d in resolve("resolver")} == {"Pipeline"}  # tasks come from git
    hera = [d for _, d in resolve("hera")]
    assert "CronWorkflow" not in {d["kind"] for d in hera}  # the calendar race (finding 7)
    assert {("WorkflowTemplate", p) for p in PIPELINES} <= _ids(hera)
    assert {d["kind"] for _, d in resolve("hera/cron")} == {"CronWorkflow"}
    assert {d["kind"] for _, d in resolve("hera/cluster")} == {"ClusterWorkflowTemplate"}


def test_files_are_picked_by_rule_not_listed() -> None:
    """Every rendered YAML object lands in a set (samples excepted): hera/rbac.yaml included."""
    in_sets = {rel for s in SETS.values() for rel in s.files}
    for rel in RENDERED:
        if not rel.endswith(".yaml") or rel.endswith(kustomize.FILE) or "/samples/" in rel:
            continue
        assert rel in in_sets, f"{rel} is in no install set"
    extra = {**RENDERED, "hera/extra.yaml": "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}"}
    assert "hera/extra.yaml" in {f for s in kustomize.install_sets(extra) for f in s.files}


@pytest.mark.parametrize(
    ("rel", "text", "message"),
    [
        ("hera/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n", "name"),
        (
            "hera/x.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: c}\n",
            "cron",
        ),
        ("tasks/x/0.1/x.yaml", "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {}\n", "name"),
    ],
)
def test_render_refuses_an_unapplyable_set(rel: str, text: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        kustomize.install_sets({**RENDERED, rel: text})


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) not installed")
@pytest.mark.parametrize("folder", sorted(SETS))
def test_kubectl_kustomize_builds_each_set(folder: str) -> None:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert _ids(_docs(proc.stdout)) == _ids([d for _, d in resolve(folder)])


# ---- git-resolver Pipelines ------------------------------------------------------------------
def _strict(kind: str):
    return schemas.strict_validator(schemas.schema_path(f"tekton-v1.15.0/v1-openapiv3/{kind}.json"))


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_resolver_pipeline_is_valid_and_pinned(name: str) -> None:
    p = PIPELINES[name]
    doc = yaml.safe_load(RENDERED[resolver.path(p)])
    assert schemas.errors(_strict("Pipeline"), doc) == []
    plain = tekton.pipeline(p)
    refs = []
    for key in ("tasks", "finally"):
        for ours, theirs in zip(doc["spec"].get(key, []), plain["spec"].get(key, []), strict=True):
            assert {k: v for k, v in ours.items() if k != "taskRef"} == {
                k: v for k, v in theirs.items() if k != "taskRef"
            }
            refs.append((ours["taskRef"], theirs["taskRef"]["name"]))
    for ref, task in refs:
        assert ref["resolver"] == "git" and "name" not in ref
        params = {x["name"]: x["value"] for x in ref["params"]}
        assert params["url"] == resolver.CATALOG_SOURCE.repo_url
        assert params["revision"] == f"v{__version__}"
        target = yaml.safe_load(RENDERED[params["pathInRepo"]])  # the file exists at that path
        assert (target["kind"], target["metadata"]["name"]) == ("Task", task)


# ---- ClusterWorkflowTemplates ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_cluster_workflow_template_is_the_template_cluster_wide(name: str) -> None:
    p = PIPELINES[name]
    doc = yaml.safe_load(RENDERED[cluster.path(p)])
    v = schemas.strict_validator(
        schemas.schema_path("argo-workflows-v4.1.2/schema.json"),
        "io.argoproj.workflow.v1alpha1.ClusterWorkflowTemplate",
    )
    assert schemas.errors(v, doc) == []
    template = yaml.safe_load(RENDERED[f"hera/{name}.yaml"])
    assert doc["kind"] == "ClusterWorkflowTemplate" and "namespace" not in doc["metadata"]
    assert doc["spec"] == template["spec"]


# ---- Artifact Hub ----------------------------------------------------------------------------
# The annotations artifacthub/hub's Tekton tracker reads (internal/tracker/source/tekton/tekton.go)
# and its category list (docs/tekton_annotations.md).
HUB_ANNOTATIONS = {
    "artifacthub.io/" + k
    for k in (
        "alternativeName",
        "category",
        "changes",
        "license",
        "links",
        "maintainers",
        "provider",
        "recommendations",
        "screenshots",
    )
}
HUB_CATEGORIES = {
    "ai-machine-learning",
    "database",
    "integration-delivery",
    "monitoring-logging",
    "networking",
    "security",
    "storage",
    "streaming-messaging",
}
UUID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


@pytest.mark.parametrize("folder", artifacthub.FOLDERS)
def test_artifacthub_repo_file(folder: str) -> None:
    meta = yaml.safe_load(RENDERED[f"{folder}/{artifacthub.FILE}"])
    assert set(meta) <= {"repositoryID", "owners", "ignore"}
    assert UUID.match(meta["repositoryID"])
    assert meta["owners"] and all(o.get("email") for o in meta["owners"])
    # The dir-based tracker's rule: <folder>/<name>/<semver>/<name>.yaml, label = folder version.
    for rel in RENDERED:
        m = re.match(rf"^{folder}/([^/]+)/([^/]+)/\1\.yaml$", rel)
        if m:
            doc = yaml.safe_load(RENDERED[rel])
            assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == m.group(2)


def test_artifacthub_annotations_are_what_the_hub_parses() -> None:
    notes = artifacthub.annotations()
    assert set(notes) <= HUB_ANNOTATIONS and notes["artifacthub.io/category"] in HUB_CATEGORIES
    maintainers = yaml.safe_load(notes["artifacthub.io/maintainers"])
    assert maintainers and all(m["email"] for m in maintainers)  # entries without one are dropped
    links = {x["name"]: x["url"] for x in yaml.safe_load(notes["artifacthub.io/links"])}
    assert links["support"].startswith("https://")


# ---- core kinds: kubernetes-validate strict --------------------------------------------------
def test_every_core_kind_rendered_anywhere_passes_kubernetes_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    seen = set()
    for rel, text in sorted(RENDERED.items()):
        if not rel.endswith(".yaml"):
            continue
        for doc in _docs(text):
            group = doc.get("apiVersion", "").rpartition("/")[0]
            if group in CORE_GROUPS:
                seen.add(doc["kind"])
                try:
                    kv.validate(doc, kv.latest_version(), strict=True)
                except kv.ValidationError as e:
                    pytest.fail(f"{rel}: {doc['kind']} {doc['metadata'].get('name')}: {e}")
    assert {"ServiceAccount", "Role", "RoleBinding", "CronJob", "ConfigMap"} <= seen


# ---- Tekton bundle ---------------------------------------------------------------------------
REF = "127.0.0.1:5000/taskyard-catalog:0.1.0"


def test_bundle_follows_the_contract() -> None:
    built = bundle.build(bundle.catalog_docs(REF))
    manifest = json.loads(built.manifest)
    assert manifest["mediaType"] == bundle.MANIFEST_TYPE and len(manifest["layers"]) <= 20
    names = set()
    for desc, blob in zip(manifest["layers"], built.layers, strict=True):
        assert desc["digest"] == "sha256:" + hashlib.sha256(blob.data).hexdigest()
        assert desc["mediaType"].endswith("tar+gzip")  # compressed, not zstd
        a = desc["annotations"]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.data))) as tar:
            (member,) = tar.getmembers()  # one resource per layer
            doc = yaml.safe_load(tar.extractfile(member).read())
        assert a[bundle.ANNOTATION_KIND] == doc["kind"].lower()  # lower-cased and singular
        assert a[bundle.ANNOTATION_NAME] == doc["metadata"]["name"]
        assert a[bundle.ANNOTATION_API] == doc["apiVersion"]
        names.add((a[bundle.ANNOTATION_KIND], a[bundle.ANNOTATION_NAME]))
        assert schemas.errors(_strict(doc["kind"]), doc) == []
        if doc["kind"] == "Pipeline":
            for pt in doc["spec"]["tasks"]:
                params = {p["name"]: p["value"] for p in pt["taskRef"]["params"]}
                assert params["bundle"] == REF and ("task", params["name"]) in names
    assert {("task", t) for t in TASKS} | {("pipeline", p) for p in PIPELINES} == names
    config = json.loads(built.config.data)
    assert len(config["rootfs"]["diff_ids"]) == len(built.layers)
    assert bundle.build(bundle.catalog_docs(REF)).digest == built.digest  # reproducible


def test_bundle_refuses_what_the_contract_forbids() -> None:
    task = tekton.task(next(iter(TASKS.values())))
    with pytest.raises(bundle.BundleError, match="at most 20"):
        bundle.build([task] * 21)
    with pytest.raises(bundle.BundleError, match="two bundle layers"):
        bundle.build([task, task])
    with pytest.raises(bundle.BundleError, match="only Tekton"):
        bundle.build([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(tmp_path: Path):
    """Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1, stopped by PID."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.path.exists(binary):
        if os.environ.get("CI"):
            pytest.fail("docker-registry missing in CI (make test installs it)")
        pytest.skip("docker-registry not installed (apt-get install docker-registry)")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log = open(tmp_path / "registry.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail((tmp_path / "registry.log").read_text()[-500:])
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_bundle_push_to_a_real_registry(registry: str) -> None:
    from taskyard import cli

    ref = f"{registry}/taskyard-catalog:{__version__}"
    built = bundle.build(bundle.catalog_docs(ref))
    assert cli.main(["images", "bundle", "--registry", registry, "--push", "--plain-http"]) == 0
    req = urllib.request.Request(
        f"http://{registry}/v2/taskyard-catalog/manifests/{__version__}",
        headers={"Accept": bundle.MANIFEST_TYPE},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        stored = resp.read()
        assert resp.headers["Docker-Content-Digest"] == built.digest
    assert stored == built.manifest
    layer = json.loads(stored)["layers"][0]
    with urllib.request.urlopen(
        f"http://{registry}/v2/taskyard-catalog/blobs/{layer['digest']}", timeout=10
    ) as resp:
        assert hashlib.sha256(resp.read()).hexdigest() == layer["digest"].split(":")[1]
    # a second push finds every blob already there and changes nothing
    assert bundle.push(built, ref, plain_http=True) == f"{ref}@{built.digest}"
