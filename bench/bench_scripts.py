"""Scripts benchmarks (issue 2), side by side in one run, medians of several runs.

    python bench/bench_scripts.py [--runs N] [--idle-seconds S]

1. one-time seed of a 300-file repository: ``edgelake-sidecar seed`` (process start to published
   tree) against the shell recipe (``git clone --depth 1`` into a temp folder, then ``mv``);
2. push-to-visible latency through ``POST /sync`` and by polling at a 1 s period;
3. a no-op sync (nothing new upstream), in process;
4. idle footprint at a 10 s period: RSS and CPU (git children included) over a window;
5. carrying untracked files: a sync that carries N files a user added (in process), and a sync
   after as many more arrived;
6. ``POST /sync`` to visible while another process keeps writing and flushing to the same disk.

Pushes are ``PUSH_GAP`` apart (after the previous one became visible), as a person's are.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import benchvenv  # noqa: E402
from bench.procstat import cpu_seconds, rss_mb  # noqa: E402
from tests.conftest import Sidecar, sidecar_env  # noqa: E402
from tests.gitrepos import Upstream, many_files  # noqa: E402

# The product as it ships: the console script of a wheel install, no source path.
SHIPPED = {"PYTHONPATH": "", "SIDECAR_LOG_LEVEL": "warning"}


@functools.cache
def exe() -> str:
    """The console script of the wheel-installed sidecar."""
    return str(Path(benchvenv.python()).parent / "edgelake-sidecar")


def median_ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    med = statistics.median(values) * 1000
    return f"median {med:.1f} ms (min {min(values) * 1000:.1f}, p90 {p90 * 1000:.1f}, n={len(values)})"


def bench_seed(base: Path, up: Upstream, runs: int) -> dict[str, list[float]]:
    sidecar_cmd = [exe(), "seed", "--repo", up.url]
    results: dict[str, list[float]] = {"sidecar seed": [], "git clone --depth 1 + mv": []}
    env = sidecar_env(SHIPPED)
    for i in range(runs):
        vol = base / f"seed-{i}"
        started = time.monotonic()
        subprocess.run([*sidecar_cmd, "--link", str(vol / "scripts")], env=env, check=True, timeout=60)
        results["sidecar seed"].append(time.monotonic() - started)

        dest = base / f"recipe-{i}" / "deployment-scripts"
        dest.mkdir(parents=True)
        started = time.monotonic()
        tmp = base / f"recipe-{i}" / "tmp"
        subprocess.run(["git", "clone", "-q", "--depth", "1", up.url, str(tmp)], check=True, timeout=60)
        subprocess.run(f"mv {tmp}/* {dest}/", shell=True, check=True, timeout=60)
        results["git clone --depth 1 + mv"].append(time.monotonic() - started)
    return results


def _visible(link: Path, marker: str) -> bool:
    try:
        return (link / "node-deployment" / "main.al").read_text() == marker
    except OSError:
        return False


WRITER = """
import os, sys, time
path = sys.argv[1]
block = os.urandom(1 << 20)
while True:
    with open(path, "wb") as f:
        for _ in range(16):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
"""


# Pushes a person makes are seconds apart, not back to back: each POST /sync comes this long after
# the previous push became visible, so it measures one push's latency, not a queue of them.
PUSH_GAP = 1.0


def bench_push_to_visible(base: Path, up: Upstream, runs: int, mode: str, busy_disk: bool = False) -> list[float]:
    """``mode``: ``post`` (POST /sync) or ``poll``; ``busy_disk``: another process keeps writing 16 MB
    and flushing it on the same filesystem all along."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(base / "disk-writer.bin")]) if busy_disk else None
    try:
        return _push_to_visible(base, up, runs, mode)
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()


def _push_to_visible(base: Path, up: Upstream, runs: int, mode: str) -> list[float]:
    link = base / f"visible-{mode}-{time.time_ns()}" / "scripts"
    token = base / "token"
    token.write_text("bench-token")
    period = "1" if mode == "poll" else "3600"
    sc = Sidecar(["--repo", up.url, "--link", str(link), "--period", period, "--jitter", "0",
                  "--sync-token-file", str(token)], SHIPPED, command=[exe()])
    sc.start()
    sc.wait_for(lambda: link.is_symlink(), 30, "published")
    latencies = []
    try:
        for i in range(runs):
            marker = f"{mode} {i} {time.time_ns()}\n"
            if mode == "poll":
                time.sleep((i * 0.618034) % 1.0)  # pushes spread evenly over the phase of the 1 s period
            else:
                time.sleep(PUSH_GAP)
            up.commit({"node-deployment/main.al": marker})
            started = time.monotonic()
            if mode == "post":
                req = urllib.request.Request(sc.url + "/sync", method="POST",
                                             headers={"Authorization": "Bearer bench-token"})
                urllib.request.urlopen(req, timeout=5).close()
            while not _visible(link, marker):
                time.sleep(0.002)
                if time.monotonic() - started > 30:
                    raise RuntimeError("push never became visible")
            latencies.append(time.monotonic() - started)
    finally:
        sc.stop()
    return latencies


def bench_noop(base: Path, up: Upstream, runs: int) -> list[float]:
    from sidecar.config import load
    from sidecar.scripts.seed import ensure_published
    from sidecar.scripts.sync import sync_once
    from sidecar.scripts.workspace import Workspace
    from sidecar.state import State

    link = base / "noop" / "scripts"
    settings = load(["run", "--link", str(link), "--repo", up.url], {})

    async def main() -> list[float]:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        out = []
        for _ in range(runs):
            started = time.monotonic()
            assert await sync_once(ws) == "noop"
            out.append(time.monotonic() - started)
        return out

    return asyncio.run(main())


def bench_carry(base: Path, files: int, runs: int) -> dict[str, list[float]]:
    """Syncs carrying ``files`` untracked files a user added, then as many more added since."""
    from sidecar.config import load
    from sidecar.scripts import spare
    from sidecar.scripts.seed import ensure_published
    from sidecar.scripts.sync import sync_once
    from sidecar.scripts.workspace import Workspace
    from sidecar.state import State

    async def one(up: Upstream, link: Path, run: int, out: dict[str, list[float]]) -> None:
        ws = Workspace.create(load(["run", "--link", str(link), "--repo", up.url], {}), State())
        await ensure_published(ws)
        for key in ("first", "again"):
            spare.keep_ready(ws)  # as the run loop does after each sync, while the sidecar is idle
            await ws.settle()
            for i in range(files):
                folder = link / f"added-{key}-{i % 50}"
                folder.mkdir(exist_ok=True)
                (folder / f"f{i}.al").write_text(f"# {key} {i}\n")
            up.commit({"node-deployment/main.al": f"{key} {run}\n"})
            started = time.monotonic()
            assert await sync_once(ws) == "ok"
            out[key].append(time.monotonic() - started)
        await ws.settle()

    out: dict[str, list[float]] = {"first": [], "again": []}
    for run in range(runs):
        folder = base / f"carry-{files}-{run}"
        asyncio.run(one(Upstream(folder), folder / "vol" / "scripts", run, out))
    return out


def bench_idle(base: Path, up: Upstream, seconds: float, *extra: str) -> dict[str, float]:
    link = base / f"idle{len(extra)}" / "scripts"
    sc = Sidecar(["--repo", up.url, "--link", str(link), "--period", "10", *extra], SHIPPED, command=[exe()])
    sc.start()
    sc.wait_for(lambda: link.is_symlink(), 30, "published")
    assert sc.proc is not None
    time.sleep(2)
    cpu0 = cpu_seconds(sc.proc.pid, children=True)
    started = time.monotonic()
    rss_samples = []
    while time.monotonic() - started < seconds:
        time.sleep(1)
        rss_samples.append(rss_mb(sc.proc.pid))
    cpu1, rss = cpu_seconds(sc.proc.pid, children=True), rss_mb(sc.proc.pid)
    elapsed = time.monotonic() - started
    syncs = json.loads(urllib.request.urlopen(sc.url + "/status", timeout=5).read())["scripts"]["syncs"]
    sc.stop()
    return {"rss_mb_end": rss, "rss_mb_max": max(rss_samples), "cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
            "seconds": elapsed, "syncs": sum(syncs.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--carry-runs", type=int, default=3)
    parser.add_argument("--only", choices=("carry", "visible"), help="run one part only")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-scripts-"))
    try:
        up = Upstream(base, many_files(300))
        print(f"repository: {len(many_files(300))} files; python {sys.version.split()[0]}; "
              f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
        if args.only in (None, "visible"):
            if args.only is None:
                for name, values in bench_seed(base, up, args.runs).items():
                    print(f"seed  {name:28s} {median_ms(values)}")
            post = bench_push_to_visible(base, up, args.runs, "post")
            print(f"visible via POST /sync            {median_ms(post)}")
            busy = bench_push_to_visible(base, up, args.runs, "post", busy_disk=True)
            print(f"visible via POST /sync, disk busy {median_ms(busy)}")
        if args.only is None:
            print(f"visible by polling (1 s period) {median_ms(bench_push_to_visible(base, up, args.runs, 'poll'))}")
            print(f"no-op sync (in process)         {median_ms(bench_noop(base, up, args.runs * 2))}")
        if args.only in (None, "carry"):
            for files in (1000, 20000):
                for key, values in bench_carry(base, files, args.carry_runs).items():
                    print(f"sync carrying {files} added files ({key}) {median_ms(values)}")
        if args.only is None:
            for extra in ((), ("--no-watch",)):
                idle = bench_idle(base, up, args.idle_seconds, *extra)
                print(f"idle at 10 s period over {idle['seconds']:.0f} s {' '.join(extra) or '(defaults)'}: "
                      f"RSS {idle['rss_mb_end']:.1f} MB (max {idle['rss_mb_max']:.1f}), "
                      f"CPU {idle['cpu_percent']:.3f} % of one core incl. git children, {idle['syncs']} syncs")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
