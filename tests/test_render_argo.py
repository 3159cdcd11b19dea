"""Argo rendering: schema-valid in strict mode, lossless through Hera, faithful to the spec.

The parity of the DAG with the spec (tasks, deps, gates, params, images, commands) is in
``tests/test_parity.py`` (``argo_graph``); this file covers what only Argo has.
"""

from __future__ import annotations

import copy
import hashlib
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hera.workflows import CronWorkflow, WorkflowTemplate
from hera.workflows.models import Toleration

from taskyard.catalog import PIPELINES
from taskyard.errors import RenderError
from taskyard.render import argo, argo_files, emit
from taskyard.spec import (
    TASKS_STATUS,
    Param,
    PipelineResult,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    Result,
    TaskSpec,
    When,
    Workspace,
    param,
    result,
    task_status,
)
from tests import schemas
from tests.graph import spec_graph
from tests.test_parity import argo_graph

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "argo-workflows-v4.1.2/schema.json"
KIND = "io.argoproj.workflow.v1alpha1.{}"
FILES = argo_files.files()
# The workflow files; hera/rbac.yaml (core kinds) is checked in test_render_runs_as_rendered.py.
RENDERED = {path: text for path, text in FILES.items() if path != argo_files.RBAC}
DOCS = {path: yaml.safe_load(text) for path, text in RENDERED.items()}


def strict_errors(doc: dict[str, Any]) -> list[str]:
    v = schemas.strict_validator(schemas.schema_path(SCHEMA), KIND.format(doc["kind"]))
    return schemas.errors(v, doc)


def template_doc(name: str, opts: argo.Options | None = None) -> dict[str, Any]:
    return argo.workflow_template(PIPELINES[name], opts).to_dict()


def templates_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def run_program(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Hera program as a user does: its own interpreter, from the repository root."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def program(monkeypatch, capsys):
    """Run a Hera program in this process (the same ``__main__`` path, without a 2 s start)."""
    monkeypatch.syspath_prepend(str(ROOT / "hera"))
    monkeypatch.chdir(ROOT)

    def run(script: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", [script, *args])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        out, err = capsys.readouterr()
        return exit_.value.code, out, err

    return run


# ---- the files -------------------------------------------------------------------------------
def test_one_template_per_pipeline_and_the_cron():
    assert sorted(RENDERED) == sorted(
        [f"hera/{n}.yaml" for n in PIPELINES]
        + ["hera/cron/retrain-cron.yaml", "hera/cron/drift-retrain-cron.yaml"]
    )
    for path, text in RENDERED.items():
        assert text.startswith(emit.HEADER), path
        kind = "CronWorkflow" if path.endswith("-cron.yaml") else "WorkflowTemplate"
        assert DOCS[path]["kind"] == kind


def test_committed_files_equal_a_fresh_render():
    assert emit.drift(ROOT, ["argo"]) == []


@pytest.mark.parametrize("path", sorted(RENDERED))
def test_rendered_docs_are_valid_in_strict_mode(path: str):
    assert strict_errors(DOCS[path]) == []


def test_strict_mode_catches_a_planted_typo():
    doc = copy.deepcopy(DOCS["hera/train-eval-deploy.yaml"])
    train = templates_by_name(doc)["train"]
    train["activeDeadlineSecond"] = train.pop("activeDeadlineSeconds")  # the typo
    plain = schemas.plain_validator(schemas.schema_path(SCHEMA), KIND.format("WorkflowTemplate"))
    assert schemas.errors(plain, doc) == []  # the published schema alone lets it through
    errs = strict_errors(doc)
    assert len(errs) == 1
    assert errs[0].startswith("spec.templates.4:") and "activeDeadlineSecond" in errs[0]


def test_variants_are_valid_in_strict_mode():
    opts = argo.Options(
        name="my-ted-gpu",
        memoize_train=True,
        storage_class="fast",
        service_account="runner",
        secrets={"git-credentials": "my-creds"},
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
    )
    assert strict_errors(template_doc("train-eval-deploy-gpu", opts)) == []
    cron = argo.cron_workflow(
        PIPELINES["retrain"], argo.CronOptions(template="my-retrain", schedules=("0 * * * *",))
    )
    assert strict_errors(cron.to_dict()) == []


@pytest.mark.parametrize("path", sorted(RENDERED))
def test_hera_from_yaml_round_trips_without_loss(path: str):
    text = RENDERED[path].removeprefix(emit.HEADER)
    cls = CronWorkflow if DOCS[path]["kind"] == "CronWorkflow" else WorkflowTemplate
    back = cls.from_yaml(text)
    assert back.to_dict() == DOCS[path]
    assert argo_files.text(back) == RENDERED[path]


def test_render_is_deterministic():
    assert argo_files.files() == FILES


# ---- what the templates carry ------------------------------------------------------------------
def test_dag_exit_handler_and_run_settings():
    spec = PIPELINES["train-eval-deploy"]
    doc = DOCS["hera/train-eval-deploy.yaml"]
    s = doc["spec"]
    t = templates_by_name(doc)
    assert s["entrypoint"] == "pipeline" and s["onExit"] == "finally"
    assert [x["name"] for x in t["pipeline"]["dag"]["tasks"]] == [x.name for x in spec.tasks]
    (report,) = t["finally"]["dag"]["tasks"]
    args = {p["name"]: p["value"] for p in report["arguments"]["parameters"]}
    assert args == {
        "status": "{{workflow.status}}",
        "run-name": "{{workflow.name}}",
        "pipeline": "train-eval-deploy",
        "image": "{{workflow.parameters.steps-image}}",
    }
    assert s["activeDeadlineSeconds"] == spec.timeout
    assert s["podGC"] == {"strategy": "OnPodSuccess"}
    sc = s["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0 and sc["fsGroup"] == sc["runAsUser"]
    (claim,) = s["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "source"
    assert {v["name"]: v["secret"] for v in s["volumes"]} == {
        "git-credentials": {"secretName": "git-credentials", "optional": True},
        "ssh-directory": {"secretName": "ssh-directory", "optional": True},
        "mlflow": {"secretName": "mlflow", "optional": True},
    }
    for task in spec.all_tasks:
        tmpl = t[task.name]
        assert tmpl["container"]["securityContext"]["allowPrivilegeEscalation"] is False
        assert tmpl["activeDeadlineSeconds"] == str(task.timeout)
        assert tmpl.get("retryStrategy", {}).get("limit") == (
            str(task.retries) if task.retries else None
        )
    assert t["clone"]["retryStrategy"] == {"limit": "2", "retryPolicy": "Always"}
    assert "retryStrategy" not in t["train"]


def test_promote_gate_is_a_quoted_when_on_evaluate():
    tasks = {
        x["name"]: x
        for x in templates_by_name(DOCS["hera/retrain.yaml"])["pipeline"]["dag"]["tasks"]
    }
    gate = "'{{tasks.evaluate.outputs.parameters.promote}}' == 'true'"
    assert tasks["promote"]["when"] == gate and tasks["deploy"]["when"] == gate
    assert "when" not in tasks["train"]
    assert tasks["deploy"]["depends"] == "evaluate && promote && train"


def test_params_are_inputs_and_results_are_output_paths():
    t = templates_by_name(DOCS["hera/ci.yaml"])
    clone = t["clone"]
    inputs = {p["name"]: p for p in clone["inputs"]["parameters"]}
    assert "default" not in inputs["url"]  # required stays required
    assert inputs["depth"]["default"] == "1"
    assert "--url" in clone["container"]["args"]
    assert clone["container"]["args"][1] == "{{inputs.parameters.url}}"
    outputs = {o["name"]: o for o in clone["outputs"]["parameters"]}
    assert outputs["commit"]["valueFrom"] == {"path": argo.result_path("commit"), "default": ""}
    assert outputs["commit"]["globalName"] == "commit"  # the pipeline result
    env = {e["name"]: e["value"] for e in clone["container"]["env"]}
    assert env["TASKYARD_RESULT_COMMIT"] == argo.result_path("commit")
    mounts = {m["mountPath"]: m for m in clone["container"]["volumeMounts"]}
    assert mounts["/workspace/output"]["name"] == "source"
    assert mounts["/workspace/git-credentials"]["readOnly"] is True
    args = {p["name"] for p in DOCS["hera/ci.yaml"]["spec"]["arguments"]["parameters"]}
    assert args == {p.name for p in PIPELINES["ci"].params}


def test_gpu_train_requests_a_gpu_on_a_gpu_node():
    t = templates_by_name(DOCS["hera/train-eval-deploy-gpu.yaml"])["train"]
    assert t["container"]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert t["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert t["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    cpu = templates_by_name(DOCS["hera/train-eval-deploy.yaml"])["train"]
    assert not {"nodeSelector", "tolerations"} & set(cpu)
    assert "nvidia.com/gpu" not in cpu["container"]["resources"]["limits"]


def test_gpu_placement_can_be_overridden():
    opts = argo.Options(
        gpu_node_selector={"pool": "a100"},
        gpu_tolerations=(
            Toleration(key="dedicated", operator="Equal", value="ml", effect="NoSchedule"),
        ),
    )
    t = templates_by_name(template_doc("train-eval-deploy-gpu", opts))["train"]
    assert t["nodeSelector"] == {"pool": "a100"}
    assert t["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ]
    bare = argo.Options(gpu_node_selector={}, gpu_tolerations=())
    t = templates_by_name(template_doc("train-eval-deploy-gpu", bare))["train"]
    assert not {"nodeSelector", "tolerations"} & set(t)
    assert t["container"]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}


def test_memoize_train_key_is_a_valid_argo_cache_key():
    doc = template_doc("train-eval-deploy", argo.Options(memoize_train=True))
    t = templates_by_name(doc)
    assert all("memoize" not in t[n] for n in t if n != "train")
    m = t["train"]["memoize"]
    assert m["cache"] == {"configMap": {"name": "taskyard-train-cache"}} and m["maxAge"] == "168h"
    # Every input is hashed; what Argo evaluates must match its key pattern.
    names = re.findall(r"inputs\.parameters\['([\w-]+)'\]", m["key"])
    assert names == sorted(p.name for p in PIPELINES["train-eval-deploy"].get("train").task.params)
    commit, digest = "0123456789abcdef" * 2 + "01234567", hashlib.sha256(b"x").hexdigest()
    key = m["key"].replace("{{inputs.parameters.commit}}", commit)
    key = re.sub(r"\{\{=sprig\.sha256sum\(.*\)\}\}", digest, key)
    assert re.fullmatch(r"[a-zA-Z0-9][-a-zA-Z0-9]*", key), key
    assert "memoize" not in templates_by_name(DOCS["hera/retrain.yaml"])["train"]


def test_cron_runs_the_retrain_template_by_reference():
    cron = DOCS["hera/cron/retrain-cron.yaml"]["spec"]
    assert cron["schedules"] == ["0 3 * * *"] and cron["timezone"] == "Etc/UTC"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] > 0
    assert cron["successfulJobsHistoryLimit"] > 0 and cron["failedJobsHistoryLimit"] > 0
    wf = cron["workflowSpec"]
    assert wf["workflowTemplateRef"] == {"name": "retrain"}
    assert "templates" not in wf  # no copy: forking the template changes what runs
    assert DOCS["hera/retrain.yaml"]["metadata"]["name"] == "retrain"
    # the cluster values every trigger path carries (test_render_triggers)
    names = [p["name"] for p in wf["arguments"]["parameters"]]
    assert names == ["repo-url", "model-name", "mlflow-tracking-uri"]


def test_a_fork_renders_under_its_name():
    doc = template_doc("retrain", argo.Options(name="my-retrain"))
    assert doc["metadata"]["name"] == "my-retrain"
    assert argo_graph(doc)["tasks"] == spec_graph(PIPELINES["retrain"])["tasks"]
    cron = argo.cron_workflow(PIPELINES["retrain"], argo.CronOptions(template="my-retrain"))
    assert cron.to_dict()["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == "my-retrain"


def test_argo_parity_is_not_vacuous():
    doc = copy.deepcopy(DOCS["hera/train-eval-deploy.yaml"])
    for t in templates_by_name(doc)["pipeline"]["dag"]["tasks"]:
        t.pop("when", None)
    assert argo_graph(doc) != spec_graph(PIPELINES["train-eval-deploy"])


# ---- what cannot be expressed fails clearly ------------------------------------------------------
ECHO = TaskSpec(
    name="echo",
    display_name="echo",
    description="prints a value",
    image="$(params.image)",
    command=("python", "-c", "import sys; print(sys.argv[1])"),
    args=("$(params.value)", "$(results.out.path)", "$(workspaces.data.path)"),
    params=(Param(name="value"), Param(name="image", default="python:3.11-slim")),
    results=(Result(name="out"),),
    workspaces=(Workspace(name="data"), Workspace(name="creds", optional=True)),
)


def pipeline(*tasks: PipelineTask, finally_=(), results=(), name="p") -> PipelineSpec:
    return PipelineSpec(
        name=name,
        display_name="p",
        description="d",
        params=(Param(name="v", default="1"),),
        workspaces=(PipelineWorkspace(name="ws"),),
        tasks=tasks,
        finally_=finally_,
        results=results,
    )


def use(name: str, **kw) -> PipelineTask:
    kw.setdefault("params", {"value": param("v")})
    kw.setdefault("workspaces", {"data": "ws"})
    return PipelineTask(name=name, task=ECHO, **kw)


def test_small_pipeline_translates_every_reference():
    p = pipeline(
        use("a"),
        use(
            "b",
            params={"value": result("a", "out")},
            when=(
                When(input=param("v"), operator="notin", values=("0", "")),
                When(input=result("a", "out"), values=("x",)),
            ),
        ),
        finally_=(use("f", params={"value": result("a", "out") + "/" + TASKS_STATUS}),),
    )
    doc = argo.workflow_template(p).to_dict()
    assert strict_errors(doc) == []
    assert argo_graph(doc) == spec_graph(p)
    t = templates_by_name(doc)
    b = t["pipeline"]["dag"]["tasks"][1]
    assert b["when"] == (
        "('{{workflow.parameters.v}}' != '0' && '{{workflow.parameters.v}}' != '') && "
        "('{{tasks.a.outputs.parameters.out}}' == 'x')"
    )
    (f,) = t["finally"]["dag"]["tasks"]
    assert f["arguments"]["parameters"][0]["value"] == (
        "{{workflow.outputs.parameters.a-out}}/{{workflow.status}}"
    )
    assert t["a"]["outputs"]["parameters"][0]["globalName"] == "a-out"
    # An unbound optional workspace is an empty path, as on Tekton.
    assert t["a"]["container"]["args"] == [
        "{{inputs.parameters.value}}",
        argo.result_path("out"),
        "/workspace/data",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            lambda: pipeline(use("a"), finally_=(use("f", params={"value": task_status("a")}),)),
            "no Argo equivalent",
        ),
        (
            lambda: pipeline(
                use("a"), results=(PipelineResult(name="r", value=result("a", "out") + "!"),)
            ),
            "single task result",
        ),
        (lambda: pipeline(use("pipeline")), "reserved"),
        (lambda: pipeline(use("a", when=(When(input=param("v"), values=("it's",)),))), "quote"),
    ],
)
def test_inexpressible_specs_raise_render_errors(spec, message):
    with pytest.raises(RenderError, match=message):
        argo.workflow_template(spec())


def test_unknown_secret_workspace_and_cron_param_are_errors():
    with pytest.raises(RenderError, match="not an optional workspace"):
        argo.workflow_template(PIPELINES["ci"], argo.Options(secrets={"source": "x"}))
    with pytest.raises(RenderError, match="not a param"):
        argo.cron_workflow(PIPELINES["retrain"], argo.CronOptions(arguments={"nope": "1"}))


# ---- the Hera programs and the README ----------------------------------------------------------
def test_programs_print_the_committed_yaml(program):
    out = run_program("hera/ci.py").stdout  # one real run, as a user types it
    assert emit.HEADER + out == RENDERED["hera/ci.yaml"]
    for script, path in (
        ("hera/retrain_cron.py", "hera/cron/retrain-cron.yaml"),
        ("hera/train_eval_deploy_gpu.py", "hera/train-eval-deploy-gpu.yaml"),
    ):
        code, out, _ = program(script, "--print")
        assert code == 0 and emit.HEADER + out == RENDERED[path]


def test_print_run_is_a_valid_workflow_referencing_the_template(program):
    code, out, _ = program(
        "hera/train_eval_deploy.py",
        "--print-run",
        "-p",
        "repo-url=https://x/y.git",
        "-p",
        "min-score=0.9",
    )
    assert code == 0
    doc = yaml.safe_load(out)
    assert strict_errors(doc) == []
    assert doc["metadata"]["generateName"] == "train-eval-deploy-"
    assert doc["spec"]["workflowTemplateRef"] == {"name": "train-eval-deploy"}
    assert doc["spec"]["arguments"]["parameters"] == [
        {"name": "repo-url", "value": "https://x/y.git"},
        {"name": "min-score", "value": "0.9"},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--print-run"], "required param 'repo-url' is not set"),
        (["--print-run", "-p", "repo-url=x", "-p", "nope=1"], "has no param 'nope'"),
        (["--submit", "-p", "repo-url=x"], "needs --host"),
        (["--secret", "source=x"], "not an optional workspace"),
    ],
)
def test_program_errors_are_one_line(program, args, message, monkeypatch):
    monkeypatch.delenv("ARGO_SERVER_URL", raising=False)
    code, out, err = program("hera/ci.py", *args)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def readme_commands() -> list[str]:
    text = (ROOT / "hera/README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def readme_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "hera/README.md").read_text(), re.S)


def needs_cluster(cmd: str) -> bool:
    return cmd.startswith(("kubectl ", "argo ")) or "--submit" in cmd


def test_readme_has_the_three_how_tos():
    text = (ROOT / "hera/README.md").read_text()
    for heading in (
        "## Apply the templates",
        "## Submit a run with parameters",
        "## Fork a template",
    ):
        assert heading in text
    assert any(needs_cluster(c) and "-p repo-url=" in c for c in readme_commands())


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if not needs_cluster(c)])
def test_readme_command_runs(cmd: str, tmp_path: Path, program, capsys, monkeypatch):
    argv = shlex.split(cmd.split(" | ")[0])
    if argv[0] == "python":
        assert argv[1].startswith("hera/")
        code, out, err = program(*argv[1:])
        assert code == 0, err
        doc = yaml.safe_load(out)
        assert strict_errors(doc) == []
        if "--print-run" not in argv:
            assert doc["kind"] in ("WorkflowTemplate", "CronWorkflow")
        return
    assert argv[0] == "taskyard", f"a README command no test runs: {cmd}"
    from taskyard import cli

    check = "--check" in argv
    monkeypatch.chdir(ROOT if check else tmp_path)
    assert cli.main(argv[1:]) == 0, capsys.readouterr().err
    if not check:
        for path, text in RENDERED.items():
            assert (tmp_path / path).read_text() == text


@pytest.mark.parametrize("code", readme_python())
def test_readme_python_runs(code: str, capsys):
    exec(compile(code, "hera/README.md", "exec"), {"__name__": "__readme__"})
    doc = yaml.safe_load(capsys.readouterr().out)
    assert strict_errors(doc) == []
    assert templates_by_name(doc)["deploy"]["activeDeadlineSeconds"] == "1800"
