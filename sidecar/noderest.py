"""The one REST client that talks to the node: checks, hooks and the ``check`` command all use it.

The node's REST server has 5 worker threads and no read timeout (docs/checks.md), so:
- at most one request is in flight at a time per client, and the sidecar builds one client
  (``app.py``) that it hands to every user;
- every request has a deadline covering connect, send and the whole answer;
- the connection is closed as soon as the answer is read (the node says ``Connection: close``);
- a command carries ``User-Agent: AnyLog/1.23``, without which the node treats it as a ping;
- a command goes with the HTTP method the node expects (:func:`method_for`): the wrong one costs
  a 400 and a line in the node's 20-entry error log.

It is a raw-socket client on purpose: the node's error answers claim chunked encoding without
chunk framing, which HTTP client libraries raise on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from sidecar import netio

USER_AGENT = "AnyLog/1.23"
MAX_ANSWER = 1024 * 1024

# The node's own table: the first words of a command (two or three words are looked up before
# one) and the method they need. ``GET*POST`` takes either; a command whose words are not in the
# table needs POST (``process``, ``set``, ``run``, ``reset``, ``exit``, ...).
METHODS: dict[str, str] = {
    "sql": "GET*POST",
    "print": "GET*POST",
    "wait": "GET*POST",
    "subprocess": "GET*POST",
    "help": "GET",
    "get": "GET",
    "test": "GET",
    "blockchain get": "GET",
    "blockchain read": "GET",
    "blockchain drop": "POST",
    "query status": "GET",
    "query explain": "GET",
    "query destination": "GET",
    "analyze output": "GET",
    "time file get": "GET",
    "time file summary": "GET",
    "job status": "GET",
    "job active": "GET",
    "job run": "POST",
    "job stop": "POST",
    "file get": "GET",
    "file retrieve": "GET",
    "file to": "GET",
    "file from": "GET",
}


def method_for(command: str) -> str:
    """``GET`` or ``POST``: the method the node accepts for ``command`` (commands that take either get GET)."""
    words = command.lower().split()
    keys = [" ".join(words[:n]) for n in (2, 3, 1) if len(words) >= n]
    for key in keys:
        if key in METHODS:
            return METHODS[key].split("*")[0]
    return "POST"


class NodeRestError(Exception):
    """A request that got no usable answer; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NodeAnswer:
    """The node's answer to one request."""

    status: int
    reason_phrase: str
    headers: dict[str, str]
    body: bytes
    duration: float

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> object:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error(self) -> str | None:
        """Why the node refused the request (a 4xx, or an ``err_code`` body), or None when it did not.

        The node answers some errors with a JSON reason phrase and some with a JSON body, so both
        are looked at.
        """
        body = self.json()
        if isinstance(body, dict) and "err_code" in body:
            return f"HTTP {self.status}: err_code {body['err_code']}: {str(body.get('err_text', ''))[:120]}"
        if 400 <= self.status < 500:
            return f"HTTP {self.status} {self.reason_phrase[:120]}".strip()
        return None


def request_bytes(method: str, path: str, host: str, port: int, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 request head (the node's requests have no body)."""
    for value in (path, *headers.keys(), *headers.values()):
        if any(c in value for c in "\r\n\x00"):
            raise NodeRestError("bad-command", "a request line or header must not contain line breaks")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}", *(f"{k}: {v}" for k, v in headers.items()),
             "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def dechunk(body: bytes) -> bytes:
    """Decode a chunked body when it is really chunked; the node's error bodies only claim to be."""
    out = bytearray()
    rest = body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            return body
        if not sep or size < 0:
            return body
        if size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def parse(raw: bytes, duration: float) -> NodeAnswer:
    """The answer in ``raw`` (everything the node sent before closing); raises NodeRestError when it is not HTTP."""
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
    length = headers.get("content-length", "")
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = dechunk(body)
        elif length.isascii() and length.isdigit():
            body = body[: int(length)]
        return NodeAnswer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body, duration)
    except ValueError as exc:  # e.g. a status or length of thousands of digits
        raise NodeRestError("bad-response", f"unparsable answer: {exc}") from None


class NodeRest:
    """The client of one node's REST server: one request at a time, each with its own deadline."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._lock = asyncio.Lock()

    async def command(self, command: str, *, timeout: float, headers: dict[str, str] | None = None) -> NodeAnswer:
        """Send one node command with the method it needs (see :func:`method_for`)."""
        return await self.request(method_for(command), "/", timeout=timeout,
                                  headers={"User-Agent": USER_AGENT, "command": command, **(headers or {})})

    async def health(self, *, timeout: float) -> NodeAnswer:
        """``GET /health``: the node answers it and logs nothing, but only without a user agent or command."""
        return await self.request("GET", "/health", timeout=timeout, headers={})

    async def request(self, method: str, path: str, *, timeout: float, headers: dict[str, str]) -> NodeAnswer:
        """Send one request and return the answer.

        Waits for the client's lock first (that wait is not part of ``timeout``), then the whole
        exchange must finish within ``timeout`` seconds. Raises NodeRestError with a reason of
        ``refused``, ``timeout``, ``reset``, ``unreachable`` or ``bad-response``.
        """
        request = request_bytes(method, path, self.host, self.port, headers)
        async with self._lock:
            start = time.monotonic()
            try:
                async with netio.connection(self.host, self.port, timeout) as (reader, writer):
                    writer.write(request)
                    await writer.drain()
                    chunks: list[bytes] = []
                    size = 0
                    while size < MAX_ANSWER and (raw := await reader.read(MAX_ANSWER - size)):
                        chunks.append(raw)
                        size += len(raw)
            except OSError as exc:  # TimeoutError is an OSError too
                reason, message = netio.reason(exc) or ("unreachable", str(exc))
                if reason == "timeout":
                    message = f"no complete answer within {timeout:g} s"
                raise NodeRestError(reason, message) from None
            return parse(b"".join(chunks), time.monotonic() - start)
