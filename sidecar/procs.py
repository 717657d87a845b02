"""Subprocesses with a timeout, killed with their whole process group when they run over.

Shared by git and the exec hooks. Output is captured up to a cap so a chatty child cannot
grow the sidecar's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OUTPUT_CAP = 256 * 1024


class ProcTimeout(Exception):
    """The process ran past its timeout and was killed."""


@dataclass(frozen=True)
class ProcResult:
    """What a finished process left: exit code and (capped) output."""

    returncode: int
    stdout: bytes
    stderr: bytes


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> bytes:
    if stream is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)
    return b"".join(chunks)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own protocol, plus a future for the child's exit.

    ``Process.wait()`` (Python 3.11) returns only once every pipe is closed too, and a grandchild
    holding them (a daemon a hook started) would keep it waiting until the timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


def kill_group(pid: int) -> None:
    """SIGKILL a process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    cap: int = OUTPUT_CAP,
) -> ProcResult:
    """Run ``argv`` (no shell) in its own process group; kill the group after ``timeout`` seconds.

    Cancelling the awaiting task kills the group too, so shutdown never leaves children behind.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(loop),
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    proc = asyncio.subprocess.Process(transport, protocol, loop)

    async def communicate() -> tuple[bytes, bytes]:
        readers = asyncio.gather(_read_capped(proc.stdout, cap), _read_capped(proc.stderr, cap))
        try:
            if stdin is not None and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()
            await protocol.exited
            # A grandchild left in the group (a daemon a hook started) may hold the pipes open, and the
            # output would never end: once the child has exited, its group goes, then the rest is read.
            kill_group(proc.pid)
            out, err = await readers
            await proc.wait()
        finally:
            if not readers.done():  # timed out or cancelled: the readers go, their end is collected
                readers.cancel()
                readers.add_done_callback(lambda f: f.cancelled() or f.exception())
        return out, err

    try:
        out, err = await asyncio.wait_for(communicate(), timeout)
    except TimeoutError:
        kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise ProcTimeout(f"{Path(argv[0]).name} ran over {timeout:g} s and was killed") from None
    except BaseException:
        kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wait_for(proc.wait(), 5))
        raise
    return ProcResult(proc.returncode if proc.returncode is not None else -1, out, err)
