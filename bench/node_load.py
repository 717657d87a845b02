"""The load the sidecar puts on the node with default settings, and the lines it adds to the node's logs.

    python bench/node_load.py [--seconds 600] [--runs 3] [--sidecar-arg=--node-type=operator ...]

Runs the sidecar with its default check settings (tcp, rest and broker every 5 s, jitter 10 %)
against the stand-in node (tests/fakenode.py, which logs like the real node), from the scripts
being published until ``--seconds`` later. Lines per hour are the lines counted in that window,
scaled to an hour (``lines / seconds * 3600``); the one ``(ok) get status`` of the start is counted
apart, since it happens once per start or recovery, not per hour. Prints connections per minute on
each port, the most connections the node saw open at once, and event-log and error-log lines per
hour (the real node keeps the last 100 and the last 20). The figure is the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import machine_note, median, node_and_sidecar


def once(seconds: float, extra: list[str]) -> dict[str, Any]:
    """One run: the node's counters after ``seconds`` of checks (and whatever ``extra`` turns on)."""
    with node_and_sidecar(extra) as (node, sc):
        sc.wait("/readyz", timeout=60)
        time.sleep(seconds)
        counters = node.stop()
    return counters


def main() -> None:
    """Run ``--runs`` times and print one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sidecar-arg", action="append", default=[],
                        help="a setting for the sidecar, e.g. --sidecar-arg=--node-type=operator (the policy reads)")
    args = parser.parse_args()
    runs = [once(args.seconds, args.sidecar_arg) for _ in range(args.runs)]
    start_lines = ["(ok) get status"]

    def at_start(counters: dict[str, Any]) -> int:
        return sum(1 for line in counters["event_log"] if line in start_lines)

    def per_hour(counters: dict[str, Any], key: str) -> float:
        lines = counters[key] - (at_start(counters) if key == "event_log_lines" else 0)
        return float(lines / counters["seconds"] * 3600)

    last = runs[-1]
    minutes = last["seconds"] / 60
    print(json.dumps({
        "seconds": args.seconds,
        "runs": args.runs,
        "event_log_lines_per_hour": round(median([per_hour(c, "event_log_lines") for c in runs]), 1),
        "error_log_lines_per_hour": round(median([per_hour(c, "error_log_lines") for c in runs]), 1),
        "lines_at_start": median([at_start(c) for c in runs]),
        "connections_per_minute": {k: round(v / minutes, 2) for k, v in last["connections"].items()},
        "max_open_at_once": last["max_open"],
        "rest_commands": last["rest_commands"],
        "rest_health_checks_per_minute": round(last["rest_health_checks"] / minutes, 2),
        "event_log_sample": last["event_log"][-5:],
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
