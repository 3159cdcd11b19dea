"""``taskyard warm [stop]``: the warm interpreter a home keeps between runs (run/warm.py)."""

from __future__ import annotations

import argparse


def add_warm(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "warm",
        parents=[common],
        help="the warm interpreter this home keeps between runs (TASKYARD_WARM_IDLE)",
    )
    p.set_defaults(func=cmd_warm)
    wsub = p.add_subparsers(dest="warm_command", metavar="stop")
    stop = wsub.add_parser("stop", parents=[common], help="stop it now")
    stop.set_defaults(func=cmd_warm_stop)


def cmd_warm(args: argparse.Namespace) -> int:
    from taskyard.home import home
    from taskyard.run.warm import kept

    found = kept(home())
    if found is None:
        print(f"no warm interpreter is kept for {home()}")
    else:
        print(f"warm interpreter {found[0]}: pid {found[1]}")
    return 0


def cmd_warm_stop(args: argparse.Namespace) -> int:
    from taskyard.home import home
    from taskyard.run.warm import stop_kept

    pid = stop_kept(home())
    print(f"stopped the warm interpreter (pid {pid})" if pid else "no warm interpreter to stop")
    return 0
