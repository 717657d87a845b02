"""Watcher limits: a link to ``/`` and a folder of 1,000,000 files in the published tree; the stop.

    python bench/bench_watch_limits.py [--runs 3] [--files 1000000] [--seconds 10]

Each run starts the real sidecar (``python -m sidecar run``, seeded from a fallback folder) on
tmpfs (``/dev/shm``, so the figures are the sidecar's, not the disk's) and waits until the watch
is armed. Then, as a user would:

- ``link``: ``ln -s / <link>/root`` in the published tree;
- ``folder``: a prepared folder of ``--files`` empty files is moved into the tree (one rename,
  as ``mv`` does);
- ``folder-at-start``: the sidecar starts on a tree that already holds that folder.

For ``--seconds`` afterwards ``/livez`` is requested every 50 ms on a new connection (latency of
each), and the process's peak RSS (``VmHWM``) is read at the end. Last, SIGTERM -> exit is timed.
Every figure is the median of ``--runs`` runs; the machine may be shared, so say so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, sidecar_env  # noqa: E402

SCRIPTS = {"node-deployment/main.al": "# main\n", "node-deployment/local_script.al": "# local\n"}


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET on a new connection; (0, b'') when it cannot answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except Exception:
        return 0, b""


def status(base: str) -> dict[str, object]:
    """/status as JSON ({} when it does not answer)."""
    import json

    code, body = get(base + "/status")
    return json.loads(body) if code == 200 else {}


def make_folder(path: Path, count: int) -> None:
    """``count`` empty files in one folder."""
    path.mkdir()
    for i in range(count):
        os.close(os.open(path / f"f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))


class Probe(threading.Thread):
    """/livez every 50 ms, each on a new connection; latencies in ms (a failure counts as 5 s)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.latencies: list[float] = []
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            start = time.perf_counter()
            code, _ = get(self.base + "/livez")
            elapsed = (time.perf_counter() - start) * 1000
            if code != 200:
                self.failures += 1
                elapsed = max(elapsed, 5000.0)
            self.latencies.append(elapsed)
            self.done.wait(0.05)


def wait(predicate: object, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` holds."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def one_run(scenario: str, big: Path | None, seconds: float) -> dict[str, float]:
    """One sidecar, one scenario; the figures of this run."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp_name:
        tmp = Path(tmp_name)
        fallback = tmp / "fallback"
        for rel, text in SCRIPTS.items():
            (fallback / rel).parent.mkdir(parents=True, exist_ok=True)
            (fallback / rel).write_text(text)
        link = tmp / "vol" / "deployment-scripts"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if scenario == "folder-at-start":
            # Seed first (the init container), put the folder in, then start the sidecar on it.
            subprocess.run([sys.executable, "-m", "sidecar", "seed", "--fallback-dir", str(fallback), "--link",
                            str(link)], env=sidecar_env(), check=True, capture_output=True, timeout=120)
            assert big is not None
            os.rename(big, link / "big")
        proc = subprocess.Popen([sys.executable, "-m", "sidecar", "run", "--fallback-dir", str(fallback), "--link",
                                 str(link), "--http-host", "127.0.0.1", "--http-port", str(port)],
                                env=sidecar_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = Probe(base)
        try:
            wait(lambda: get(base + "/livez")[0] == 200, 60, "livez")
            probe.start()
            start = time.monotonic()
            if scenario == "link":
                wait(lambda: status(base).get("watch", {}).get("running"), 60, "watch armed")  # type: ignore[union-attr]
                start = time.monotonic()
                os.symlink("/", link / "root")
                wait(lambda: status(base).get("watch", {}).get("local_edits") == 1, 60, "link counted")  # type: ignore[union-attr]
            elif scenario == "folder":
                wait(lambda: status(base).get("watch", {}).get("running"), 60, "watch armed")  # type: ignore[union-attr]
                assert big is not None
                start = time.monotonic()
                os.rename(big, link / "big")
            if scenario != "link":
                wait(lambda: status(base).get("watch", {}).get("mode") == "counting"  # type: ignore[union-attr]
                     and status(base)["watch"].get("local_edits") == 1, 120, "fallback to counting")  # type: ignore[index]
            settled = time.monotonic() - start
            time.sleep(max(0.0, seconds - settled))
            probe.done.set()
            probe.join()
            peak = peak_rss_mb(proc.pid)
            stop_start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stopped = time.monotonic() - stop_start
        finally:
            probe.done.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if big is not None and (link / "big").is_dir() and not big.exists():
                os.rename(link / "big", big)  # keep the prepared folder for the next run
    lat = sorted(probe.latencies)
    return {"peak_rss_mb": peak, "settled_s": settled, "livez_median_ms": statistics.median(lat),
            "livez_max_ms": lat[-1], "livez_failures": float(probe.failures), "stop_s": stopped}


def main() -> None:
    """Run each scenario ``--runs`` times and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="probing time after the change")
    parser.add_argument("--scenarios", default="link,folder,folder-at-start")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    holder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    big = holder / "big"
    try:
        if any(s.startswith("folder") for s in scenarios):
            start = time.monotonic()
            make_folder(big, args.files)
            print(f"prepared {args.files} files in {time.monotonic() - start:.1f} s", flush=True)
        for scenario in scenarios:
            results = []
            for run in range(args.runs):
                results.append(one_run(scenario, big if scenario.startswith("folder") else None, args.seconds))
                print(f"{scenario} run {run + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in results[-1].items()),
                      flush=True)
            print(f"{scenario}, medians of {args.runs} runs: "
                  + ", ".join(f"{k} {statistics.median(r[k] for r in results):.1f}" for k in results[0])
                  + f"; worst livez {max(r['livez_max_ms'] for r in results):.1f} ms", flush=True)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


if __name__ == "__main__":
    main()
