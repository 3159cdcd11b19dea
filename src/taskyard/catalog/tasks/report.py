"""report: a run summary built from what each step recorded in the workspace.

It reads the step records (``artifacts/*.json``) rather than upstream results, so it works as a
``finally`` task on every engine even when upstream tasks failed or were skipped.
"""

from taskyard.catalog._common import source_workspace, step_task
from taskyard.spec import Param, Resources, Result

TASK = step_task(
    name="report",
    module="report",
    image="steps",
    display_name="run report",
    description=(
        "Writes a run summary (what ran, test counts, metrics, the promote decision, the "
        "deployed version) as Markdown and JSON into the workspace."
    ),
    categories=("MLOps",),
    tags=("report", "summary"),
    resources=Resources(cpu="100m", memory="128Mi"),
    params=[
        Param(name="status", default="", description="The pipeline's aggregate task status."),
        Param(name="run-name", default="", description="Name of the pipeline run."),
        Param(name="pipeline", default="", description="Name of the pipeline."),
    ],
    results=[Result(name="summary", description="Path of the Markdown summary inside `source`.")],
    workspaces=[source_workspace("Holds the step records; receives the summary.")],
    args=[
        "--source", "$(workspaces.source.path)",
        "--status", "$(params.status)",
        "--run-name", "$(params.run-name)",
        "--pipeline", "$(params.pipeline)",
    ],
)  # fmt: skip
