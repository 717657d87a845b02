"""RSS and CPU of the sidecar over a long run with all three checks every 5 s.

    python bench/footprint.py [--seconds 600] [--interval 5] [--no-scrape]

The sidecar checks a stand-in node (tests/fakenode.py, another process); like a pod it is probed on
/livez and /readyz every 10 s and, unless --no-scrape, scraped on /metrics every 15 s. Prints the RSS
at start and at the end and the CPU share of one core over the run (goals: <= 45 MB, <= 0.5 %).
"""

from __future__ import annotations

import argparse
import json
import time

from common import get, machine_note, node_and_sidecar


def main() -> None:
    """Run once and print one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--no-scrape", action="store_true")
    args = parser.parse_args()
    flags = []
    for name in ("tcp", "rest", "broker"):
        flags += [f"--{name}-interval", str(args.interval)]
    with node_and_sidecar(flags) as (node, sc):
        sc.wait("/readyz")
        time.sleep(2)  # let start-up settle before the first CPU reading
        rss_start = sc.rss_mb()
        cpu0, wall0 = sc.cpu_seconds(), time.monotonic()
        next_probe = next_scrape = wall0
        while (now := time.monotonic()) < wall0 + args.seconds:
            if now >= next_probe:
                get(sc.url + "/livez")
                get(sc.url + "/readyz")
                next_probe += 10
            if not args.no_scrape and now >= next_scrape:
                get(sc.url + "/metrics")
                next_scrape += 15
            time.sleep(0.5)
        cpu = sc.cpu_seconds() - cpu0
        wall = time.monotonic() - wall0
        status = json.loads(get(sc.url + "/status")[1])
        result = {
            "seconds": round(wall),
            "check_interval": args.interval,
            "scraped": not args.no_scrape,
            "rss_start_mb": round(rss_start, 1),
            "rss_end_mb": round(sc.rss_mb(), 1),
            "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
            "check_results": {n: c["results"] for n, c in status["checks"].items()},
        }
    result["node"] = node.counters
    result["machine"] = machine_note()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
