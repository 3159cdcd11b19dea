"""The code that runs inside task containers: one small CLI per task.

A step never imports a renderer or the runner; it reads args/env and writes results.
"""
