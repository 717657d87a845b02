"""netio in process: every exchange is closed, whatever happens, and failures get a reason word."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sidecar import netio


@pytest.mark.parametrize(("exc", "word"), [
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(), "refused"),
    (ConnectionResetError(), "reset"),
    (BrokenPipeError(), "reset"),
    (asyncio.IncompleteReadError(b"ab", 4), "closed"),
    (OSError(113, "No route to host"), "unreachable"),
])
def test_reasons(exc: BaseException, word: str) -> None:
    known = netio.reason(exc)
    assert known is not None and known[0] == word


def test_not_a_network_failure() -> None:
    assert netio.reason(ValueError("x")) is None


async def _eof_server() -> tuple[asyncio.Server, int, asyncio.Event]:
    """A server that notes when its client has closed the connection."""
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until EOF
        closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], closed


@pytest.mark.parametrize("ending", ["normal", "error", "timeout"])
async def test_the_connection_is_always_closed(ending: str) -> None:
    server, port, closed = await _eof_server()
    try:
        with pytest.raises((ValueError, TimeoutError)) if ending != "normal" else contextlib.nullcontext():
            async with netio.connection("127.0.0.1", port, 0.3) as (reader, _writer):
                if ending == "error":
                    raise ValueError("boom")
                if ending == "timeout":
                    await reader.read(1)  # the server says nothing: the deadline ends it
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        server.close()


async def test_refused() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        async with netio.connection("127.0.0.1", port, 3):
            pass
