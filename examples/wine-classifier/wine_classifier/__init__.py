"""Classify wines by cultivar from their chemical analysis."""

__version__ = "0.1.0"
