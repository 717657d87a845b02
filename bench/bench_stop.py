"""SIGTERM -> process gone, for the real ``run``: idle, and with a worker thread and a task that will not stop.

    python bench/bench_stop.py [--runs 5]

The stuck case is the test's (``tests/test_shutdown.py``): ``run`` plus a component whose worker
thread blocks forever (``asyncio.to_thread`` cannot be cancelled) and one that swallows its
cancellation. Every figure is the median of ``--runs`` runs; the machine may be shared, so say so.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, sidecar_env  # noqa: E402
from tests.test_shutdown import STUCK  # noqa: E402


def up(port: int) -> bool:
    """True once /startupz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/startupz", timeout=1) as resp:
            return resp.status == 200
    except Exception:
        return False


def one_stop(stuck: bool) -> float:
    """Seconds from SIGTERM to the process being gone."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fallback").mkdir()
        (tmp / "fallback" / "main.al").write_text("# main\n")
        port = free_port()
        program = ["-c", STUCK] if stuck else ["-m", "sidecar"]
        proc = subprocess.Popen([sys.executable, *program, "run", "--fallback-dir", str(tmp / "fallback"), "--link",
                                 str(tmp / "vol" / "scripts"), "--http-host", "127.0.0.1", "--http-port", str(port)],
                                env=sidecar_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not up(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the sidecar did not start")
                time.sleep(0.05)
            time.sleep(1.0)  # every component running
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            return time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    """Print the median stop time of each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for stuck in (False, True):
        times = [one_stop(stuck) for _ in range(args.runs)]
        case = "stuck thread and task" if stuck else "idle"
        print(f"{case}: SIGTERM -> gone, median {statistics.median(times):.2f} s "
              f"(max {max(times):.2f} s, {args.runs} runs)", flush=True)


if __name__ == "__main__":
    main()
