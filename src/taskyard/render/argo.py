"""Argo Workflows v4 renderer: a PipelineSpec becomes a Hera WorkflowTemplate (pure, no I/O).

One WorkflowTemplate per pipeline:

- entrypoint ``pipeline``: a DAG with one task per pipeline task, each calling its own container
  template (named like the task) that runs the same step CLI with the same args as on Tekton;
- task params are the template's ``inputs.parameters`` (catalog defaults as ``default``);
  pipeline params are ``spec.arguments.parameters`` (``{{workflow.parameters.x}}``);
- results are ``outputs.parameters`` read from ``valueFrom.path`` under :data:`RESULTS_DIR`,
  with ``default: ""`` so a skipped producer leaves consumers an empty string;
- the ``source`` workspace is a ``volumeClaimTemplates`` PVC; optional workspaces are optional
  Secret volumes named like the workspace;
- ``finally`` tasks form the ``finally`` DAG, run as the workflow's exit handler (``onExit``);
- pipeline results are exported as global output parameters (``globalName``);
- a task's ``matrix`` becomes ``withItems``: one item per combination, a map with one key per
  matrix param, passed as ``{{item.<param>}}`` (docs/variables.md, "Loops": ``item.<FIELDNAME>``);
  downstream, ``{{tasks.T.outputs.parameters.R}}`` of such a task "contains a JSON array of the
  output parameter values of each invocation" (docs/variables.md), ordered by item
  (workflow/controller/operator.go ``processAggregateNodeOutputs`` sorts the children), which
  is what ``$(tasks.T.results.R[*])`` means; an array param inside a task is that one string;
- who the pods run as: each container template's ``serviceAccountName`` is its task kind's
  account (:mod:`taskyard.render.accounts`; a template's wins over the workflow's,
  argo-workflows v4.1.2 workflow/controller/workflowpod.go ``setupServiceAccount``), and the
  tokenless kinds' templates set ``automountServiceAccountToken: false`` (docs/security.md).
  The executor still reports outputs as ``WorkflowTaskResult`` objects, so
  ``spec.executor.serviceAccountName`` names :data:`WORKFLOW_SERVICE_ACCOUNT`: the controller
  mounts that account's token Secret into the executor containers only (workflowpod.go
  ``executorServiceAccountName``, ``setupServiceAccount`` adds the ``exec-sa-token`` volume,
  ``newExecContainer`` mounts it at /var/run/secrets/kubernetes.io/serviceaccount; the Secret
  is found by name, ``<account>.service-account-token``, util/secrets/secret_name.go,
  docs/service-account-secrets.md; it is in hera/rbac.yaml, :mod:`taskyard.render.argo_rbac`),
  and refuses a template with ``automountServiceAccountToken: false`` and no executor account
  ("executor.serviceAccountName must not be empty if automountServiceAccountToken is false");
- ``spec.podMetadata.labels`` carries ``app.kubernetes.io/part-of: taskyard`` onto every pod
  (workflowpod.go ``addMetadata``; the template's own ``metadata.labels`` are not copied). A
  Workflow or CronWorkflow that runs the template by ``workflowTemplateRef`` needs neither:
  the controller runs the Workflow's spec merged over the template's (workflow/util/merge.go
  ``JoinWorkflowSpec``, called from operator.go ``setExecWorkflow``), so ``podMetadata``,
  ``executor``, ``serviceAccountName`` and the templates all come from the WorkflowTemplate.

Every ``$(...)`` reference goes through :func:`taskyard.spec.refs.substitute`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hera.workflows import (
    DAG,
    Container,
    CronWorkflow,
    Env,
    Parameter,
    RetryStrategy,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Cache,
    Capabilities,
    ExecutorConfig,
    LocalObjectReference,
    Memoize,
    Metadata,
    ObjectMeta,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PodGC,
    PodSecurityContext,
    Quantity,
    ResourceRequirements,
    SeccompProfile,
    SecretVolumeSource,
    SecurityContext,
    Toleration,
    TTLStrategy,
    ValueFrom,
    Volume,
    VolumeClaimGC,
    VolumeMount,
    VolumeResourceRequirements,
    WorkflowTemplateRef,
)

from taskyard.errors import RenderError
from taskyard.render import accounts
from taskyard.render.values import CATALOG
from taskyard.spec import Param, PipelineSpec, PipelineTask, refs

RESULTS_DIR = "/tmp/taskyard/results"
WORKSPACE_ROOT = "/workspace"
ENTRYPOINT = "pipeline"
EXIT_HANDLER = "finally"
TASK_LABEL = "taskyard.dev/task"
GPU_RESOURCE = "nvidia.com/gpu"
# Set by NVIDIA GPU feature discovery / the GPU operator on nodes that have a GPU.
GPU_NODE_SELECTOR: Mapping[str, str] = {"nvidia.com/gpu.present": "true"}
# GPU node pools are commonly tainted so that only GPU pods land there.
GPU_TOLERATIONS: tuple[Toleration, ...] = (
    Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"),
)
# The catalog tasks whose outputs may be memoized (pure given commit + data + params).
MEMOIZABLE_TASKS = frozenset({"train", "train-gpu"})
WORKFLOW_SERVICE_ACCOUNT = "taskyard-workflow"
# The v4 executor needs only what this Role grants (taskyard.render.argo_rbac); nothing older
# is claimed: the renders are checked against the v4.1.2 schema alone, and Hera 7 targets v4.
MIN_ARGO_VERSION = ">= 4.0.0"


@dataclass(frozen=True)
class Options:
    """Cluster-specific choices a user may override (Hera program flags or their own code)."""

    name: str | None = None  # render under another name (a fork)
    source_size: str = "2Gi"
    storage_class: str | None = None
    # The distroless "nonroot" uid the task images own their HOME for (as on Tekton).
    run_as_user: int = 65532
    # Optional workspace -> the Secret mounted for it (optional: a missing one mounts empty).
    secrets: Mapping[str, str] = field(default_factory=dict)
    gpu_node_selector: Mapping[str, str] = field(default_factory=lambda: dict(GPU_NODE_SELECTOR))
    gpu_tolerations: tuple[Toleration, ...] = GPU_TOLERATIONS
    memoize_train: bool = False
    memoize_max_age: str = "168h"
    memoize_cache: str = "taskyard-train-cache"
    # One ServiceAccount for every task pod (the Hera programs' --service-account) instead of
    # each task kind's (None, the default: render/accounts.py, deploy/namespace/rbac.yaml).
    service_account: str | None = None
    # The executor's account: hera/rbac.yaml's, which may write the executor's task results
    # (taskyard.render.argo_rbac); None: the executor uses the pod's own token, if any.
    executor_account: str | None = WORKFLOW_SERVICE_ACCOUNT
    namespace: str | None = None  # metadata.namespace (None: wherever it is applied)


@dataclass(frozen=True)
class CronOptions:
    """The retrain schedule; ``Forbid`` because two overlapping runs would race on the alias."""

    name: str | None = None
    template: str | None = None  # the WorkflowTemplate to run (default: the pipeline's name)
    schedules: tuple[str, ...] = ("0 3 * * *",)
    timezone: str = "Etc/UTC"
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int = 3600
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 5
    # Arguments of every scheduled run; a required pipeline param without one fails the run.
    # The catalog's: its placeholders (render/values.py), the same as every other trigger's;
    # `taskyard render --pipeline … --repo-url …` renders one with a repository's own.
    arguments: Mapping[str, str] = field(
        default_factory=lambda: {
            "repo-url": CATALOG.repo_url,
            "model-name": CATALOG.model_name,
            "mlflow-tracking-uri": CATALOG.mlflow_tracking_uri,
        }
    )
    namespace: str | None = None


def tag(expr: str) -> str:
    return "{{" + expr + "}}"


def result_path(name: str) -> str:
    return f"{RESULTS_DIR}/{name}"


def mount_path(task_workspace: str) -> str:
    return f"{WORKSPACE_ROOT}/{task_workspace}"


def _parameter(p: Param, *, as_value: bool = False) -> Parameter:
    """A Parameter without ``value``/``default`` when there is none (Hera writes None as "null").

    A closed set of values (an enum, a boolean) becomes Argo's ``enum``: the UI offers a
    choice and the controller rejects anything else. "" (not set) stays allowed when it is
    the default.
    """
    kw: dict = {}
    if p.default is not None:
        kw["value" if as_value else "default"] = p.default
    if p.choices:
        extra = [""] if p.default == "" else []
        kw["enum"] = [*p.choices, *extra]
    return Parameter(name=p.name, description=p.description or None, **kw)


# ---- references ------------------------------------------------------------------------------
def _task_text(t: PipelineTask, text: str) -> str:
    """A reference inside a task (command, args, env, image) in Argo's template syntax."""

    def value_of(ref: refs.Ref) -> str:
        if ref.kind == "param":
            return tag(f"inputs.parameters.{ref.name}")
        if ref.kind == "result-path":
            return result_path(ref.name)
        if ref.kind == "workspace-path":
            return mount_path(ref.name) if ref.name in t.workspaces else ""
        if ref.kind == "workspace-bound":
            return "true" if ref.name in t.workspaces else "false"
        raise RenderError(f"task {t.task.name!r}: {ref.text} is not allowed inside a task")

    return refs.substitute(text, value_of)


def _pipeline_text(
    spec: PipelineSpec, where: str, text: str, fin: bool, globals_: Mapping[tuple[str, str], str]
) -> str:
    """A reference inside a pipeline (bindings, when inputs) in Argo's template syntax."""

    def value_of(ref: refs.Ref) -> str:
        if ref.kind == "param":
            return tag(f"workflow.parameters.{ref.name}")
        if ref.kind == "run-name":
            return tag("workflow.name")
        if ref.kind == "tasks-status" and fin:
            return tag("workflow.status")
        if ref.kind == "task-result" and not fin:
            return tag(f"tasks.{ref.task}.outputs.parameters.{ref.name}")
        if ref.kind == "task-result" and fin:
            # The exit handler cannot see DAG task outputs; it sees the exported globals.
            return tag(f"workflow.outputs.parameters.{globals_[(ref.task, ref.name)]}")
        raise RenderError(f"pipeline {spec.name!r}, {where}: {ref.text} has no Argo equivalent")

    return refs.substitute(text, value_of)


def _quote(value: str, where: str) -> str:
    if "'" in value:
        raise RenderError(f"{where}: a when value cannot contain a single quote: {value!r}")
    return f"'{value}'"


def when_expression(
    spec: PipelineSpec, t: PipelineTask, globals_: Mapping[tuple[str, str], str]
) -> str | None:
    """``in``/``notin`` gates as an expression valid for both govaluate and expr (quoted)."""
    fin = spec.is_finally(t.name)
    clauses = []
    for i, w in enumerate(t.when):
        where = f"task {t.name!r}, when[{i}]"
        left = _quote(_pipeline_text(spec, where, w.input, fin, globals_), where)
        op, join = ("==", " || ") if w.operator == "in" else ("!=", " && ")
        parts = [f"{left} {op} {_quote(v, where)}" for v in w.values]
        clauses.append(join.join(parts))
    if not clauses:
        return None
    if len(clauses) == 1 and len(t.when[0].values) == 1:
        return clauses[0]
    return " && ".join(f"({c})" for c in clauses)


# ---- templates -------------------------------------------------------------------------------
def _global_outputs(spec: PipelineSpec) -> dict[tuple[str, str], str]:
    """(task, result) -> globalName: pipeline results, and results finally tasks consume."""
    out: dict[tuple[str, str], str] = {}
    for r in spec.results:
        found = list(refs.find(r.value))
        if len(found) != 1 or found[0].text != r.value or found[0].kind != "task-result":
            raise RenderError(
                f"pipeline {spec.name!r}, result {r.name!r}: Argo exports only a single "
                "task result ($(tasks.T.results.R)) as a workflow output"
            )
        key = (found[0].task, found[0].name)
        if key in out:
            raise RenderError(
                f"pipeline {spec.name!r}, result {r.name!r}: {r.value} is already exported "
                f"as {out[key]!r}"
            )
        out[key] = r.name
    for t in spec.finally_:
        for ref in t.refs():
            if ref.kind == "task-result":
                out.setdefault((ref.task, ref.name), f"{ref.task}-{ref.name}")
    names = list(out.values())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RenderError(f"pipeline {spec.name!r}: global output name {dup[0]!r} is used twice")
    return out


def _resources(t: PipelineTask) -> ResourceRequirements | None:
    r = t.task.resources
    requests = {k: Quantity(v) for k, v in (("cpu", r.cpu), ("memory", r.memory)) if v}
    limits = {"memory": Quantity(r.memory_max)} if r.memory_max else {}
    if r.gpu:
        limits[GPU_RESOURCE] = Quantity(str(r.gpu))
    if not requests and not limits:
        return None
    return ResourceRequirements(requests=requests or None, limits=limits or None)


def _memoize(t: PipelineTask, opts: Options) -> Memoize | None:
    """Key: the git commit in clear, then a SHA-256 over every input (params, image, config).

    Argo keys must match ``[a-zA-Z0-9][-a-zA-Z0-9]*``, hence the hash. The training data hash
    is an output of ``train`` and cannot key its own cache: data versioned in the repo is
    covered by the commit; data read from outside must be pinned in the config or params.
    """
    if not opts.memoize_train or t.task.name not in MEMOIZABLE_TASKS:
        return None
    names = sorted(p.name for p in t.task.params)
    joined = " + '|' + ".join(f"inputs.parameters['{n}']" for n in names)
    commit = tag("inputs.parameters.commit") + "-" if "commit" in names else ""
    return Memoize(
        key=f"{t.name}-{commit}" + tag(f"=sprig.sha256sum({joined})"),
        max_age=opts.memoize_max_age,
        cache=Cache(config_map=LocalObjectReference(name=opts.memoize_cache)),
    )


def container_template(
    spec: PipelineSpec, t: PipelineTask, opts: Options, globals_: Mapping[tuple[str, str], str]
) -> Container:
    task = t.task
    space_by_name = {w.name: w for w in spec.workspaces}
    mounts = []
    for tw in task.workspaces:
        if tw.name not in t.workspaces:
            continue
        pw = space_by_name[t.workspaces[tw.name]]
        mounts.append(
            VolumeMount(
                name=pw.name,
                mount_path=mount_path(tw.name),
                read_only=True if tw.read_only or pw.optional else None,
            )
        )
    gpu = task.resources.gpu > 0
    return Container(
        name=t.name,
        labels={TASK_LABEL: task.name, "taskyard.dev/task-version": task.version},
        annotations={"taskyard.dev/display-name": task.display_name},
        image=_task_text(t, task.image),
        command=[_task_text(t, c) for c in task.command],
        args=[_task_text(t, a) for a in task.args] or None,
        env=[Env(name=k, value=_task_text(t, v)) for k, v in task.env.items()] or None,
        inputs=[_parameter(p) for p in task.params] or None,
        outputs=[
            Parameter(
                name=r.name,
                description=r.description or None,
                global_name=globals_.get((t.name, r.name)),
                value_from=ValueFrom(path=result_path(r.name), default=""),
            )
            for r in task.results
        ]
        or None,
        resources=_resources(t),
        volume_mounts=mounts or None,
        security_context=SecurityContext(
            allow_privilege_escalation=False, capabilities=Capabilities(drop=["ALL"])
        ),
        # IntOrString fields, written as strings: what the published v4 JSON schema accepts
        # (Argo reads both, and strings are what let a forker template them).
        retry_strategy=(
            RetryStrategy(limit=str(t.retries), retry_policy="Always") if t.retries else None
        ),
        active_deadline_seconds=str(t.timeout) if t.timeout else None,
        node_selector=dict(opts.gpu_node_selector) if gpu and opts.gpu_node_selector else None,
        tolerations=list(opts.gpu_tolerations) if gpu and opts.gpu_tolerations else None,
        memoize=_memoize(t, opts),
        **_account(t, opts),
    )


def _account(t: PipelineTask, opts: Options) -> dict:
    """The template's ``serviceAccountName`` (its kind's) and, for a kind that never calls the
    API server, no token in the pod (only the executor's, mounted by the controller)."""
    if opts.service_account:
        return {}
    out: dict = {"service_account_name": accounts.account_of(t.task.name)}
    if opts.executor_account and not accounts.mounts_token(t.task.name):
        out["automount_service_account_token"] = False
    return out


def dag_task(spec: PipelineSpec, t: PipelineTask, globals_: Mapping[tuple[str, str], str]) -> Task:
    fin = spec.is_finally(t.name)
    deps = sorted(spec.dependencies(t))
    args = [
        Parameter(
            name=k, value=_pipeline_text(spec, f"task {t.name!r}, params.{k}", v, fin, globals_)
        )
        for k, v in t.params.items()
    ]
    args += [Parameter(name=k, value=tag(f"item.{k}")) for k in t.matrix]
    return Task(
        name=t.name,
        template=t.name,
        arguments=args or None,
        with_items=t.combinations() if t.matrix else None,
        depends=" && ".join(deps) or None,
        when=when_expression(spec, t, globals_),
    )


def _volumes(spec: PipelineSpec, opts: Options) -> tuple[list, list]:
    """Required workspaces -> per-run PVCs; optional ones -> optional Secrets of that name."""
    claims, secrets = [], []
    for w in spec.workspaces:
        if w.optional:
            secret = opts.secrets.get(w.name, w.name)
            secrets.append(
                Volume(name=w.name, secret=SecretVolumeSource(secret_name=secret, optional=True))
            )
            continue
        claims.append(
            PersistentVolumeClaim(
                metadata=ObjectMeta(name=w.name),
                spec=PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    storage_class_name=opts.storage_class,
                    resources=VolumeResourceRequirements(
                        requests={"storage": Quantity(opts.source_size)}
                    ),
                ),
            )
        )
    return claims, secrets


def workflow_template(spec: PipelineSpec, opts: Options | None = None) -> WorkflowTemplate:
    """The pipeline as one WorkflowTemplate (see the module docstring for the mapping)."""
    opts = opts or Options()
    names = {t.name for t in spec.all_tasks}
    clash = names & {ENTRYPOINT, EXIT_HANDLER}
    if clash:
        raise RenderError(
            f"pipeline {spec.name!r}: task name {sorted(clash)[0]!r} is reserved on Argo"
        )
    optional = {w.name for w in spec.workspaces if w.optional}
    for ws in opts.secrets:
        if ws not in optional:
            raise RenderError(
                f"pipeline {spec.name!r}: {ws!r} is not an optional workspace "
                f"(optional: {', '.join(sorted(optional)) or 'none'})"
            )
    globals_ = _global_outputs(spec)
    dags = [DAG(name=ENTRYPOINT, tasks=[dag_task(spec, t, globals_) for t in spec.tasks])]
    if spec.finally_:
        dags.append(
            DAG(name=EXIT_HANDLER, tasks=[dag_task(spec, t, globals_) for t in spec.finally_])
        )
    containers = [container_template(spec, t, opts, globals_) for t in spec.all_tasks]
    claims, secrets = _volumes(spec, opts)
    uid = opts.run_as_user
    return WorkflowTemplate(
        name=opts.name or spec.name,
        namespace=opts.namespace,
        labels={
            "app.kubernetes.io/part-of": "taskyard",
            "app.kubernetes.io/name": spec.name,
            "app.kubernetes.io/version": spec.version,
        },
        annotations={
            "workflows.argoproj.io/title": spec.display_name,
            "workflows.argoproj.io/description": spec.description,
            "workflows.argoproj.io/version": MIN_ARGO_VERSION,
        },
        entrypoint=ENTRYPOINT,
        on_exit=EXIT_HANDLER if spec.finally_ else None,
        arguments=[_parameter(p, as_value=True) for p in spec.params] or None,
        templates=[*dags, *containers],
        volume_claim_templates=claims or None,
        volumes=secrets or None,
        active_deadline_seconds=spec.timeout,
        pod_gc=PodGC(strategy="OnPodSuccess"),
        volume_claim_gc=VolumeClaimGC(strategy="OnWorkflowSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_success=86400, seconds_after_failure=7 * 86400),
        service_account_name=opts.service_account or accounts.DEFAULT_ACCOUNT,
        executor=(
            ExecutorConfig(service_account_name=opts.executor_account)
            if opts.executor_account
            else None
        ),
        pod_metadata=Metadata(labels=dict(accounts.POD_LABELS)),
        security_context=PodSecurityContext(
            run_as_non_root=True,
            run_as_user=uid,
            run_as_group=uid,
            fs_group=uid,
            seccomp_profile=SeccompProfile(type="RuntimeDefault"),
        ),
    )


def cron_workflow(spec: PipelineSpec, opts: CronOptions | None = None) -> CronWorkflow:
    """A CronWorkflow that runs the pipeline's WorkflowTemplate by reference (a fork follows)."""
    opts = opts or CronOptions()
    known = {p.name for p in spec.params}
    for key in opts.arguments:
        if key not in known:
            raise RenderError(f"pipeline {spec.name!r}: cron argument {key!r} is not a param")
    # Every task runs in its own pod: without the MLflow server each logs to a throw-away
    # store and evaluate never finds train's run; without the model name the gate has no model.
    from taskyard.render._triggers import CLUSTER_VALUES, required_values

    needed = required_values(spec)
    for key in (k for k in CLUSTER_VALUES if k in needed):
        if not opts.arguments.get(key, "").strip():
            raise RenderError(f"pipeline {spec.name!r}: the schedule needs a {key!r} argument")
    return CronWorkflow(
        name=opts.name or f"{spec.name}-cron",
        namespace=opts.namespace,
        labels={"app.kubernetes.io/part-of": "taskyard", "app.kubernetes.io/name": spec.name},
        annotations={
            "workflows.argoproj.io/title": f"{spec.display_name} (scheduled)",
            "workflows.argoproj.io/description": (
                f"Runs the {opts.template or spec.name!r} WorkflowTemplate on a schedule. "
                "concurrencyPolicy Forbid: a run still training or promoting is never killed "
                "or raced by the next one; the late tick is skipped instead."
            ),
        },
        schedules=list(opts.schedules),
        timezone=opts.timezone,
        concurrency_policy=opts.concurrency_policy,
        starting_deadline_seconds=opts.starting_deadline_seconds,
        successful_jobs_history_limit=opts.successful_jobs_history_limit,
        failed_jobs_history_limit=opts.failed_jobs_history_limit,
        workflow_template_ref=WorkflowTemplateRef(name=opts.template or spec.name),
        arguments=[Parameter(name=k, value=v) for k, v in opts.arguments.items()] or None,
    )


__all__ = [
    "ENTRYPOINT",
    "EXIT_HANDLER",
    "RESULTS_DIR",
    "TASK_LABEL",
    "WORKSPACE_ROOT",
    "CronOptions",
    "Options",
    "cron_workflow",
    "workflow_template",
]
