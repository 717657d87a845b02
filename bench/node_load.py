"""The load the sidecar puts on the node with default settings.

    python bench/node_load.py [--seconds 300]

Runs the sidecar with its default check settings (tcp every 30 s, rest every 10 s, broker every
30 s, jitter 10 %) against the stand-in node, then prints connections per minute on each port, the
most connections the node saw open at once, and lines the tcp check adds to the node's event log
per hour (the real node keeps only the last 100).
"""

from __future__ import annotations

import argparse
import json
import time

from common import machine_note, node_and_sidecar


def main() -> None:
    """Run once and print one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    with node_and_sidecar([]) as (node, sc):
        sc.wait("/readyz", timeout=60)
        time.sleep(args.seconds)
        node.stop()
    counters = node.counters
    minutes = counters["seconds"] / 60
    print(json.dumps({
        "seconds": counters["seconds"],
        "connections_per_minute": {k: round(v / minutes, 2) for k, v in counters["connections"].items()},
        "max_open_at_once": counters["max_open"],
        "tcp_event_log_lines_per_hour": round(counters["tcp_event_log_lines"] / minutes * 60),
        "rest_commands": counters["rest_commands"],
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
