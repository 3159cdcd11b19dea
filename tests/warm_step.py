"""A step for tests/test_warm_executor.py: run as ``python -m tests.warm_step``, cold or warm.

It prints what a step can observe of how it was started (argv, cwd, env, session, stdin,
``__name__``) and ends as asked: an exit code, an exception, SystemExit with a message, or a
long sleep with a grandchild (for stop/kill tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--raise-error", action="store_true")
    p.add_argument("--message-exit", default="")
    p.add_argument("--sleep", type=float, default=0)
    p.add_argument("--pids", default="")
    args, rest = p.parse_known_args()
    seen = {
        "argv": sys.argv[1:],
        "argv0": os.path.basename(sys.argv[0]),
        "name": __name__,
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "env": {k: v for k, v in os.environ.items() if k.startswith("WARM_TEST_")},
        "has_runner_only": "WARM_RUNNER_ONLY" in os.environ,
        "session_leader": os.getsid(0) == os.getpid(),
        "stdin": sys.stdin.read(),
        "rest": rest,
    }
    print(json.dumps(seen, sort_keys=True))
    print("to stderr", file=sys.stderr)
    if args.sleep:
        child = subprocess.Popen(["sleep", str(args.sleep)])
        if args.pids:
            Path(args.pids + ".tmp").write_text(f"{os.getpid()} {child.pid}")
            os.replace(args.pids + ".tmp", args.pids)
        time.sleep(args.sleep)
    if args.raise_error:
        raise ValueError("boom")
    if args.message_exit:
        sys.exit(args.message_exit)
    sys.exit(args.exit)


def main_as_a_catalog_step() -> None:
    """``--steps-cli``: through steps/_cli.main, whose SIGTERM handler stops the step's group."""
    from taskyard.steps import _cli

    p = _cli.parser("warm_step", "sleeps with a grandchild")
    p.add_argument("--sleep", type=float, default=60)
    p.add_argument("--pids", required=True)
    p.add_argument("--steps-cli", action="store_true")

    def run(args: argparse.Namespace) -> None:
        child = subprocess.Popen(["sleep", str(args.sleep)])
        Path(args.pids + ".tmp").write_text(f"{os.getpid()} {child.pid}")
        os.replace(args.pids + ".tmp", args.pids)
        time.sleep(args.sleep)

    _cli.main(run, p)


if __name__ == "__main__":
    main_as_a_catalog_step() if "--steps-cli" in sys.argv else main()
