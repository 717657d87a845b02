"""Footprint and start-up of the Kubernetes integration: ``python bench/bench_kube.py``.

- time from process start to the first API request (the fake API server records its arrival), over
  ``--runs`` starts, median;
- RSS of the sidecar with Kubernetes on and every other feature on (scripts from the fallback folder,
  the three node checks every 2 s against the stand-in node (tests/fakenode.py), the file watch, a
  change hook, and the probes, ``/metrics`` and ``/status`` called every 5 s as a cluster would),
  sampled every ``--interval`` seconds for ``--duration`` seconds; the same with ``--kube off`` side by
  side, to show what Kubernetes costs.

The API server is the tests' stand-in (tests/fakekube.py: HTTPS, token, real JSON shapes) on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakekube import NAMESPACE, POD, SERVICE, FakeKube, node, pod, service  # noqa: E402
from fakenode import FakeNode  # noqa: E402

from bench.procstat import rss_mb  # noqa: E402

GOAL_MB = 50.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_cluster_prefix(fake: FakeKube, work: Path) -> tuple[list[str], dict[str, str]]:
    """Run as in a pod: the service account files at their fixed path, in a private mount namespace
    (nothing changes on this machine), and the API's address in KUBERNETES_SERVICE_HOST/PORT."""
    sa_dir, environ = fake.in_cluster(work / "serviceaccount")
    target = "/run/secrets/kubernetes.io/serviceaccount"
    script = f'mount -t tmpfs tmpfs /run && mkdir -p {target} && cp {sa_dir}/* {target}/ && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"], environ


def start(fake: FakeKube, work: Path, kube: str, mode: str, node: FakeNode | None = None,
          http_port: int | None = None) -> subprocess.Popen[bytes]:
    """The sidecar with every feature on; ``mode`` is in-cluster or kubeconfig.

    With ``node`` its checks probe that stand-in node; without, ports nobody listens on.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "ANYLOG_", "POD_", "KUBERNETES_")) and k != "KUBECONFIG"}
    env.update({"PYTHONPATH": str(ROOT), "SIDECAR_LOG_FORMAT": "json", "SIDECAR_KUBE": kube, "POD_NAME": POD,
                "POD_NAMESPACE": NAMESPACE})
    prefix: list[str] = []
    if mode == "in-cluster":
        prefix, environ = in_cluster_prefix(fake, work)
        env.update(environ)
    else:
        env["KUBECONFIG"] = str(fake.kubeconfig(work / "kube"))
    ports = ([str(node.tcp.port), str(node.rest.port), str(node.broker.port)] if node is not None
             else [str(free_port()) for _ in range(3)])
    args = [*prefix, sys.executable, "-m", "sidecar", "run",
            "--http-host", "127.0.0.1", "--http-port", str(http_port or free_port()),
            "--fallback-dir", str(ROOT / "examples" / "deployment-scripts"),
            "--link", str(work / "app" / "scripts" / "deployment-scripts"),
            "--tcp-port", ports[0], "--rest-port", ports[1], "--broker-port", ports[2],
            "--tcp-interval", "2", "--rest-interval", "2", "--broker-interval", "2",
            "--tcp-failure-threshold", "1", "--rest-failure-threshold", "1", "--broker-failure-threshold", "1",
            "--on-change-exec", "true", "--service-name", SERVICE, "--network-env-file",
            str(work / "shared" / "network.env"), "--node-external-ip", "--kube-period", "5"]
    with open(work / "log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def new_fake() -> FakeKube:
    fake = FakeKube().start()
    for obj in (service(type="NodePort"), pod(), node()):
        fake.put(obj)
    return fake


def first_call(runs: int, mode: str) -> list[float]:
    """Seconds from spawning the process to the API server receiving its first request."""
    times = []
    for _ in range(runs):
        fake = new_fake()
        with tempfile.TemporaryDirectory() as tmp:
            spawned = time.monotonic()
            proc = start(fake, Path(tmp), "on", mode)
            deadline = spawned + 30
            while not fake.requests and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.002)
            if not fake.requests:
                raise SystemExit(f"no API request within 30 s; log: {(Path(tmp) / 'log').read_text()[-2000:]}")
            times.append(fake.requests[0].at - spawned)
            stop(proc)
        fake.stop()
    return times


def footprint(duration: float, interval: float, mode: str) -> dict[str, list[tuple[float, float]]]:
    """RSS curves of a sidecar with Kubernetes on and one with it off, run side by side."""
    fake = new_fake()
    node = FakeNode("el-bench")
    curves: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    http = {"on": free_port(), "off": free_port()}
    with tempfile.TemporaryDirectory() as tmp_on, tempfile.TemporaryDirectory() as tmp_off:
        procs = {"on": start(fake, Path(tmp_on), "on", mode, node, http["on"]),
                 "off": start(fake, Path(tmp_off), "off", mode, node, http["off"])}
        started = time.monotonic()
        try:
            for i in range(int(duration // interval) + 1):
                # Probes and Prometheus as a cluster would call them, until the next sample.
                while time.monotonic() < started + i * interval:
                    for port in http.values():
                        for path in ("/readyz", "/livez", "/metrics", "/status"):
                            with contextlib.suppress(OSError):
                                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
                    time.sleep(min(5.0, max(0.0, started + i * interval - time.monotonic())))
                elapsed = time.monotonic() - started
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise SystemExit(f"sidecar ({name}) exited: {proc.returncode}")
                    curves[name].append((elapsed, rss_mb(proc.pid)))
                print(f"  t={elapsed:6.0f} s  rss kube on {curves['on'][-1][1]:5.1f} MB  "
                      f"off {curves['off'][-1][1]:5.1f} MB  api requests {len(fake.requests)}", flush=True)
        finally:
            for proc in procs.values():
                stop(proc)
            fake.stop()
            node.stop()
    writes = sum(1 for r in fake.requests if r.resource == "events")
    print(f"  Events API writes: {writes}; Events stored: {len(fake.events())}; "
          f"counts: {sorted(e['count'] for e in fake.events())}")
    return curves


FULL_CLIENT = """
import aiohttp, prometheus_client, structlog
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) / 1024
before = rss()
from kubernetes import client
client.CoreV1Api(client.ApiClient())
print(before, rss())
"""


def full_client_cost() -> tuple[float, float]:
    """RSS (MB) of the sidecar's dependency set, before and after importing the whole official client and
    building a ``CoreV1Api``: what ``sidecar/kube/official.py`` avoids."""
    out = subprocess.run([sys.executable, "-c", FULL_CLIENT], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of the footprint run (default 600)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between RSS samples (default 30)")
    parser.add_argument("--runs", type=int, default=7, help="starts measured for the first API call (default 7)")
    parser.add_argument("--mode", choices=("in-cluster", "kubeconfig"), default="in-cluster",
                        help="how the sidecar finds the API (in-cluster needs root for a private mount namespace)")
    args = parser.parse_args()

    print(f"mode {args.mode}")
    times = first_call(args.runs, args.mode)
    print(f"start to first API request: median {statistics.median(times):.3f} s over {len(times)} runs "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    curves = footprint(args.duration, args.interval, args.mode)
    on, off = curves["on"][-1][1], curves["off"][-1][1]
    print(f"RSS after {curves['on'][-1][0]:.0f} s: kube on {on:.1f} MB (peak {max(r for _, r in curves['on']):.1f}), "
          f"kube off {off:.1f} MB; Kubernetes costs {on - off:.1f} MB; goal <= {GOAL_MB:.0f} MB: "
          f"{'met' if on <= GOAL_MB else 'NOT met'}")
    before, after = full_client_cost()
    print(f"for comparison, the whole official client with a CoreV1Api: {before:.1f} -> {after:.1f} MB "
          f"(+{after - before:.1f} MB) on top of aiohttp, prometheus_client and structlog")


if __name__ == "__main__":
    main()
