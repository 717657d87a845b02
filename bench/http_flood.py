"""Probes under a connection flood: goal >= 99 % of /livez probes answered within 1 s while another
address opens >= 400 new connections a second.

    python bench/http_flood.py [--runs 5] [--duration 10] [--rate 500] [--mode loris|idle|request]

The sidecar runs as it ships, with its default limits (64 connections, 5 s header timeout). A
flooder process opens ``--rate`` new connections a second from 127.0.0.2 and keeps up to 1,000 of
them open (``loris``: each sends half a request head; ``idle``: nothing; ``request``: a whole
request, unread answer). Meanwhile a prober on 127.0.0.1 opens a fresh connection 20 times a second
and asks ``/livez``; a probe counts when its 200 arrives within 1 s of its connect. Prints one JSON
line: the median share answered, the worst run, and the flood rate achieved.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import multiprocessing
import socket
import time

from common import SidecarProcess, machine_note, median

FLOODER = "127.0.0.2"
PROBE_TIMEOUT = 1.0
PROBE_EVERY = 0.05
OPEN_LIMIT = 1000
HEADS = {"loris": b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ", "idle": b"",
         "request": b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"}


def flood(port: int, rate: float, duration: float, mode: str, opened: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    """Open ``rate`` connections a second for ``duration`` seconds (non-blocking: a full accept queue
    must not slow the flood down)."""
    live: collections.deque[socket.socket] = collections.deque()
    unsent: collections.deque[socket.socket] = collections.deque()  # connecting: their bytes go next
    start = time.monotonic()
    count = 0
    try:
        while (now := time.monotonic()) - start < duration:
            due = int((now - start) * rate)
            while count < due:
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((FLOODER, 0))
                count += 1
                if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
                    sock.close()
                    continue
                live.append(sock)
                if HEADS[mode]:
                    unsent.append(sock)
                if len(live) > OPEN_LIMIT:
                    live.popleft().close()
            for _ in range(len(unsent)):
                sock = unsent.popleft()
                if sock.fileno() < 0:
                    continue
                try:
                    sock.send(HEADS[mode])
                except (BlockingIOError, InterruptedError):
                    unsent.append(sock)  # not connected yet
                except OSError:
                    pass  # refused or reset: the server dropped it
            time.sleep(0.002)
    finally:
        for sock in live:
            sock.close()
        opened.value = count  # type: ignore[attr-defined]


def probe(port: int) -> bool:
    """One /livez on a fresh connection: True when its 200 came within PROBE_TIMEOUT."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT,
                                      source_address=("127.0.0.1", 0)) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while b"\r\n" not in answer:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.1 200 ") and time.monotonic() <= deadline


def one_run(port: int, rate: float, duration: float, mode: str) -> tuple[float, float, int]:
    """(share of probes answered in time, connections/s the flooder opened, probes sent)."""
    opened = multiprocessing.Value("i", 0)
    flooder = multiprocessing.Process(target=flood, args=(port, rate, duration, mode, opened))
    flooder.start()
    time.sleep(0.5)  # the flood is under way before the first probe
    results = []
    stop = time.monotonic() + duration - 1
    while time.monotonic() < stop:
        began = time.monotonic()
        results.append(probe(port))
        time.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - began)))
    flooder.join(duration + 30)
    return sum(results) / len(results), opened.value / duration, len(results)


def main() -> None:
    """Run the flood ``--runs`` times against one sidecar and print one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--mode", choices=sorted(HEADS), default="loris")
    args = parser.parse_args()
    sc = SidecarProcess(["--kube", "off"])
    try:
        sc.wait("/readyz")
        runs = [one_run(sc.port, args.rate, args.duration, args.mode) for _ in range(args.runs)]
        assert sc.proc is not None and sc.proc.poll() is None, "the sidecar died under the flood"
    finally:
        sc.stop()
    shares = [share for share, _, _ in runs]
    print(json.dumps({
        "bench": "http_flood", "mode": args.mode, "runs": args.runs,
        "answered_within_1s_median_pct": round(100 * median(shares), 2),
        "answered_within_1s_worst_pct": round(100 * min(shares), 2),
        "flood_connections_per_s_median": round(median([rate for _, rate, _ in runs])),
        "probes_per_run": round(median([n for _, _, n in runs])),
        "machine": machine_note(),
    }))


if __name__ == "__main__":
    main()
