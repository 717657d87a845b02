"""Shared pieces of the benches: the stand-in node and the sidecar as child processes, /proc readings.

The sidecar runs as it ships (installed from its wheel, see benchvenv.py), the stand-in node from
this checkout.

Every bench runs on loopback only, is bounded in time and stops what it started.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import benchvenv
from procstat import cpu_seconds, rss_mb

ROOT = Path(__file__).resolve().parent.parent
FALLBACK = ROOT / "examples" / "deployment-scripts"


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env(source_path: bool = True) -> dict[str, str]:
    """A child's environment: no inherited SIDECAR_*/node variables, no Kubernetes; this checkout on
    the path when ``source_path`` (the stand-in node), none for the sidecar as shipped."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "ANYLOG_")) and k != "NODE_TYPE"}
    out.update(PYTHONPATH=str(ROOT) if source_path else "", SIDECAR_KUBE="off", SIDECAR_LOG_FORMAT="json")
    return out


@functools.cache
def shipped_python() -> str:
    """The interpreter of a venv with the sidecar installed from its wheel (bench/benchvenv.py)."""
    return benchvenv.python()


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET ``url``; (status, body) for any status, (0, b"") when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class FakeNodeProcess:
    """``tests/fakenode.py`` as a child process; ``ports`` once it listens, ``counters`` after stop."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakenode.py")], stdout=subprocess.PIPE,
                                     text=True, env=env())
        assert self.proc.stdout is not None
        self.ports: dict[str, int] = json.loads(self.proc.stdout.readline())
        self.counters: dict[str, Any] = {}

    def args(self, names: Sequence[str] = ("tcp", "rest", "broker")) -> list[str]:
        """Sidecar flags pointing the named checks at this node."""
        out = []
        for name in names:
            out += [f"--{name}-port", str(self.ports[name])]
        return out

    def stop(self) -> dict[str, Any]:
        """Stop it and return its counters (connections per port, event-log lines...)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        self.counters = json.loads(out.strip().splitlines()[-1])
        return self.counters


class SidecarProcess:
    """``python -m sidecar run`` as shipped (wheel install) on a free port, publishing the example scripts."""

    def __init__(self, args: Sequence[str], start: bool = True) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="sidecar-bench-")
        self.port = free_port()
        self.argv = [shipped_python(), "-m", "sidecar", "run", "--http-host", "127.0.0.1", "--http-port",
                     str(self.port), "--fallback-dir", str(FALLBACK), "--link",
                     str(Path(self.tmp.name) / "vol" / "scripts"), *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        if start:
            self.start()

    @property
    def url(self) -> str:
        """Base URL of the endpoints."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Spawn it; ``started`` is the instant just before the spawn."""
        log = open(Path(self.tmp.name) / "sidecar.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=env(source_path=False), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, path: str, status: int = 200, timeout: float = 30, poll: float = 0.005) -> float:
        """Seconds from start until ``path`` answers ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if get(self.url + path, timeout=1)[0] == status:
                return time.monotonic() - self.started
            time.sleep(poll)
        raise RuntimeError(f"{path} never answered {status}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        """Resident set size in MiB."""
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.tmp.cleanup()


@contextmanager
def node_and_sidecar(args: Sequence[str], checks: Sequence[str] = ("tcp", "rest", "broker")
                     ) -> Iterator[tuple[FakeNodeProcess, SidecarProcess]]:
    """A stand-in node and a sidecar checking it; both stopped at the end."""
    node = FakeNodeProcess()
    sidecar = None
    try:
        sidecar = SidecarProcess([*node.args(checks), *args])
        yield node, sidecar
    finally:
        if sidecar is not None:
            sidecar.stop()
        if node.proc.poll() is None:
            node.stop()


def median(values: Sequence[float]) -> float:
    """The median."""
    return statistics.median(values)


def machine_note() -> str:
    """One line about the machine, printed with every result: its load says how shared it was."""
    load = os.getloadavg()
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, Python {python}"
