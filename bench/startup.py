"""Start to /livez 200 (goal <= 0.4 s), and to /readyz 200 with the scripts seeded from the fallback folder.

    python bench/startup.py [--runs 10]

Each run spawns ``python -m sidecar run`` with all three checks pointed at a stand-in node and polls
every 5 ms; prints the median and the spread of the runs.
"""

from __future__ import annotations

import argparse
import json

from common import FakeNodeProcess, SidecarProcess, machine_note, median


def main() -> None:
    """Run ``--runs`` times and print one JSON line of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    node = FakeNodeProcess()
    livez, readyz = [], []
    try:
        for _ in range(args.runs):
            sc = SidecarProcess(node.args())
            try:
                livez.append(sc.wait("/livez"))
                readyz.append(sc.wait("/readyz"))
            finally:
                sc.stop()
    finally:
        node.stop()
    print(json.dumps({
        "runs": args.runs,
        "start_to_livez_s": {"median": round(median(livez), 3), "min": round(min(livez), 3),
                             "max": round(max(livez), 3)},
        "start_to_readyz_s": {"median": round(median(readyz), 3), "min": round(min(readyz), 3),
                              "max": round(max(readyz), 3)},
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
