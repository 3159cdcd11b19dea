"""git-clone: fetch a repository at a branch, tag or commit into the workspace."""

from taskyard.catalog._common import step_task
from taskyard.spec import Param, Resources, Result, Workspace

TASK = step_task(
    name="git-clone",
    module="git_clone",
    image="git",
    display_name="git clone",
    description=(
        "Clones a git repository into the `output` workspace at a branch, tag or commit, "
        "optionally with submodules and credentials, and reports the exact commit."
    ),
    categories=("Git",),
    tags=("git",),
    network=True,
    resources=Resources(cpu="250m", memory="256Mi"),
    params=[
        Param(
            name="url",
            description=(
                "Repository URL to clone: https, http, ssh (or scp-like user@host:path) or "
                "git; file:// URLs and local paths only with allow-file."
            ),
        ),
        Param(
            name="revision",
            default="",
            description="Branch, tag or commit SHA to check out; empty: the remote's HEAD.",
        ),
        Param(
            name="depth",
            type="integer",
            default="1",
            description="Shallow clone depth; 0 for full history.",
        ),
        Param(
            name="submodules", type="boolean", default="true", description="Initialise submodules."
        ),
        Param(
            name="subdirectory",
            default="repo",
            description="Folder inside `output` to clone into.",
        ),
        Param(
            name="delete-existing",
            type="boolean",
            default="true",
            description=(
                "Empty the target folder before cloning, and the workspace's `artifacts/` "
                "(an earlier run's step records, which the report would otherwise mix in)."
            ),
        ),
        Param(
            name="ssl-verify",
            type="boolean",
            default="true",
            description="Verify the server's TLS cert.",
        ),
        Param(
            name="allow-file",
            type="boolean",
            default="false",
            description=(
                "Allow file:// URLs and local paths (local runs, tests); off by default so a "
                "URL from a webhook cannot read this machine's repositories."
            ),
        ),
    ],
    results=[
        Result(name="commit", description="The full SHA of the commit checked out."),
        Result(name="url", description="The URL that was cloned."),
    ],
    workspaces=[
        Workspace(name="output", description="Where the repository is cloned."),
        Workspace(
            name="git-credentials",
            optional=True,
            read_only=True,
            description="A `.git-credentials` and `.gitconfig` for HTTPS basic auth.",
        ),
        Workspace(
            name="ssh-directory",
            optional=True,
            read_only=True,
            description="A `.ssh` folder (private key, known_hosts, config) for ssh URLs.",
        ),
    ],
    args=[
        "--url", "$(params.url)",
        "--revision", "$(params.revision)",
        "--depth", "$(params.depth)",
        "--submodules", "$(params.submodules)",
        "--output", "$(workspaces.output.path)",
        "--subdirectory", "$(params.subdirectory)",
        "--delete-existing", "$(params.delete-existing)",
        "--ssl-verify", "$(params.ssl-verify)",
        "--credentials-dir", "$(workspaces.git-credentials.path)",
        "--ssh-dir", "$(workspaces.ssh-directory.path)",
        "--allow-file", "$(params.allow-file)",
    ],
)  # fmt: skip
