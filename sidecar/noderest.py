"""The one REST client that talks to the node: checks and hooks both go through it.

The node's REST server has 5 worker threads and no read timeout (docs/checks.md), so:
- at most one request is in flight at a time, across the whole sidecar (a process-wide lock);
- every request has a deadline covering connect, send and the whole answer;
- the connection is closed as soon as the answer is read (the node says ``Connection: close``);
- the request carries ``User-Agent: AnyLog/1.23``, without which the node treats a command as a ping.

It is a raw-socket client on purpose: the node's error answers claim chunked encoding without
chunk framing, which HTTP client libraries raise on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sidecar import netio

USER_AGENT = "AnyLog/1.23"
MAX_ANSWER = 1024 * 1024

_locks: dict[int, asyncio.Lock] = {}


def _lock() -> asyncio.Lock:
    """The process-wide request lock of the running event loop."""
    loop = asyncio.get_running_loop()
    lock = _locks.get(id(loop))
    if lock is None:
        _locks.clear()  # a new loop (tests, or asyncio.run again): old locks are useless
        lock = _locks[id(loop)] = asyncio.Lock()
    return lock


class NodeRestError(Exception):
    """A request that got no usable answer; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NodeAnswer:
    """The node's answer to one command."""

    status: int
    reason_phrase: str
    headers: dict[str, str]
    body: bytes
    duration: float

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors="replace")


def _request(host: str, port: int, command: str, extra: dict[str, str]) -> bytes:
    if any(c in command for c in "\r\n\x00"):
        raise NodeRestError("bad-command", "command must not contain line breaks")
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}:{port}",
        f"User-Agent: {USER_AGENT}",
        f"command: {command}",
        *(f"{k}: {v}" for k, v in extra.items()),
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _dechunk(body: bytes) -> bytes:
    """Decode a chunked body when it is really chunked; the node's error bodies are not."""
    out = bytearray()
    rest = body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            return body
        if not sep:
            return body
        if size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _parse(raw: bytes, duration: float) -> NodeAnswer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise NodeRestError("bad-response", "answer has no complete HTTP head")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    # isascii(): "²".isdigit() is True but int() rejects it; a garbage answer must be a bad-response.
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isascii() and parts[1].isdigit()):
        raise NodeRestError("bad-response", f"not an HTTP status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isascii() and headers.get("content-length", "").isdigit():
        body = body[: int(headers["content-length"])]
    return NodeAnswer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body, duration)


async def command(
    host: str,
    port: int,
    command: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> NodeAnswer:
    """Send one command to the node's REST server and return its answer.

    Waits for the process-wide lock first (that wait is not part of ``timeout``), then the whole
    exchange must finish within ``timeout`` seconds. Raises NodeRestError with a reason of
    ``refused``, ``timeout``, ``reset``, ``unreachable`` or ``bad-response``.
    """
    request = _request(host, port, command, headers or {})
    async with _lock():
        start = time.monotonic()
        try:
            async with netio.connection(host, port, timeout) as (reader, writer):
                writer.write(request)
                await writer.drain()
                raw = await reader.read(MAX_ANSWER)
                chunks = [raw]
                size = len(raw)
                while raw and size < MAX_ANSWER:
                    raw = await reader.read(MAX_ANSWER - size)
                    chunks.append(raw)
                    size += len(raw)
        except OSError as exc:  # TimeoutError is an OSError too
            reason, message = netio.reason(exc) or ("unreachable", str(exc))
            if reason == "timeout":
                message = f"no complete answer within {timeout:g} s"
            raise NodeRestError(reason, message) from None
        try:
            return _parse(b"".join(chunks), time.monotonic() - start)
        except ValueError as exc:  # e.g. a status or length of thousands of digits
            raise NodeRestError("bad-response", f"unparsable answer: {exc}") from None
