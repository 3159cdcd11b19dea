# ruff: noqa: E501 -- the YAML under test is written inline, one object per line, to read as YAML.
"""``taskyard run FILE.yaml``: Tekton and Argo semantics on small files, run for real.

The containers run as host subprocesses (the catalog's image names, so the subprocess backend
takes them; the commands are plain ``sh``): every test here starts real processes and reads
what they wrote. The same files under ``--executor docker`` are in test_docker_executor.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskyard.engines import run_file
from taskyard.engines.exprs import evaluate_depends, evaluate_when
from taskyard.errors import RunError
from taskyard.run.store import RunRecord, RunStore
from tests.cliutil import taskyard

IMG = "ghcr.io/taskyard/steps:0.1.0"
T = "tekton.dev/v1"
A = "argoproj.io/v1alpha1"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))


def write(tmp_path: Path, *docs: dict[str, Any], name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def run(path: Path, tmp_path: Path, **params: str) -> RunRecord:
    return run_file(path, params, {}, store=RunStore(tmp_path / "runs"))


def sh_task(name: str, script: str, *, params=(), results=(), workspaces=()) -> dict:
    """A Task with one step: ``sh -c SCRIPT`` with results as env paths (the step contract)."""
    env = [{"name": f"R_{r.upper()}", "value": f"$(results.{r}.path)"} for r in results]
    return {
        "apiVersion": T,
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {
            "params": [{"name": p, "type": "string", **({"default": d} if d is not None else {})}
                       for p, d in params],
            "results": [{"name": r} for r in results],
            "workspaces": [{"name": w} for w in workspaces],
            "steps": [{"name": "main", "image": IMG, "command": ["sh", "-c", script], "env": env}],
        },
    }  # fmt: skip


def pipeline(tasks: list[dict], *, params=(), final=(), results=(), workspaces=()) -> dict:
    spec: dict[str, Any] = {
        "params": [{"name": p, "type": "string", "default": d} for p, d in params]
    }
    if workspaces:
        spec["workspaces"] = [{"name": w} for w in workspaces]
    spec["tasks"] = tasks
    if final:
        spec["finally"] = list(final)
    if results:
        spec["results"] = [{"name": n, "value": v} for n, v in results]
    return {"apiVersion": T, "kind": "Pipeline", "metadata": {"name": "p"}, "spec": spec}


def states(rec: RunRecord) -> dict[str, str]:
    return {n: t.state for n, t in rec.tasks.items()}


# ---- Tekton -------------------------------------------------------------------------------
def test_tekton_results_params_when_and_finally(tmp_path: Path) -> None:
    tasks = [
        sh_task("produce", 'printf "%s-out" "$1" > "$R_VALUE"; printf no > "$R_GATE"',
                params=[("word", None)], results=["value", "gate"]),
        sh_task("echo", 'printf "%s" "$1" > "$R_GOT"', params=[("text", "")], results=["got"]),
        sh_task("status", 'printf "%s %s" "$1" "$2" > "$R_SEEN"',
                params=[("all", ""), ("one", "")], results=["seen"]),
    ]  # fmt: skip
    for t in tasks:  # pass the params as positional args of sh -c
        step = t["spec"]["steps"][0]
        step["command"] += ["sh", *[f"$(params.{p['name']})" for p in t["spec"]["params"]]]
    p = pipeline(
        [
            {"name": "a", "taskRef": {"name": "produce"}, "params": [{"name": "word", "value": "$(params.w)"}]},
            {"name": "gated", "taskRef": {"name": "echo"}, "when": [{"input": "$(tasks.a.results.gate)", "operator": "in", "values": ["yes"]}]},
            {"name": "after-gated", "taskRef": {"name": "echo"}, "runAfter": ["gated"], "params": [{"name": "text", "value": "ran"}]},
            {"name": "reads-gated", "taskRef": {"name": "echo"}, "params": [{"name": "text", "value": "$(tasks.gated.results.got)"}]},
            {"name": "b", "taskRef": {"name": "echo"}, "params": [{"name": "text", "value": "$(tasks.a.results.value)"}]},
        ],
        params=[("w", "hello")],
        final=[{"name": "f", "taskRef": {"name": "status"}, "params": [
            {"name": "all", "value": "$(tasks.status)"}, {"name": "one", "value": "$(tasks.gated.status)"}]}],
        results=[("b-got", "$(tasks.b.results.got)"), ("never", "$(tasks.gated.results.got)")],
    )  # fmt: skip
    rec = run(write(tmp_path, p, *tasks), tmp_path, w="hi")
    assert states(rec) == {
        "a": "Succeeded",
        "gated": "Skipped",  # its own when
        "after-gated": "Succeeded",  # runAfter a when-skipped task still runs
        "reads-gated": "Skipped",  # reads a result that was never written
        "b": "Succeeded",
        "f": "Succeeded",
    }
    assert rec.tasks["gated"].skip_kind == "when"
    assert rec.tasks["reads-gated"].skip_kind == "results"
    assert rec.tasks["b"].results == {"got": "hi-out"}
    assert rec.tasks["f"].results == {"seen": "Completed None"}
    assert rec.results == {"b-got": "hi-out"}  # an unresolvable pipeline result is left out
    assert rec.status == "Succeeded"


def test_tekton_missing_result_of_a_succeeded_task_fails_the_run(tmp_path: Path) -> None:
    tasks = [
        sh_task("quiet", "true", results=["value"]),
        sh_task("use", "true", params=[("v", None)]),
    ]
    p = pipeline([
        {"name": "a", "taskRef": {"name": "quiet"}},
        {"name": "b", "taskRef": {"name": "use"}, "params": [{"name": "v", "value": "$(tasks.a.results.value)"}]},
    ])  # fmt: skip
    rec = run(write(tmp_path, p, *tasks), tmp_path)
    assert rec.status == "Failed"
    assert "InvalidTaskResultReference" in rec.tasks["b"].reason


def test_tekton_finally_needs_its_own_timeout_budget(tmp_path: Path) -> None:
    """timeouts.pipeline alone: a DAG that uses it up leaves finally no time (issue 12, #10)."""
    tasks = [sh_task("slow", "sleep 30"), sh_task("report", "true")]
    p = pipeline([{"name": "a", "taskRef": {"name": "slow"}}],
                 final=[{"name": "report", "taskRef": {"name": "report"}}])  # fmt: skip

    def run_with(timeouts: dict) -> RunRecord:
        pr = {"apiVersion": T, "kind": "PipelineRun", "metadata": {"generateName": "p-"},
              "spec": {"pipelineRef": {"name": "p"}, "timeouts": timeouts}}  # fmt: skip
        return run(write(tmp_path, pr, p, *tasks, name="run.yaml"), tmp_path)

    starved = run_with({"pipeline": "2s"})
    assert starved.status == "Failed"
    assert starved.tasks["report"].state == "Skipped"
    budgeted = run_with({"pipeline": "10s", "tasks": "2s", "finally": "8s"})
    assert budgeted.status == "Failed"
    assert budgeted.tasks["a"].state == "Failed"
    assert budgeted.tasks["report"].state == "Succeeded"


def test_tekton_retries_script_workspaces_and_mount_paths(tmp_path: Path) -> None:
    flaky = sh_task("flaky", "")
    flaky["spec"]["workspaces"] = [{"name": "data", "mountPath": "/data"}]
    flaky["spec"]["steps"] = [
        {"name": "count", "image": IMG, "script": 'echo x >> /data/tries\n[ "$(wc -l < /data/tries)" -ge 2 ]'},
        {"name": "second", "image": IMG, "script": "#!/bin/sh\necho $(workspaces.data.path) > /data/where"},
    ]  # fmt: skip
    p = pipeline([{"name": "a", "taskRef": {"name": "flaky"}, "retries": 2,
                   "workspaces": [{"name": "data", "workspace": "ws"}]}], workspaces=["ws"])  # fmt: skip
    rec = run(write(tmp_path, p, flaky), tmp_path)
    assert rec.tasks["a"].state == "Succeeded"
    assert rec.tasks["a"].attempts == 2
    ws = Path(rec.workspaces["ws"])
    assert (ws / "tries").read_text().count("x") == 2
    # $(workspaces.data.path) is the mountPath, /data, which the host backend maps to the folder.
    assert (ws / "where").read_text().strip() == str(ws)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, t: t["spec"]["steps"][0].update(onError="continue"), "steps[0].onError is not supported"),
        (lambda p, t: p["spec"]["tasks"][0].update(matrix={}), ".matrix is not supported"),
        (lambda p, t: p["spec"]["tasks"][0]["taskRef"].update(name="nope"), "no Task named 'nope'"),
        (lambda p, t: p["spec"]["tasks"][0].update(params=[{"name": "zzz", "value": "1"}]), "'zzz' is not a param"),
        (lambda p, t: p["spec"]["tasks"][0].update(when=[{"cel": "true"}]), "when[0].cel is not supported"),
    ],
)  # fmt: skip
def test_tekton_unsupported_or_wrong_fields_are_one_line_errors(
    tmp_path: Path, mutate, message
) -> None:
    task = sh_task("t", "true")
    p = pipeline([{"name": "a", "taskRef": {"name": "t"}}])
    mutate(p, task)
    with pytest.raises(RunError, match=re.escape(message)):
        run(write(tmp_path, p, task), tmp_path)


def test_tekton_git_resolver_reads_a_tag_of_a_local_clone(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "catalog"
    (repo / "tasks").mkdir(parents=True)
    (repo / "tasks" / "t.yaml").write_text(
        yaml.safe_dump(sh_task("t", 'printf tagged > "$R_V"', results=["v"]))
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "t"], check=True)
    subprocess.run([*git, "tag", "v9"], check=True)
    (repo / "tasks" / "t.yaml").write_text("changed after the tag: not YAML a resolver reads {")
    ref = {"resolver": "git", "params": [{"name": "url", "value": "https://git.example/catalog.git"},
                                         {"name": "revision", "value": "v9"},
                                         {"name": "pathInRepo", "value": "tasks/t.yaml"}]}  # fmt: skip
    p = pipeline([{"name": "a", "taskRef": ref}])
    path = write(tmp_path, p)
    with pytest.raises(RunError, match="not reachable from here"):
        run(path, tmp_path)
    rec = run_file(path, {}, {}, git_repos={"https://git.example/catalog.git": str(repo)},
                   store=RunStore(tmp_path / "runs"))  # fmt: skip
    assert rec.tasks["a"].results == {"v": "tagged"}


# ---- Argo ---------------------------------------------------------------------------------
def container(name: str, script: str, *, inputs=(), outputs=()) -> dict:
    out = {"name": name, "container": {"image": IMG, "command": ["sh", "-c", script]}}
    if inputs:
        out["inputs"] = {
            "parameters": [
                {"name": i, **({"default": d} if d is not None else {})} for i, d in inputs
            ]
        }
    if outputs:
        out["outputs"] = {
            "parameters": [
                {
                    "name": o,
                    "valueFrom": {
                        "path": f"/tmp/out/{o}",
                        **({"default": d} if d is not None else {}),
                    },
                    **({"globalName": g} if g else {}),
                }
                for o, d, g in outputs
            ]
        }
    return out  # fmt: skip


def workflow_template(tasks: list[dict], templates: list[dict], *, args=(), exit_tasks=()) -> dict:
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "arguments": {
            "parameters": [
                {"name": n, **({"value": v} if v is not None else {}), **({"enum": e} if e else {})}
                for n, v, e in args
            ]
        },
    }
    spec["templates"] = [{"name": "main", "dag": {"tasks": tasks}}, *templates]
    if exit_tasks:
        spec["onExit"] = "exit"
        spec["templates"].append({"name": "exit", "dag": {"tasks": list(exit_tasks)}})
    return {"apiVersion": A, "kind": "WorkflowTemplate", "metadata": {"name": "wf"}, "spec": spec}  # fmt: skip


def test_argo_depends_when_outputs_globals_and_exit_handler(tmp_path: Path) -> None:
    templates = [
        container("produce", 'mkdir -p /tmp/out; printf "{{inputs.parameters.w}}!" > /tmp/out/v',
                  inputs=[("w", None)], outputs=[("v", None, "produced"), ("unwritten", "dflt", None)]),
        container("fail", "exit 3"),
        container("echo", 'mkdir -p /tmp/out; printf "%s" "{{inputs.parameters.t}}" > /tmp/out/got',
                  inputs=[("t", "")], outputs=[("got", None, None)]),
    ]  # fmt: skip
    tasks = [
        {"name": "a", "template": "produce", "arguments": {"parameters": [{"name": "w", "value": "{{workflow.parameters.w}}"}]}},
        {"name": "skipped", "template": "echo", "depends": "a", "when": "'{{tasks.a.outputs.parameters.v}}' == 'other'"},
        {"name": "after-skipped", "template": "echo", "depends": "skipped", "arguments": {"parameters": [{"name": "t", "value": "{{tasks.a.outputs.parameters.unwritten}}"}]}},
        {"name": "only-if-failed", "template": "echo", "depends": "a.Failed"},
    ]  # fmt: skip
    exit_tasks = [{"name": "report", "template": "echo", "arguments": {"parameters": [
        {"name": "t", "value": "{{workflow.status}} {{workflow.outputs.parameters.produced}}"}]}}]  # fmt: skip
    wt = workflow_template(tasks, templates, args=[("w", "x", ["x", "hi"])], exit_tasks=exit_tasks)
    rec = run(write(tmp_path, wt), tmp_path, w="hi")
    assert states(rec) == {
        "a": "Succeeded",
        "skipped": "Skipped",
        "after-skipped": "Succeeded",  # a bare name in depends accepts Skipped
        "only-if-failed": "Skipped",  # Omitted: its depends is false
        "report": "Succeeded",
    }
    assert rec.tasks["after-skipped"].results == {"got": "dflt"}  # valueFrom.default
    assert rec.tasks["report"].results == {"got": "Succeeded hi!"}
    assert rec.results == {"produced": "hi!"}
    with pytest.raises(RunError, match="not one of x, hi"):
        run(write(tmp_path, wt), tmp_path, w="nope")


def test_argo_output_of_a_task_that_did_not_run(tmp_path: Path) -> None:
    """An argument that only names such an output is not supplied: the input's default
    applies, and without one the consumer fails; a when naming it cannot be resolved."""
    templates = [
        container(
            "echo",
            'mkdir -p /tmp/out; printf "[%s]" "{{inputs.parameters.t}}" > /tmp/out/got',
            inputs=[("t", "dflt")],
            outputs=[("got", None, None)],
        ),
        container("strict", "true", inputs=[("t", None)]),
    ]
    tasks = [
        {"name": "a", "template": "echo", "when": "'1' == '2'"},
        {"name": "b", "template": "echo", "depends": "a", "arguments": {"parameters": [{"name": "t", "value": "{{tasks.a.outputs.parameters.got}}"}]}},
        {"name": "c", "template": "strict", "depends": "a", "arguments": {"parameters": [{"name": "t", "value": "{{tasks.a.outputs.parameters.got}}"}]}},
        {"name": "d", "template": "echo", "depends": "a", "when": "'{{tasks.a.outputs.parameters.got}}' == 'x'"},
    ]  # fmt: skip
    rec = run(write(tmp_path, workflow_template(tasks[:2], templates)), tmp_path)
    assert rec.tasks["b"].results == {"got": "[dflt]"}
    assert rec.status == "Succeeded"
    for consumer, why in (
        (tasks[2], "inputs.parameters.t was not supplied"),
        (tasks[3], "Unable to resolve: {{tasks.a.outputs.parameters.got}}"),
    ):
        rec = run(write(tmp_path, workflow_template([tasks[0], consumer], templates)), tmp_path)
        assert why in rec.tasks[consumer["name"]].reason
        assert rec.status == "Failed"


def test_argo_retry_policy_and_missing_outputs(tmp_path: Path) -> None:
    def once(policy: str | None) -> RunRecord:
        templates = [container("quiet", "true", outputs=[("v", None, None)])]
        templates[0]["retryStrategy"] = {
            "limit": "1",
            **({"retryPolicy": policy} if policy else {}),
        }
        return run(
            write(tmp_path, workflow_template([{"name": "a", "template": "quiet"}], templates)),
            tmp_path,
        )

    default = once(None)  # OnFailure: an unreadable output is an error, not a failure
    assert default.tasks["a"].state == "Failed" and default.tasks["a"].attempts == 1
    assert "no file and no default" in default.tasks["a"].reason
    assert once("Always").tasks["a"].attempts == 2


def test_argo_a_handled_failure_does_not_fail_the_workflow(tmp_path: Path) -> None:
    """Only a failed *leaf* branch fails a DAG (dag.go assessDAGPhase): `a.Failed` handles a."""
    templates = [
        container("fail", "exit 3"),
        container(
            "echo",
            'mkdir -p /tmp/out; echo "{{inputs.parameters.t}}" > /tmp/out/got',
            inputs=[("t", "")],
            outputs=[("got", None, None)],
        ),
    ]
    tasks = [
        {"name": "a", "template": "fail"},
        {
            "name": "handler",
            "template": "echo",
            "depends": "a.Failed",
            "arguments": {"parameters": [{"name": "t", "value": "handled"}]},
        },
    ]
    exit_tasks = [{"name": "report", "template": "echo", "arguments": {"parameters": [{"name": "t", "value": "{{workflow.status}}"}]}}]  # fmt: skip
    rec = run(write(tmp_path, workflow_template(tasks, templates, exit_tasks=exit_tasks)), tmp_path)
    assert states(rec) == {"a": "Failed", "handler": "Succeeded", "report": "Succeeded"}
    assert rec.tasks["handler"].results == {"got": "handled"}  # one trailing newline trimmed
    assert rec.tasks["report"].results == {"got": "Succeeded"}
    assert rec.status == "Succeeded"
    tasks[1]["depends"] = "a"  # now nothing handles it
    rec = run(write(tmp_path, workflow_template(tasks, templates, exit_tasks=exit_tasks)), tmp_path)
    assert rec.tasks["handler"].skip_kind == "depends"
    assert rec.tasks["report"].results == {"got": "Failed"}
    assert rec.status == "Failed"


def test_tekton_enum_emptydir_per_pod_and_derived_timeouts(tmp_path: Path) -> None:
    writer = sh_task("writer", "echo x > $(workspaces.scratch.path)/f", workspaces=["scratch"])
    reader = sh_task("reader", "test ! -e $(workspaces.scratch.path)/f", workspaces=["scratch"])
    for t in (writer, reader):
        t["spec"]["params"] = [
            {"name": "mode", "type": "string", "default": "a", "enum": ["a", "b"]}
        ]
    ws = [{"name": "scratch", "workspace": "ws"}]
    p = pipeline([
        {"name": "w", "taskRef": {"name": "writer"}, "workspaces": ws},
        {"name": "r", "taskRef": {"name": "reader"}, "workspaces": ws, "runAfter": ["w"]},
    ], workspaces=["ws"])  # fmt: skip
    pr = {"apiVersion": T, "kind": "PipelineRun", "metadata": {"name": "r1"},
          "spec": {"pipelineRef": {"name": "p"}, "workspaces": [{"name": "ws", "emptyDir": {}}],
                   "timeouts": {"pipeline": "1h", "finally": "10m"}}}  # fmt: skip
    path = write(tmp_path, pr, p, writer, reader)
    rec = run(path, tmp_path)
    assert states(rec) == {"w": "Succeeded", "r": "Succeeded"}  # an emptyDir is the pod's own
    from taskyard.engines import prepare

    assert prepare(path, {}, {}).deadlines() == (
        3000.0,
        600.0,
        3600.0,
    )  # tasks = pipeline - finally
    p["spec"]["tasks"][0]["params"] = [{"name": "mode", "value": "c"}]
    rec = run(write(tmp_path, pr, p, writer, reader), tmp_path)
    assert "InvalidParamValue" in rec.tasks["w"].reason


def test_argo_unsupported_fields_name_the_field(tmp_path: Path) -> None:
    templates = [container("t", "true")]
    templates[0]["memoize"] = {"key": "k"}
    with pytest.raises(RunError, match=r"template 't'\.memoize is not supported by taskyard run"):
        run(
            write(tmp_path, workflow_template([{"name": "a", "template": "t"}], templates)),
            tmp_path,
        )
    templates = [container("t", "echo {{=sprig.upper('x')}}")]
    rec = run(
        write(tmp_path, workflow_template([{"name": "a", "template": "t"}], templates)), tmp_path
    )
    assert "expression tags" in rec.tasks["a"].reason


def test_expressions_follow_argo() -> None:
    assert evaluate_when("'true' == 'true' && ('a' != 'b' || false)", "w")
    assert not evaluate_when("!('x' == 'x')", "w")
    assert evaluate_when("2 > 1.5", "w")
    assert evaluate_when("heads == heads", "w")  # a bare word is a string (steps.go)
    with pytest.raises(RunError, match="cannot read"):
        evaluate_when("'a' =~ 'b'", "w")
    st = {"a": "Skipped", "b": "Failed"}
    assert evaluate_depends("a && b.Failed", st, "d")
    assert not evaluate_depends("a.Succeeded || !b.Failed", st, "d")
    with pytest.raises(RunError, match="unknown task"):
        evaluate_depends("c", st, "d")


def test_cli_runs_a_file_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    task = sh_task("t", 'printf ok > "$R_V"', results=["v"])
    path = write(
        tmp_path,
        pipeline(
            [{"name": "a", "taskRef": {"name": "t"}}], results=[("v", "$(tasks.a.results.v)")]
        ),
        task,
    )
    proc = taskyard("run", str(path), env={**os.environ, "TASKYARD_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "v = ok" in proc.stdout
    bad = write(tmp_path, {"apiVersion": T, "kind": "Pipeline", "metadata": {"name": "p"},
                           "spec": {"tasks": [], "bogus": 1}}, name="bad.yaml")  # fmt: skip
    proc = taskyard("run", str(bad), env={**os.environ, "TASKYARD_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Pipeline.spec.bogus is not supported by taskyard run"
    ]


def test_a_usage_error_of_a_step_is_the_reason(tmp_path: Path) -> None:
    """A render passing a wrong flag: the step's argparse line becomes the task's reason."""
    task = sh_task("t", "")
    task["spec"]["steps"][0]["command"] = [
        "python",
        "-c",
        "import argparse; argparse.ArgumentParser(prog='python -m step').parse_args()",
        "--deep",
        "1",
    ]
    rec = run(write(tmp_path, pipeline([{"name": "a", "taskRef": {"name": "t"}}]), task), tmp_path)
    assert rec.tasks["a"].reason == "unrecognized arguments: --deep 1"


# ---- who the pods run as: accepted, no effect on one machine (engines/*.py docstrings) ----------
def test_tekton_service_accounts_are_no_ops_and_a_wrong_task_run_spec_fails(tmp_path: Path) -> None:
    task = sh_task("t", 'printf ok > "$R_V"', results=["v"])
    p = pipeline(
        [{"name": "a", "taskRef": {"name": "t"}}], final=[{"name": "z", "taskRef": {"name": "t"}}]
    )
    p["metadata"]["labels"] = {"app.kubernetes.io/part-of": "taskyard"}
    specs = [
        {"pipelineTaskName": "a", "serviceAccountName": "taskyard-clone"},
        {
            "pipelineTaskName": "z",
            "serviceAccountName": "taskyard-report",
            "podTemplate": {"nodeSelector": {"k": "v"}},
            "metadata": {"labels": {"x": "y"}},
        },
    ]
    pr = {"apiVersion": T, "kind": "PipelineRun", "metadata": {"name": "r1"},
          "spec": {"pipelineRef": {"name": "p"},
                   "taskRunTemplate": {"serviceAccountName": "taskyard-ml",
                                       "podTemplate": {"securityContext": {"fsGroup": 65532}}},
                   "taskRunSpecs": specs}}  # fmt: skip
    rec = run(write(tmp_path, pr, p, task), tmp_path)
    assert states(rec) == {"a": "Succeeded", "z": "Succeeded"}
    # pkg/reconciler/pipelinerun/resources/pipelinerunresolution.go ValidateTaskRunSpecs
    specs.append({"pipelineTaskName": "nope", "serviceAccountName": "x"})
    with pytest.raises(
        RunError,
        match=re.escape(
            "InvalidTaskRunSpecs: pipelineRun's taskrunSpecs defined wrong taskName: 'nope'"
        ),
    ):
        run(write(tmp_path, pr, p, task), tmp_path)
    specs[-1] = {"pipelineTaskName": "a", "stepSpecs": []}  # not implemented: named, never skipped
    with pytest.raises(RunError, match=re.escape("taskRunSpecs[2].stepSpecs is not supported")):
        run(write(tmp_path, pr, p, task), tmp_path)


def test_argo_service_accounts_executor_and_pod_metadata_are_no_ops(tmp_path: Path) -> None:
    t = container("t", "mkdir -p /tmp/out && printf ok > /tmp/out/v", outputs=[("v", None, None)])
    t.update(serviceAccountName="taskyard-clone", automountServiceAccountToken=False,
             executor={"serviceAccountName": "taskyard-workflow"})  # fmt: skip
    wf = workflow_template([{"name": "a", "template": "t"}], [t])
    wf["spec"].update(serviceAccountName="taskyard-ml", executor={"serviceAccountName": "taskyard-workflow"},
                      podMetadata={"labels": {"app.kubernetes.io/part-of": "taskyard"}})  # fmt: skip
    rec = run(write(tmp_path, wf), tmp_path)
    assert rec.tasks["a"].results == {"v": "ok"}
    wf["spec"]["executor"] = {"serviceAcountName": "typo"}
    with pytest.raises(
        RunError, match=re.escape("spec.executor.serviceAcountName is not supported")
    ):
        run(write(tmp_path, wf), tmp_path)


ROOT = Path(__file__).resolve().parents[1]


def _committed_runnables() -> list[Path]:
    out = sorted(ROOT.glob("pipelines/*/*/samples/*-run.yaml"))
    hera = sorted(ROOT.glob("hera/*.yaml"))
    return out + [p for p in hera if p.name not in ("rbac.yaml", "kustomization.yaml")]


@pytest.mark.parametrize("path", _committed_runnables(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_run_and_template_parses_as_written(path: Path) -> None:
    """Every field the renders use (accounts, taskRunSpecs, executor, podMetadata included) is
    one the emulation reads or documents as a no-op: prepare parses it all, running nothing."""
    from taskyard.engines import prepare

    if path.parent.name == "hera":
        engine = prepare(path, {"repo-url": "file:///nowhere"}, {})
    else:
        pipeline_file = path.parents[1] / f"{path.parents[2].name}.yaml"
        engine = prepare(path, {}, {}, extra=[pipeline_file, ROOT / "tasks"])
    assert engine.nodes


def test_every_trigger_templates_pipelinerun_parses_as_written(tmp_path: Path) -> None:
    from taskyard.engines import prepare

    docs = yaml.safe_load_all((ROOT / "triggers/tekton/templates.yaml").read_text())
    runs = [r for d in docs if d for r in d["spec"]["resourcetemplates"]]
    assert runs
    for i, pr in enumerate(runs):
        name = pr["spec"]["pipelineRef"]["name"]
        pipeline_file = next(ROOT.glob(f"pipelines/{name}/*/{name}.yaml"))
        path = write(tmp_path, pr, name=f"run-{i}.yaml")
        assert prepare(path, {}, {}, extra=[pipeline_file, ROOT / "tasks"]).nodes
