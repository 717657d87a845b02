"""Watcher benchmarks: file written -> change counted, and the footprint on a 10,000-file tree.

    python bench/bench_watch.py [--runs 5] [--writes 40] [--idle 10]

Latency: a file is appended to in the published tree, then the sidecar's count of changes is
polled over HTTP (every 2 ms) until it moves. The count is read from ``/metrics`` when
the server has it (any sample whose name holds ``watch_changes``), from ``/status`` otherwise;
the output says which. The sidecar is the real ``python -m sidecar run`` when the scripts
component exists, else a child process running the same watcher and endpoints on a layout
built like the publisher's (a git worktree behind a swapped symlink).

Footprint: a child process on a 10,000-file tree reports its RSS before and after the watch is
armed; idle CPU is its CPU time over ``--idle`` seconds, with and without the watcher.
Every figure is the median of ``--runs`` runs; the machine may be shared, so say so.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_seconds, rss_mb  # noqa: E402
from tests.conftest import free_port, sidecar_env  # noqa: E402
from tests.published import Published  # noqa: E402

SCRIPTS = {"node-deployment/main.al": "# main\n", "node-deployment/local_script.al": "# local\n"}
BIG = {f"d{d:02d}/f{f:03d}.al": f"# {d} {f}\n" for d in range(100) for f in range(100)}


# --- the child: watcher + endpoints, as the sidecar runs them ------------------------------------


async def serve(link: str, root: str, port: int, watch: bool, debounce: str) -> None:
    """Run the watch component and the endpoints; print RSS before and once the watch is armed."""
    from sidecar import config, logs

    logs.setup("warning", "json")  # logs to stderr: stdout carries the figures
    from sidecar.http.routes import Endpoints
    from sidecar.http.server import HttpServer
    from sidecar.state import State
    from sidecar.watch.watcher import Watcher

    settings = config.load(["run", "--link", link, "--root", root, "--fallback-dir", root, "--kube", "off",
                            "--watch-debounce", debounce], environ={})
    state = State()
    server = HttpServer(Endpoints(settings, state).handle, max_connections=8, header_timeout=5)
    await server.start("127.0.0.1", port)
    await asyncio.sleep(0.5)
    before = round(rss_mb(os.getpid()) * 1024)
    tasks = [asyncio.create_task(Watcher(settings, state).run())] if watch else []
    while watch and not state.watch.running:  # noqa: ASYNC110 - state has no event to wait on
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    print(json.dumps({"rss_before_kib": before, "rss_after_kib": round(rss_mb(os.getpid()) * 1024)}), flush=True)
    await asyncio.gather(*tasks, asyncio.Event().wait())  # serve until terminated


# --- the parent ------------------------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    """GET a URL (short timeout); (0, '') when it cannot answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except Exception:
        return 0, ""


def change_count(base: str) -> tuple[int | None, str]:
    """Changes counted by the sidecar, and where the figure came from."""
    code, body = get(base + "/metrics")
    if code == 200:
        samples = [line for line in body.splitlines()
                   if not line.startswith("#") and "watch_changes" in line.split("{")[0].split(" ")[0]
                   and not line.split("{")[0].split(" ")[0].endswith("_created")]
        if samples:
            return int(sum(float(s.rsplit(" ", 1)[1]) for s in samples)), "/metrics"
    code, body = get(base + "/status")
    if code == 200:
        return sum(json.loads(body)["watch"]["changes"].values()), "/status"
    return None, ""


class Target:
    """A watched tree served over HTTP: the real sidecar if it can run here, the harness otherwise."""

    def __init__(self, tmp: Path, files: dict[str, str], debounce: str, watch: bool = True,
                 harness: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.real = not harness and importlib.util.find_spec("sidecar.scripts.sync") is not None
        if self.real:
            fallback = tmp / "fallback"
            for rel, text in files.items():
                (fallback / rel).parent.mkdir(parents=True, exist_ok=True)
                (fallback / rel).write_text(text)
            self.link = tmp / "vol" / "deployment-scripts"
            argv = [sys.executable, "-m", "sidecar", "run", "--fallback-dir", str(fallback), "--link",
                    str(self.link), "--http-host", "127.0.0.1", "--http-port", str(self.port),
                    "--watch-debounce", debounce]
        else:
            pub = Published(tmp)
            pub.publish(pub.commit(files))
            self.link = pub.link
            argv = [sys.executable, __file__, "serve", str(pub.link), str(pub.root), str(self.port),
                    "watch" if watch else "nowatch", debounce]
        self.proc = subprocess.Popen(argv, env=sidecar_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.footprint: dict[str, int] = {}
        if not self.real:
            self.footprint = json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while True:
            code, body = get(self.base + "/status")
            if code == 200 and (not watch or json.loads(body)["watch"]["running"]):
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the watched sidecar did not come up")
            time.sleep(0.05)
        self.kind = "python -m sidecar run" if self.real else "watcher + endpoints harness"

    def stop(self) -> None:
        """Stop the child."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def latency_run(writes: int, debounce: str, poll: float) -> tuple[list[float], str, str]:
    """Milliseconds from each write to the change being counted."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(Path(tmp), SCRIPTS, debounce)
        try:
            out = []
            source = ""
            path = target.link / "node-deployment" / "local_script.al"
            for i in range(writes):
                count, source = change_count(target.base)
                assert count is not None
                start = time.perf_counter()
                with path.open("a") as f:
                    f.write(f"edit {i}\n")
                while True:
                    now, _ = change_count(target.base)
                    if now is not None and now > count:
                        break
                    if time.perf_counter() - start > 10:
                        raise SystemExit("a change was never counted")
                    time.sleep(poll)
                out.append((time.perf_counter() - start) * 1000)
                # Longer than the debounce (each write is a batch of its own), and random: a fixed pause
                # would lock every write to the same phase of the watcher's polling step.
                time.sleep(random.uniform(0.15, 0.35))
            return out, source, target.kind
        finally:
            target.stop()


def footprint_run(idle: float, debounce: str) -> dict[str, float]:
    """RSS increase of arming the watch on 10,000 files, and idle CPU with and without the watcher."""
    result: dict[str, float] = {}
    for watch in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            target = Target(Path(tmp), BIG, debounce, watch=watch, harness=True)
            try:
                if watch:
                    fp = target.footprint
                    result["rss_increase_mib"] = (fp["rss_after_kib"] - fp["rss_before_kib"]) / 1024
                    result["rss_total_mib"] = fp["rss_after_kib"] / 1024
                start = cpu_seconds(target.proc.pid)
                time.sleep(idle)
                used = cpu_seconds(target.proc.pid) - start
                result["idle_cpu_pct_" + ("watch" if watch else "nowatch")] = used / idle * 100
            finally:
                target.stop()
    return result


def p99(values: list[float]) -> float:
    """99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1)]


def main() -> None:
    """Run the benchmarks and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--debounce", default="0.05", help="--watch-debounce of the sidecar (its default)")
    parser.add_argument("--poll", type=float, default=0.002, help="seconds between polls of the count")
    parser.add_argument("--skip-footprint", action="store_true")
    args = parser.parse_args()

    medians, p99s, everything = [], [], []
    source = kind = ""
    for run in range(args.runs):
        values, source, kind = latency_run(args.writes, args.debounce, args.poll)
        everything += values
        medians.append(statistics.median(values))
        p99s.append(p99(values))
        print(f"latency run {run + 1}: median {medians[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms", flush=True)
    print(f"write -> counted in {source} ({kind}), {args.runs} runs x {args.writes} writes: "
          f"median of run medians {statistics.median(medians):.1f} ms, median of run p99s "
          f"{statistics.median(p99s):.1f} ms (all samples: median {statistics.median(everything):.1f}, "
          f"p99 {p99(everything):.1f}, max {max(everything):.1f})")
    if args.skip_footprint:
        return
    runs: list[dict[str, float]] = []
    for run in range(args.runs):
        runs.append(footprint_run(args.idle, args.debounce))
        print(f"footprint run {run + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    print(f"10,000-file tree, medians of {args.runs} runs: "
          + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in runs[0]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "watch", sys.argv[6]))
    else:
        main()
