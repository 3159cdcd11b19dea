"""Catalog tasks: one module per task, each exporting its TaskSpec(s)."""
