"""Detection and recovery: from the node's REST port closing to /readyz 503, and from reopening to 200.

    python bench/detection.py [--runs 5] [--interval 1] [--threshold 3] [--jitter 0]

Goal: detection <= interval x failure threshold + 200 ms (and recovery <= interval x success
threshold + 200 ms). The port is closed and reopened at random phases of the check period; /readyz
is polled every 10 ms. The stand-in node runs in this process so the port can be closed at will.
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


def _until(url: str, status: int, timeout: float = 60) -> float:
    start = time.monotonic()
    while get(url, timeout=2)[0] != status:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{url} never answered {status}")
        time.sleep(0.01)
    return time.monotonic() - start


def main() -> None:
    """Close and reopen the REST port ``--runs`` times; print one JSON line of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--jitter", type=float, default=0.0)
    args = parser.parse_args()
    node = FakeNode("el-bench")
    sc = SidecarProcess(["--rest-port", str(node.rest.port), "--rest-interval", str(args.interval),
                         "--rest-failure-threshold", str(args.threshold), "--check-jitter", str(args.jitter)])
    down, up = [], []
    try:
        sc.wait("/readyz")
        for _ in range(args.runs):
            time.sleep(random.uniform(0, args.interval))  # a random phase of the check period
            node.rest.close()
            down.append(_until(sc.url + "/readyz", 503))
            time.sleep(random.uniform(0, args.interval))
            node.rest.open()
            up.append(_until(sc.url + "/readyz", 200))
    finally:
        sc.stop()
        node.stop()
    goal_down = args.interval * args.threshold + 0.2
    print(json.dumps({
        "settings": {"rest_interval": args.interval, "failure_threshold": args.threshold, "success_threshold": 1,
                     "jitter": args.jitter},
        "runs": args.runs,
        "detect_s": {"median": round(median(down), 3), "max": round(max(down), 3), "goal": goal_down},
        "recover_s": {"median": round(median(up), 3), "max": round(max(up), 3), "goal": args.interval + 0.2},
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
