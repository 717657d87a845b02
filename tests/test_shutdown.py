"""SIGTERM ends the real process by its deadline, whatever a thread or a task is doing, and says what ran."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, http_get, sidecar_env

pytestmark = pytest.mark.timeout(120)

# The real `run`, plus two components that will not stop: a worker thread in a blocking call
# (asyncio.to_thread cannot be cancelled) and a task that swallows its cancellation.
STUCK = """
import asyncio, sys, threading
import sidecar.app as app

def blocked_forever() -> None:
    threading.Event().wait()

async def stuck_thread() -> None:
    await asyncio.to_thread(blocked_forever)

async def stubborn_task() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

built = app.build_components
app.build_components = lambda s, st: [*built(s, st), app.Component("stuck-thread", stuck_thread, 60),
                                      app.Component("stubborn-task", stubborn_task, 60)]
from sidecar.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_the_process_whatever_runs(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    (fallback / "main.al").write_text("# main\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, "run", "--fallback-dir", str(fallback), "--link",
         str(tmp_path / "vol" / "deployment-scripts"), "--http-host", "127.0.0.1", "--http-port", str(port)],
        env=sidecar_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        start = time.monotonic()
        while _get(port, "/startupz") != 200:
            assert proc.poll() is None and time.monotonic() - start < 60, "the sidecar did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # a bound on the outcome; the figure is in docs/performance.md
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["name"] for e in lines if e["event"] == "component_not_stopped"] == ["stubborn-task"]
    cut = next(e for e in lines if e["event"] == "stop_deadline_passed")
    assert "stubborn-task" in cut["tasks"]
    assert any("blocked_forever" in t for t in cut["threads"]), cut["threads"]


def _get(port: int, path: str) -> int:
    try:
        return http_get(f"http://127.0.0.1:{port}{path}", timeout=1)[0]
    except OSError:
        return 0
