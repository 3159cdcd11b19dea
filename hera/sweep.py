"""The `sweep` pipeline as an Argo WorkflowTemplate (`--help` for the flags)."""

import sys

from _program import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("sweep"))
