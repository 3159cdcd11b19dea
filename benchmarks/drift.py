"""detect-drift's statistic: false alarms, detection, and time per batch.

    python benchmarks/drift.py [--trials 100] [--rows 10000] [--features 20]

The reference is a profile of ``--rows`` rows of ``--features`` features (standard normals, 3 of
them categorical with unequal frequencies), built as ``train`` builds it. Each trial draws a
fresh batch of ``--rows`` rows with its own seed and runs :func:`taskyard.ml.drift.compare`
with the defaults (alpha 0.05 after Bonferroni, min PSI 0.1, any drifted feature):

- *same distribution*: how many of the trials say ``drifted=false`` (target: >= 95 of 100);
- *one feature + 1 sd*: the first numeric feature moved by one standard deviation: how many say
  ``drifted=true`` (target: >= 95 of 100);
- the median time of one ``compare`` of a ``rows`` x ``features`` batch (target: < 1 s).

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd

from taskyard.ml import drift, profile

CATEGORIES = ["a", "b", "c", "d", "e"]
WEIGHTS = [0.4, 0.3, 0.15, 0.1, 0.05]


def batch(rows: int, features: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    numeric = features - 3
    data: dict[str, object] = {f"x{i}": rng.normal(size=rows) for i in range(numeric)}
    for i in range(3):
        data[f"c{i}"] = rng.choice(CATEGORIES, size=rows, p=WEIGHTS)
    frame = pd.DataFrame(data)
    frame["x0"] += shift
    return frame


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--features", type=int, default=20)
    args = p.parse_args(argv)

    started = time.perf_counter()
    reference = profile.build(batch(args.rows, args.features, seed=0))
    build_s = time.perf_counter() - started
    quiet = detected = 0
    times: list[float] = []
    for trial in range(args.trials):
        same = batch(args.rows, args.features, seed=1 + trial)
        t0 = time.perf_counter()
        quiet += not drift.compare(reference, same).drifted
        times.append(time.perf_counter() - t0)
        moved = batch(args.rows, args.features, seed=10_000 + trial, shift=1.0)
        detected += drift.compare(reference, moved).drifted
    median = statistics.median(times)
    need = int(np.ceil(0.95 * args.trials))
    print(f"reference: {args.rows} rows x {args.features} features, built in {build_s:.3f} s")
    print(f"same distribution: drifted=false in {quiet}/{args.trials} (target >= {need})")
    print(f"one feature + 1 sd: drifted=true in {detected}/{args.trials} (target >= {need})")
    print(f"compare {args.rows} x {args.features}: {median * 1000:.1f} ms median (target < 1000)")
    ok = quiet >= need and detected >= need and median < 1.0
    print("OK" if ok else "MISSED A TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
