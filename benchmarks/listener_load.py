"""Load benchmark for `taskyard serve`: 2,000 signed GitHub deliveries on loopback.

    .venv/bin/python benchmarks/listener_load.py [--deliveries 2000] [--rate 250] [--clients 8]

Starts a real listener (``python -m taskyard.serve``) in a temporary folder with the **noop
submitter** -- the listener authenticates, parses, filters, deduplicates and commits each
delivery to SQLite before its 202 exactly as in production, but starts no pipeline, so the
numbers measure the listener alone. The mix: unique pushes, redeliveries (same delivery id),
double pushes (new id, same commit), forged signatures, malformed JSON, oversized bodies and
branch deletes, shuffled, sent open-loop at ``--rate`` per second from ``--clients``
keep-alive connections.

Then a **burst**: ``--burst`` (default 200) more unique deliveries at once, each on its own
new connection (what GitHub does after an outage); every one must get a 202.

The listener is uvicorn + Starlette with its default limits (backlog 2048, 1000 connections,
16 threads for the blocking work, a 10 s whole-request deadline).

Prints accepted / rejected / duplicates / ignored, the achieved rate, p50/p99 accept latency
(client side, request to response) overall and per kind, and the burst's outcome, then checks
the store: every valid unique delivery stored exactly once, one request per unique commit.
Exit code 1 if that check fails, the rate is under 200/s, p99 >= 20 ms or a burst delivery
got no 202.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from taskyard.serve.client import Client, github_headers, github_push

SECRET = "benchmark-secret"
REPO = "acme/model"
URL = "file:///srv/model.git"


def start_listener(folder: Path) -> tuple[subprocess.Popen, str]:
    config = folder / "serve.yaml"
    config.write_text(
        "repos:\n"
        f"  - name: {REPO}\n"
        "    secret: {env: BENCH_WEBHOOK_SECRET}\n"
        "    branches: ['*']\n"
        "    pipelines: [ci]\n"
        "submitter: noop\n"
        "workers: 4\n"
    )
    env = {**os.environ, "BENCH_WEBHOOK_SECRET": SECRET, "TASKYARD_HOME": str(folder)}
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskyard.serve", "--config", str(config), "--port", "0",
         "--state-dir", str(folder / "state"), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode() if ready else ""
    if "listening on " not in line:
        os.killpg(proc.pid, signal.SIGKILL)
        sys.exit(f"listener did not start: {(folder / 'serve.log').read_text()}")
    return proc, line.rsplit("listening on ", 1)[1].strip()


def workload(n: int, seed: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """(kind, body, headers) for n deliveries; kind says what the reply should be."""
    rng = random.Random(seed)
    items: list[tuple[str, bytes, dict[str, str]]] = []
    valid: list[tuple[bytes, dict[str, str]]] = []
    counts = {"unique": int(n * 0.80)}
    counts.update(redelivery=int(n * 0.06), double_push=int(n * 0.04), forged=int(n * 0.04))
    counts.update(malformed=int(n * 0.02), oversize=int(n * 0.01), delete=int(n * 0.01))
    counts["unique"] += n - sum(counts.values())
    for i in range(counts["unique"]):
        body = json.dumps(github_push(REPO, URL, f"{i + 1:040x}", branch=f"b{i % 20}")).encode()
        headers = github_headers(SECRET, body, f"u-{i}")
        valid.append((body, headers))
        items.append(("unique", body, headers))
    for _ in range(counts["redelivery"]):
        body, headers = rng.choice(valid)
        items.append(("redelivery", body, headers))
    for j in range(counts["double_push"]):
        body, _ = rng.choice(valid)
        items.append(("double_push", body, github_headers(SECRET, body, f"dp-{j}")))
    for j in range(counts["forged"]):
        body, _ = rng.choice(valid)
        items.append(("forged", body, github_headers("wrong", body, f"f-{j}")))
    for j in range(counts["malformed"]):
        body = b'{"ref": "refs/heads/main", "after": '
        items.append(("malformed", body, github_headers(SECRET, body, f"m-{j}")))
    for j in range(counts["oversize"]):
        body = json.dumps({"pad": "x" * (1 << 20)}).encode()
        items.append(("oversize", body, github_headers(SECRET, body, f"o-{j}")))
    for j in range(counts["delete"]):
        data = github_push(REPO, URL, "0" * 40, deleted=True, commits=[])
        body = json.dumps(data).encode()
        items.append(("delete", body, github_headers(SECRET, body, f"del-{j}")))
    # Shuffle, keeping every redelivery / double push after the push it repeats.
    rng.shuffle(items)
    key = {id(body): i for i, (kind, body, _) in enumerate(items) if kind == "unique"}
    order = []
    for i, (kind, body, _) in enumerate(items):
        if kind in ("redelivery", "double_push"):
            order.append(rng.uniform(key[id(body)] + 0.5, len(items)))
        else:
            order.append(float(i))
    items = [item for _, item in sorted(zip(order, items, strict=True), key=lambda x: x[0])]
    return items


def run(items, url: str, rate: float, clients: int) -> list[tuple[str, int, str, float]]:
    results: list[tuple[str, int, str, float]] = [("", 0, "", 0.0)] * len(items)
    start = time.perf_counter() + 0.2
    lock = threading.Lock()
    cursor = [0]

    def worker() -> None:
        client = Client(url)
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(items):
                client.close()
                return
            delay = start + i / rate - time.perf_counter()  # open loop: the schedule sets pace
            if delay > 0:
                time.sleep(delay)
            kind, body, headers = items[i]
            got = client.request("POST", "/hooks/github", body, headers)
            results[i] = (kind, got.status, str(got.body.get("status", "")), got.seconds)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def burst(url: str, n: int, offset: int) -> dict[str, object]:
    """n unique deliveries released together, one fresh connection each."""
    gate = threading.Barrier(n) if n else None
    got: list[tuple[int, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        body = json.dumps(github_push(REPO, URL, f"{offset + i + 1:040x}", branch="burst")).encode()
        client = Client(url, timeout=30)
        try:
            assert gate is not None
            gate.wait(timeout=30)
            resp = client.request(
                "POST", "/hooks/github", body, github_headers(SECRET, body, f"b-{i}")
            )
            with lock:
                got.append((resp.status, resp.seconds))
        except Exception as e:  # a reset or a timeout: the delivery would be lost
            with lock:
                errors.append(type(e).__name__)
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = sorted(s * 1000 for _, s in got)
    return {
        "connections": n,
        "answered_202": sum(1 for status, _ in got if status == 202),
        "other_status": sorted({status for status, _ in got if status != 202}),
        "errors": dict(Counter(errors)),
        "max_ms": round(ms[-1], 1) if ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deliveries", type=int, default=2000)
    p.add_argument("--rate", type=float, default=250.0, help="deliveries per second to send")
    p.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--burst", type=int, default=200, help="parallel new connections afterwards")
    args = p.parse_args(argv)

    items = workload(args.deliveries, args.seed)
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as tmp:
        folder = Path(tmp)
        proc, url = start_listener(folder)
        try:
            t0 = time.perf_counter()
            results = run(items, url, args.rate, args.clients)
            elapsed = time.perf_counter() - t0 - 0.2
            burst_report = burst(url, args.burst, offset=len(items))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        db = sqlite3.connect(folder / "state" / "events.db")
        stored = Counter(r[0] for r in db.execute("SELECT id FROM deliveries"))
        commits = Counter(r[0] for r in db.execute("SELECT commit_sha FROM requests"))
        db.close()

    outcome = Counter()
    for _kind, status, state, _ in results:
        if status == 202 and state == "accepted":
            outcome["accepted"] += 1
        elif status == 202 and state == "duplicate":
            outcome["duplicates"] += 1
        elif status == 202:
            outcome["ignored"] += 1
        else:
            outcome[f"rejected_{status}"] += 1
    accepted_ms = sorted(s * 1000 for _, st, state, s in results if state == "accepted")
    all_ms = sorted(s * 1000 for *_, s in results)
    p50 = statistics.median(accepted_ms)
    p99 = _p99(accepted_ms)
    rate = len(results) / elapsed
    unique = {h["X-GitHub-Delivery"] for k, _, h in items if k == "unique"}
    unique_commits = {json.loads(b)["after"] for k, b, _ in items if k == "unique"}
    # Double pushes are new, valid deliveries too: stored once each, adding no request.
    valid_ids = unique | {h["X-GitHub-Delivery"] for k, _, h in items if k == "double_push"}
    valid_ids |= {f"b-{i}" for i in range(args.burst)}
    unique_commits |= {f"{len(items) + i + 1:040x}" for i in range(args.burst)}
    exactly_once = set(stored) == valid_ids and all(n == 1 for n in stored.values())
    one_request = set(commits) == unique_commits and all(n == 1 for n in commits.values())
    by_kind: dict[str, list[float]] = {}
    for kind, _, _, seconds in results:
        by_kind.setdefault(kind, []).append(seconds * 1000)
    per_kind = {
        kind: {"p50": round(statistics.median(v), 2), "p99": round(_p99(sorted(v)), 2)}
        for kind, v in sorted(by_kind.items())
    }
    wrong = [
        (kind, status, state)
        for kind, status, state, _ in results
        if (kind, status, state) not in EXPECTED
    ]
    rejected = sum(v for k, v in outcome.items() if k.startswith("rejected"))
    report = {
        "deliveries": len(results),
        "accepted": outcome["accepted"],
        "rejected": rejected,
        "rejected_by_status": {k[9:]: v for k, v in sorted(outcome.items()) if "rejected" in k},
        "duplicates": outcome["duplicates"],
        "ignored": outcome["ignored"],
        "rate_per_s": round(rate, 1),
        "accept_latency_ms": {"p50": round(p50, 2), "p99": round(p99, 2)},
        "all_latency_ms": {"p50": round(statistics.median(all_ms), 2),
                           "p99": round(_p99(all_ms), 2)},
        "latency_ms_by_kind": per_kind,
        "burst": burst_report,
        "stored_deliveries": sum(stored.values()),
        "valid_unique_stored_exactly_once": exactly_once,
        "one_request_per_commit": one_request,
        "unexpected_replies": len(wrong),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    burst_ok = burst_report["answered_202"] == args.burst
    ok = exactly_once and one_request and not wrong and rate >= 200 and p99 < 20 and burst_ok
    print(
        "PASS" if ok else "FAIL",
        "(targets: >= 200/s, p99 accept < 20 ms, exactly once, every burst delivery 202)",
    )
    return 0 if ok else 1


def _p99(sorted_ms: list[float]) -> float:
    return sorted_ms[max(0, int(len(sorted_ms) * 0.99) - 1)]


EXPECTED = {
    ("unique", 202, "accepted"),
    ("redelivery", 202, "duplicate"),
    ("double_push", 202, "accepted"),  # a new delivery id: stored, its request deduplicated
    ("forged", 401, ""),
    ("malformed", 400, ""),
    ("oversize", 413, ""),
    ("delete", 202, "ignored"),
}

if __name__ == "__main__":
    sys.exit(main())
