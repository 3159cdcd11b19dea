"""The local listener: GitHub/GitLab push webhooks and cron schedules feeding the local runner.

Entry point: :func:`taskyard.serve.app.serve_main` (``taskyard serve`` / ``python -m
taskyard.serve``). See docs/triggers.md.
"""
