"""Detection and recovery with default settings: a node port going away to /readyz 503, and back to 200.

    python bench/detection.py [--runs 3] [--checks tcp,rest,broker]

Goal: each of a dead REST server, a TCP port that stops listening and a dead broker is detected
within 30 s. The sidecar runs with its defaults (every check every 5 s, 3 failures to go down, 1
success to come back) against a stand-in node in this process, so a port can be closed at will; each
port is closed at a random phase of the check period and reopened after the sidecar noticed, and
/readyz is polled every 10 ms. Prints the median and the maximum per check.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from common import ROOT, SidecarProcess, get, machine_note, median

sys.path.insert(0, str(ROOT))
from tests.fakenode import FakeNode


def _until(url: str, status: int, timeout: float = 90) -> float:
    start = time.monotonic()
    while get(url, timeout=2)[0] != status:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{url} never answered {status}")
        time.sleep(0.01)
    return time.monotonic() - start


def main() -> None:
    """Close and reopen each port ``--runs`` times; print one JSON line of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checks", default="tcp,rest,broker")
    args = parser.parse_args()
    node = FakeNode("el-bench")
    servers = {"tcp": node.tcp, "rest": node.rest, "broker": node.broker}
    sc = SidecarProcess(["--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
                         "--broker-port", str(node.broker.port)])
    results: dict[str, dict[str, list[float]]] = {}
    try:
        sc.wait("/readyz", timeout=60)
        for name in args.checks.split(","):
            down, up = [], []
            for _ in range(args.runs):
                time.sleep(random.uniform(0, 5))  # a random phase of the check period
                servers[name].close()
                down.append(_until(sc.url + "/readyz", 503))
                if f"[-]{name} failed".encode() not in get(sc.url + "/readyz?verbose")[1]:
                    raise RuntimeError(f"/readyz failed, but not for {name}")
                servers[name].open()
                up.append(_until(sc.url + "/readyz", 200))
            results[name] = {"down": down, "up": up}
    finally:
        sc.stop()
        node.stop()
    print(json.dumps({
        "settings": "defaults (interval 5 s, failure threshold 3, success threshold 1, jitter 10 %)",
        "runs": args.runs,
        "detect_s": {n: {"median": round(median(r["down"]), 2), "max": round(max(r["down"]), 2)}
                     for n, r in results.items()},
        "recover_s": {n: {"median": round(median(r["up"]), 2), "max": round(max(r["up"]), 2)}
                      for n, r in results.items()},
        "goal_detect_s": 30,
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
