"""Short connections to the node's ports: one deadline over the whole exchange, always closed.

The node's servers have no timeouts of their own (docs/checks.md), so whatever the sidecar
opens it must close, whether the exchange succeeded, failed or ran out of time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a connection now; never wait long for the peer to acknowledge."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


@contextlib.asynccontextmanager
async def connection(host: str, port: int, timeout: float
                     ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect, run the ``async with`` body, close; connect and body together get ``timeout`` seconds."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            yield reader, writer
    finally:
        if writer is not None:
            await close(writer)


def reason(exc: BaseException) -> tuple[str, str] | None:
    """``(reason word, message)`` for a network failure, or None when ``exc`` is not one."""
    if isinstance(exc, TimeoutError):
        return "timeout", "no complete answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset", "connection reset by the node"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed", f"closed after {len(exc.partial)} of {exc.expected} bytes"
    if isinstance(exc, OSError):
        return "unreachable", str(exc) or type(exc).__name__
    return None
