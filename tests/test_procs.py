"""sidecar/procs.py in process, with real child processes: output, caps, timeouts, process groups."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sidecar import procs
from tests.helpers import gone
from tests.published import eventually

PY = sys.executable


async def test_exit_code_output_stdin_env_and_cwd(tmp_path: Path) -> None:
    code = ("import os, sys; data = sys.stdin.read(); print(data.upper(), os.environ['X'], os.getcwd());"
            "print('warn', file=sys.stderr); sys.exit(3)")
    result = await procs.run([PY, "-c", code], timeout=30, stdin=b"abc", env={"X": "y"}, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout == f"ABC y {tmp_path}\n".encode()
    assert result.stderr == b"warn\n"


async def test_output_is_capped_and_the_child_is_still_drained() -> None:
    code = "import sys; [s.write('x' * 65536) for _ in range(64) for s in (sys.stdout, sys.stderr)]"  # 4 MiB each
    result = await procs.run([PY, "-c", code], timeout=60, cap=1000)
    assert result.returncode == 0  # it was never blocked on a full pipe
    assert result.stdout == b"x" * 1000 and result.stderr == b"x" * 1000


async def test_stdin_for_a_child_that_does_not_read_it() -> None:
    result = await procs.run([PY, "-c", "import os; os.close(0)"], timeout=30, stdin=b"y" * (4 * 1024 * 1024))
    assert result.returncode == 0


async def _spawning(tmp_path: Path, then: str) -> list[str]:
    """A child that starts a grandchild in its process group, writes both pids, then does ``then``."""
    return [PY, "-c", "import os, subprocess, sys, time\n"
            "child = subprocess.Popen(['sleep', '300'])\n"
            f"open({str(tmp_path / 'pids')!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n" + then]


def _pids(tmp_path: Path) -> list[int]:
    return [int(p) for p in (tmp_path / "pids").read_text().split()]


async def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    with pytest.raises(procs.ProcTimeout) as timed_out:
        await procs.run(await _spawning(tmp_path, "time.sleep(300)"), timeout=1)
    assert str(timed_out.value).startswith("python") and "ran over 1 s and was killed" in str(timed_out.value)
    pids = _pids(tmp_path)
    await eventually(lambda: all(gone(pid) for pid in pids), what="child and grandchild killed")


async def test_cancelling_the_caller_kills_the_whole_group(tmp_path: Path) -> None:
    task = asyncio.create_task(procs.run(await _spawning(tmp_path, "time.sleep(300)"), timeout=300))
    await eventually(lambda: (tmp_path / "pids").is_file() and len(_pids(tmp_path)) == 2, what="both started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = _pids(tmp_path)
    await eventually(lambda: all(gone(pid) for pid in pids), what="child and grandchild killed")


async def test_grandchildren_left_behind_are_killed(tmp_path: Path) -> None:
    result = await procs.run(await _spawning(tmp_path, "sys.exit(0)"), timeout=30)
    assert result.returncode == 0
    _, grandchild = _pids(tmp_path)
    await eventually(lambda: gone(grandchild), what="the grandchild killed")


async def test_a_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await procs.run([str(tmp_path / "no-such-program")], timeout=5)


def test_killing_a_group_that_is_gone_is_harmless() -> None:
    procs.kill_group(2**22 + 12345)  # above pid_max's default: no such group
