"""/readyz under load: ``wrk -t2 -c16`` (goal >= 5,000 requests/s and p99 <= 5 ms).

    python bench/readyz_wrk.py [--runs 5] [--duration 10]

The sidecar checks a stand-in node with all three checks (every 5 s) while wrk hammers /readyz;
wrk shares the 2 cores with the sidecar. Prints the median requests/s, p50 and p99 of the runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess

from common import machine_note, median, node_and_sidecar

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str, label: str) -> float:
    match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", text)
    assert match, text
    return float(match.group(1)) * UNITS[match.group(2)]


def main() -> None:
    """Run wrk ``--runs`` times against one sidecar and print one JSON line of medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--nice-wrk", action="store_true",
                        help="run wrk at nice 10, closer to a load generator on another machine")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    flags = []
    for name in ("tcp", "rest", "broker"):
        flags += [f"--{name}-interval", "5"]
    rps, p50, p99 = [], [], []
    with node_and_sidecar(flags) as (_, sc):
        sc.wait("/readyz")
        command = [*(["nice", "-n", "10"] if args.nice_wrk else []), wrk, "-t2", "-c16", f"-d{args.duration}s",
                   "--latency", sc.url + "/readyz"]
        for _ in range(args.runs):
            out = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 30).stdout
            assert "Non-2xx" not in out, out
            rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
            p50.append(_ms(out, "50%"))
            p99.append(_ms(out, "99%"))
    print(json.dumps({
        "command": " ".join(command[:-1]).replace(wrk, "wrk") + " <sidecar>/readyz",
        "runs": args.runs,
        "requests_per_s": {"median": round(median(rps)), "all": [round(x) for x in rps]},
        "p50_ms": round(median(p50), 3),
        "p99_ms": {"median": round(median(p99), 2), "all": [round(x, 2) for x in p99]},
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
