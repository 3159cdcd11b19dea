"""The nightly `retrain` CronWorkflow (by reference to the template): `--help` for flags."""

import sys

from _program import cron_main

if __name__ == "__main__":
    sys.exit(cron_main("retrain"))
