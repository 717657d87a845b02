"""From a write in the published tree to the node having processed the file, through a REST change hook.

    python bench/hook_latency.py [--runs 9]

The sidecar runs with ``--on-change-rest "process {path}"`` and its other defaults against a
stand-in node (tests/fakenode.py, in this process), which really reads the file and sets the
variables it assigns. Each run appends ``bench_n = <run>`` to ``node-deployment/local_script.al``
through the link, as ``kubectl exec ... -- sh -c 'echo ... >> file'`` would, and polls the node's
variables every millisecond until ``bench_n`` has the new value. Runs are 1.5 s apart (a hook
starts at most once a second). Prints the median and the spread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import ROOT, SidecarProcess, get, machine_note, median

sys.path.insert(0, str(ROOT))
from tests.fakenode import FakeNode


def main() -> None:
    """Run ``--runs`` edits and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    node = FakeNode("el-bench")
    sc = SidecarProcess(["--rest-port", str(node.rest.port), "--on-change-rest", "process {path}"])
    times = []
    try:
        sc.wait("/startupz", timeout=60)
        deadline = time.monotonic() + 30
        while b'"running": true' not in get(sc.url + "/status")[1]:
            if time.monotonic() > deadline:
                raise RuntimeError("the watch never started")
            time.sleep(0.05)
        link = Path(sc.argv[sc.argv.index("--link") + 1])
        script = link / "node-deployment" / "local_script.al"
        for run in range(args.runs):
            time.sleep(1.5)
            with open(script, "a") as f:
                f.write(f"bench_n = {run}\n")
            written = time.monotonic()
            while node.rest.variables.get("bench_n") != str(run):
                if time.monotonic() - written > 30:
                    raise RuntimeError(f"run {run}: the node never processed the edit")
                time.sleep(0.001)
            times.append(time.monotonic() - written)
    finally:
        sc.stop()
        node.stop()
    print(json.dumps({
        "runs": args.runs,
        "write_to_processed_s": {"median": round(median(times), 3), "min": round(min(times), 3),
                                 "max": round(max(times), 3)},
        "node_error_log_lines": node.log.error_added,
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
