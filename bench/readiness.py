"""From the node's ports opening to ``/readyz`` 200, with default settings (goal: at most 2 s).

    python bench/readiness.py [--runs 7]

Each run starts the sidecar with its defaults, all three checks pointed at a stand-in node
(tests/fakenode.py, in this process) whose ports are closed, as a node's are while it starts. Once
the scripts are published (``/startupz`` 200) the bench waits a random 0.5 to 4 s (the node
starting), opens the three ports at once and polls ``/readyz`` every 5 ms until it answers 200.
Prints the median and the spread of the runs.
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


def once() -> float:
    """One run: seconds from the ports opening to /readyz 200."""
    node = FakeNode("el-bench")
    servers = (node.tcp, node.rest, node.broker)
    for server in servers:
        server.close()
    sc = SidecarProcess(["--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
                         "--broker-port", str(node.broker.port)])
    try:
        sc.wait("/startupz", timeout=60)
        time.sleep(random.uniform(0.5, 4.0))
        if get(sc.url + "/readyz")[0] != 503:
            raise RuntimeError("ready before the node's ports opened")
        for server in servers:
            server.open()
        opened = time.monotonic()
        while get(sc.url + "/readyz", timeout=2)[0] != 200:
            if time.monotonic() - opened > 60:
                raise RuntimeError("/readyz never answered 200")
            time.sleep(0.005)
        return time.monotonic() - opened
    finally:
        sc.stop()
        node.stop()


def main() -> None:
    """Run ``--runs`` times and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times = [once() for _ in range(args.runs)]
    print(json.dumps({
        "runs": args.runs,
        "ports_open_to_readyz_s": {"median": round(median(times), 3), "min": round(min(times), 3),
                                   "max": round(max(times), 3), "goal": 2.0},
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
