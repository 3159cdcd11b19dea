"""The local runner on synthetic pipelines: real subprocesses, real files, Tekton's semantics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskyard.catalog import PIPELINES
from taskyard.errors import RunError
from taskyard.run import Runner, RunStore, SubprocessExecutor, resolve_params, run_pipeline
from taskyard.run.executor import host_gpus
from taskyard.run.resolve import Context, bind_params, invocation
from taskyard.run.store import FAILED, SKIPPED, SUCCEEDED, TaskRecord
from taskyard.spec import Param, PipelineSpec, PipelineTask, Resources, result
from tests import run_synthetic as syn


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def stamp(run, task: str, which: str) -> float:
    return float((Path(run.workspaces["data"]) / f"{task}.{which}").read_text())


def test_chain_passes_results_in_order(home: Path) -> None:
    run = run_pipeline(syn.CHAIN, {"greeting": "hi"})
    assert run.status == SUCCEEDED and run.reason == "Succeeded"
    assert [run.tasks[t].results["out"] for t in "abc"] == ["hi", "hi+b", "hi+b+c"]
    assert run.results == {"final": "hi+b+c!"}
    assert stamp(run, "a", "end") <= stamp(run, "b", "start")
    assert stamp(run, "b", "end") <= stamp(run, "c", "start")
    # the run folder: record, results, logs, the unbound workspace as a run folder
    assert Path(run.dir).parent == home / "runs"
    assert run.id.startswith("chain-") and len(run.id.split("-")[-1]) == 4
    stored = json.loads((Path(run.dir) / "run.json").read_text())
    assert stored["status"] == SUCCEEDED
    assert stored["params"] == {"greeting": "hi", "suffix": "!"}
    assert stored["tasks"]["b"]["results"] == {"out": "hi+b"}
    assert stored["tasks"]["b"]["duration"] > 0
    assert (Path(run.dir) / "results" / "c" / "out").read_text() == "hi+b+c"
    assert "step b value hi+b" in (Path(run.dir) / "logs" / "b.log").read_text()
    assert run.workspaces["data"] == str(Path(run.dir) / "workspaces" / "data")


def test_param_values_are_not_expanded_again() -> None:
    run = run_pipeline(syn.CHAIN, {"greeting": "$(params.suffix)"})
    assert run.tasks["a"].results["out"] == "$(params.suffix)"


def test_independent_tasks_overlap(tmp_path: Path) -> None:
    run = run_pipeline(syn.PARALLEL)
    assert run.status == SUCCEEDED
    left = stamp(run, "left", "start"), stamp(run, "left", "end")
    right = stamp(run, "right", "start"), stamp(run, "right", "end")
    assert left[0] < right[1] and right[0] < left[1], "left and right did not overlap"
    assert stamp(run, "join", "start") >= max(left[1], right[1])
    serial = run_pipeline(syn.PARALLEL, max_parallel=1)
    first, second = sorted(
        [(stamp(serial, t, "start"), stamp(serial, t, "end")) for t in ("left", "right")]
    )
    assert first[1] <= second[0], "max_parallel=1 still overlapped"


def test_when_skip_and_propagation() -> None:
    run = run_pipeline(syn.WHEN)
    t = run.tasks
    assert t["gate"].state == SKIPPED and "when" in t["gate"].reason
    assert t["after-gate"].state == SUCCEEDED  # run_after a when-skipped task still runs
    assert t["reads-gate"].state == SKIPPED and "results of task 'gate'" in t["reads-gate"].reason
    assert t["after-reads"].state == SKIPPED and "parent task" in t["after-reads"].reason
    assert run.status == SUCCEEDED and run.reason == "Completed"
    assert not (Path(run.workspaces["data"]) / "gate.start").exists()

    run = run_pipeline(syn.WHEN, {"go": "yes"})
    assert {n: r.state for n, r in run.tasks.items()} == dict.fromkeys(run.tasks, SUCCEEDED)
    assert run.tasks["reads-gate"].results["out"] == "g"


def test_failure_stops_new_tasks_and_finally_sees_status() -> None:
    run = run_pipeline(syn.FAILING)
    t = run.tasks
    assert run.status == FAILED and "boom" in run.reason
    # the step's own one-line error is the reason; a step that prints none gets its exit code
    assert t["boom"].state == FAILED and t["boom"].reason == "step boom failed on purpose"
    assert t["slow"].state == SUCCEEDED  # already running: it finishes
    assert t["never"].state == SKIPPED and "'boom' failed" in t["never"].reason
    assert t["final"].state == SUCCEEDED and t["final"].finally_
    assert t["final"].results["a"] == "Failed"
    assert t["final"].results["b"] == "Failed,None"
    assert stamp(run, "slow", "end") <= t["final"].started


def test_finally_after_success_and_optional_workspace(tmp_path: Path) -> None:
    run = run_pipeline(syn.FINALLY_OK)
    res = run.tasks["final"].results
    assert run.status == SUCCEEDED
    assert res == {"a": "Succeeded", "b": "Succeeded", "opt-path": "", "opt-bound": "false"}
    assert run.workspaces["extra"] is None

    extra = tmp_path / "extra"
    extra.mkdir()
    run = run_pipeline(syn.FINALLY_OK, workspaces={"extra": str(extra)})
    res = run.tasks["final"].results
    assert res["opt-path"] == str(extra) and res["opt-bound"] == "true"


def test_retry_after_a_failed_attempt() -> None:
    run = run_pipeline(syn.RETRY)
    flaky = run.tasks["flaky"]
    assert run.status == SUCCEEDED
    assert flaky.state == SUCCEEDED and flaky.attempts == 2 and flaky.results == {"out": "ok"}
    log = Path(flaky.log).read_text()
    assert "=== attempt 1/3 ===" in log and "first attempt fails" in log
    assert "=== attempt 2/3 (previous: exit code 1) ===" in log and "second attempt succeeds" in log


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "State:\tZ" in status:
            return True
        time.sleep(0.05)
    return False


def test_task_timeout_kills_the_process_group() -> None:
    started = time.monotonic()
    run = run_pipeline(syn.TIMEOUT)
    assert time.monotonic() - started < 15
    hang = run.tasks["hang"]
    assert run.status == FAILED
    assert hang.state == FAILED and hang.reason == "timed out after 1s"
    assert run.tasks["next"].state == SKIPPED
    grandchild = int((Path(run.workspaces["data"]) / "hang.pid").read_text())
    assert _gone(grandchild), "the task's grandchild survived the timeout"
    assert "timed out after 1s" in Path(hang.log).read_text()


def test_pipeline_timeout_stops_dag_then_runs_finally() -> None:
    run = run_pipeline(syn.PIPELINE_TIMEOUT)
    assert run.status == FAILED and run.reason.startswith("PipelineRunTimeout")
    assert run.tasks["hang"].state == FAILED and "pipeline timeout" in run.tasks["hang"].reason
    assert run.tasks["final"].results["a"] == "Failed"
    assert _gone(int((Path(run.workspaces["data"]) / "hang.pid").read_text()))


def test_result_not_written_fails_the_consumer() -> None:
    run = run_pipeline(syn.NO_RESULT)
    assert run.tasks["silent"].state == SUCCEEDED and run.tasks["silent"].results == {}
    consumer = run.tasks["consumer"]
    assert consumer.state == FAILED and "did not write it" in consumer.reason
    assert run.status == FAILED


def test_a_result_that_does_not_fit_a_typed_param_fails_the_consumer() -> None:
    typed = syn.STEP.model_copy(
        update={"params": (*syn.STEP.params[:-1], Param(name="exit-code", type="integer"))}
    )
    spec = syn.pipeline(
        "typed",
        syn.step("a", params={"value": "three"}),
        PipelineTask(
            name="b",
            task=typed,
            params={"name": "b", "exit-code": result("a", "out")},
            workspaces={"data": "data"},
        ),
    )
    run = run_pipeline(spec)
    assert run.tasks["a"].state == SUCCEEDED
    assert run.tasks["b"].state == FAILED
    assert run.tasks["b"].reason == "param 'exit-code' of task 'b': 'three' is not an integer"


def test_unknown_and_missing_params() -> None:
    with pytest.raises(RunError) as e:
        Runner(syn.CHAIN, {"greeting": "x", "colour": "red"})
    assert str(e.value) == "unknown param 'colour' for pipeline 'chain' (known: greeting, suffix)"
    with pytest.raises(RunError, match="missing required param 'greeting'"):
        Runner(syn.CHAIN, {})
    with pytest.raises(RunError, match="unknown workspace 'nope'"):
        Runner(syn.CHAIN, {"greeting": "x"}, {"nope": "/tmp"})
    with pytest.raises(RunError, match="is not a folder"):
        Runner(syn.CHAIN, {"greeting": "x"}, {"data": "/definitely/not/here"})
    assert RunStore().list() == []  # nothing was started


def test_mlflow_param_defaults_to_the_home_store(home: Path) -> None:
    run = run_pipeline(syn.MLFLOW)
    assert run.tasks["show"].results["a"] == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    run = run_pipeline(syn.MLFLOW, {"mlflow-tracking-uri": "http://127.0.0.1:1"})
    assert run.tasks["show"].results["a"] == "http://127.0.0.1:1"


def test_bound_workspace_is_used_in_place(tmp_path: Path) -> None:
    data = tmp_path / "mine"
    data.mkdir()
    run = run_pipeline(syn.CHAIN, {"greeting": "x"}, {"data": data})
    assert run.workspaces["data"] == str(data)
    assert (data / "c.end").is_file()
    assert not (Path(run.dir) / "workspaces" / "data").exists()


def test_observer_sees_every_transition() -> None:
    seen: list[tuple[str, str]] = []

    class Spy:
        def started(self, run) -> None:
            seen.append(("*", run.status))

        def changed(self, run, task: str) -> None:
            seen.append((task, run.tasks[task].state))

        def finished(self, run) -> None:
            seen.append(("*", run.status))

    run_pipeline(syn.RETRY, observer=Spy())
    assert seen[0] == ("*", "Running") and seen[-1] == ("*", SUCCEEDED)
    assert seen[1:-1] == [("flaky", "Running"), ("flaky", "Running"), ("flaky", SUCCEEDED)]


def _gpu_pipeline(fallback: str) -> PipelineSpec:
    task = syn.STEP.model_copy(update={"resources": Resources(gpu=1, gpu_fallback=fallback)})
    return syn.pipeline(
        "gpu", PipelineTask(name="g", task=task, params={"name": "g"}, workspaces={"data": "data"})
    )


def test_gpu_task_on_a_host_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert host_gpus() == 0
    run = run_pipeline(_gpu_pipeline("error"))
    assert run.status == FAILED and run.tasks["g"].reason == "needs 1 GPU(s), this host has 0"
    run = run_pipeline(_gpu_pipeline("cpu"))
    g = run.tasks["g"]
    assert run.status == SUCCEEDED and g.reason == "no GPU here (0 of 1): ran on the CPU"
    assert Path(g.log).read_text().startswith("taskyard: no GPU here")


@pytest.mark.skipif(host_gpus() == 0, reason="no NVIDIA GPU on this host")
def test_gpu_task_on_a_gpu_host() -> None:
    run = run_pipeline(_gpu_pipeline("error"))
    assert run.status == SUCCEEDED and run.tasks["g"].reason == ""


def test_overhead_benchmark_runs(home: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "runner_overhead.py"
    out = subprocess.run(
        [sys.executable, str(script), "--tasks", "5", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # That it measures and prints, not how fast: a timed assertion fails on a loaded machine.
    assert re.search(r"per-task overhead \(true\): [\d.]+ ms \(target <= 50 ms: ", out.stdout)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_catalog_task_resolves_completely(name: str, tmp_path: Path) -> None:
    """Each catalog task, with upstream results present, leaves no ``$(...)`` unresolved."""
    spec = PIPELINES[name]
    params = resolve_params(spec, {p.name: "x" for p in spec.params if p.required})
    records = {
        t.name: TaskRecord(
            name=t.name,
            task=t.task.name,
            state=SUCCEEDED,
            results={r.name: f"<{t.name}.{r.name}>" for r in t.task.results},
        )
        for t in spec.all_tasks
    }
    # A result bound to a typed param (boolean, enum, number) gets a value of that type.
    for pt in spec.all_tasks:
        for key, text in pt.params.items():
            m = re.fullmatch(r"\$\(tasks\.([^.]+)\.results\.([\w-]+)(?:\[\*\])?\)", text)
            target = pt.task.param(key)
            if m and target.problem(records[m.group(1)].results[m.group(2)]):
                records[m.group(1)].results[m.group(2)] = (target.choices or ("1",))[0]
    ctx = Context(spec, "run-1", params, records)
    spaces = {w.name: (None if w.optional else tmp_path / w.name) for w in spec.workspaces}
    for pt in spec.all_tasks:
        bound = bind_params(pt, ctx)
        inv = invocation(
            pt, bound, spaces, tmp_path / "results" / pt.name, tmp_path, SubprocessExecutor().layout
        )
        for text in (inv.image, *inv.command, *inv.args, *inv.env.values()):
            assert "$(" not in text, f"{name}/{pt.name}: {text}"
        if "MLFLOW_TRACKING_URI" in inv.env:
            assert inv.env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
        for r in pt.task.results:
            env = "TASKYARD_RESULT_" + r.name.upper().replace("-", "_")
            assert inv.env[env] == str(tmp_path / "results" / pt.name / r.name)
    report = spec.finally_[0]
    assert bind_params(report, ctx)["status"] == "Succeeded"
    assert bind_params(report, ctx)["run-name"] == "run-1"
