"""The `drift-retrain` pipeline as an Argo WorkflowTemplate: `python hera/drift_retrain.py -h`."""

import sys

from _program import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main("drift-retrain"))
