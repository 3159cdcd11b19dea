"""The `ci` pipeline as an Argo WorkflowTemplate: `python hera/ci.py --help`."""

import sys

from _program import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("ci"))
