"""The six-hourly `drift-retrain` CronWorkflow (by reference): `--help` for flags."""

import sys

from _program import cron_main

if __name__ == "__main__":
    sys.exit(cron_main("drift-retrain"))
