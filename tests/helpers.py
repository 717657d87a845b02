"""Small helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tests.conftest import require_tool


@contextlib.asynccontextmanager
async def running(*jobs: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Components running in this loop, cancelled at the end."""
    tasks = [asyncio.create_task(job()) for job in jobs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def promtool_check(text: str) -> None:
    """``promtool check metrics`` passes with no problem and no lint warning."""
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


def gone(pid: int) -> bool:
    """True when the process no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
