"""Catalog pipelines: one module per pipeline, each exporting PIPELINE."""
