"""Small pipelines for the docker executor tests, loadable as ``tests/docker_pipelines.py:NAME``.

Their steps are ``python -c`` programs run in the git task image (it has Python and nothing to
train), so they test the executor, not the catalog: what the network looks like from a task
that declares none, and who owns what one task leaves in the workspace for the next.
"""

from __future__ import annotations

from taskyard.spec import (
    Param,
    PipelineSpec,
    PipelineTask,
    PipelineWorkspace,
    Result,
    TaskSpec,
    Workspace,
    param,
)

IMAGE = "ghcr.io/taskyard/git:0.1.0"

# Tries a TCP connection to the host's 127.0.0.1:PORT; the result says what happened.
_PROBE = """
import socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
try:
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    verdict = "reached"
except OSError as e:
    verdict = "blocked: " + type(e).__name__
open(out, "w").write(verdict)
print(verdict)
"""


def _probe(name: str, network: bool) -> TaskSpec:
    return TaskSpec(
        name=name,
        display_name=name,
        description="Reports whether the host's loopback port answers.",
        image="$(params.image)",
        command=("python3", "-c", _PROBE),
        args=("$(params.port)", "$(results.verdict.path)"),
        params=(Param(name="port"), Param(name="image", default=IMAGE)),
        results=(Result(name="verdict"),),
        network=network,
    )


OFFLINE = _probe("offline-probe", network=False)
ONLINE = _probe("online-probe", network=True)

network = PipelineSpec(
    name="network",
    display_name="network probe",
    description="The same probe with and without a declared need for the network.",
    params=(Param(name="port"), Param(name="image", default=IMAGE)),
    tasks=(
        PipelineTask(
            name="offline",
            task=OFFLINE,
            params={"port": param("port"), "image": param("image")},
        ),
        PipelineTask(
            name="online",
            task=ONLINE,
            params={"port": param("port"), "image": param("image")},
        ),
    ),
)

# write: a folder and a file in the workspace; read: appends to it, and adds its own file.
_WRITE = """
import os, sys
root = os.path.join(sys.argv[1], "handoff")
os.makedirs(root, exist_ok=True)
open(os.path.join(root, "first.txt"), "w").write("from write\\n")
"""
_READ = """
import os, sys
root = os.path.join(sys.argv[1], "handoff")
text = open(os.path.join(root, "first.txt")).read()
open(os.path.join(root, "first.txt"), "a").write("seen by read\\n")
open(os.path.join(root, "second.txt"), "w").write(text.upper())
"""


def _fs(name: str, program: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        display_name=name,
        description="Writes into the shared workspace.",
        image=IMAGE,
        command=("python3", "-c", program),
        args=("$(workspaces.source.path)",),
        workspaces=(Workspace(name="source"),),
    )


handoff = PipelineSpec(
    name="handoff",
    display_name="workspace handoff",
    description="One task leaves files in the workspace, the next reads and changes them.",
    workspaces=(PipelineWorkspace(name="source"),),
    tasks=(
        PipelineTask(name="write", task=_fs("write", _WRITE), workspaces={"source": "source"}),
        PipelineTask(
            name="read",
            task=_fs("read", _READ),
            workspaces={"source": "source"},
            run_after=("write",),
        ),
    ),
)

# Ignores SIGTERM and sleeps: the runner's timeout must still stop (and remove) the container.
_STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sleeping", flush=True)
time.sleep(120)
"""

stubborn = PipelineSpec(
    name="stubborn",
    display_name="stubborn step",
    description="A step that outlives its timeout and ignores SIGTERM.",
    tasks=(
        PipelineTask(
            name="sleep",
            task=TaskSpec(
                name="sleep",
                display_name="sleep",
                description="Sleeps, ignoring SIGTERM.",
                image=IMAGE,
                command=("python3", "-c", _STUBBORN),
            ),
            timeout=2,
        ),
    ),
)
