"""A small, hardened HTTP/1.1 server for the sidecar's endpoints.

Why not aiohttp.web: it costs ~15 MB of RSS and ~0.2 s of start-up in every node pod, and it has
no deadline for a slow request head. The endpoints need GET, a small POST, keep-alive and strict
limits, which fit here:

- every request head (the first on a connection and each one after it) must arrive within
  ``header_timeout`` and fit in ``MAX_HEAD`` bytes; its body, with it;
- requests are framed by :mod:`sidecar.http.parser`, strictly as RFC 9112 says (a bare LF, a
  second Content-Length or a Transfer-Encoding is refused, never guessed at); bodies only with
  ``Content-Length`` up to ``MAX_BODY``; ``Expect: 100-continue`` gets its 100;
- at most ``max_connections`` open connections: a new one evicts an idle or slow one, taken
  from the peer address that holds the most connections, so one flooding or slow-loris client
  cannot lock out the kubelet's probes. A closed connection leaves the count at once (its last
  answer drains beside, at most ``max_connections`` of them), so a newcomer costs the same
  however fast the flood comes;
- idle keep-alive connections are closed after ``idle_timeout``;
- back-pressure: a client that does not read its answers stops being read (the kernel's send
  buffer is capped so this happens after kilobytes, not megabytes, of answers), a connection
  closed with answers still unsent is aborted after ``header_timeout``, and pipelined requests
  are answered ``PIPELINE_BATCH`` at a time, so one connection cannot hog the loop.

Deadlines are checked by one sweep every ``SWEEP`` seconds rather than a timer per request:
cheaper at thousands of requests per second, and a deadline only needs to be right to a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.http.parser import MAX_BODY, MAX_HEAD, HttpError, Request, RequestReader, Waiting

__all__ = ["HttpServer", "Request", "Response"]

# Unread bytes kept per connection before it stops being read: one whole request always fits.
MAX_BUFFER = MAX_HEAD + 4 + MAX_BODY
PIPELINE_BATCH = 16  # pipelined requests answered in one go before yielding to other connections
SWEEP = 0.5  # seconds between deadline sweeps
# Kernel send buffer per connection. Left to autotuning, loopback grows it to megabytes, so a client
# that pipelines requests and never reads makes the server answer thousands of them before
# back-pressure (pause_writing) reaches it. The largest answer (/metrics) is ~20 KB.
SEND_BUFFER = 64 * 1024

REASONS = {
    100: "Continue", 200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 417: "Expectation Failed", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class Response:
    """A response; ``body`` is sent with a Content-Length."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader("?")
        self.continued = False  # a 100 Continue went out for the request whose body is arriving
        self.eof = False  # the client has half-closed: no more bytes will come
        self.busy = False  # a request is being answered by an async handler
        self.deadline = 0.0  # monotonic time by which the current wait must end
        self.waiting_since = time.monotonic()  # start of the current idle period or request head
        self.peer = "?"
        self.host = "?"
        self.closing = False
        self.write_paused = False
        self.read_paused = False

    # -- protocol callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
            self.reader.peer = self.peer
        self.deadline = self.waiting_since + self.server.header_timeout
        self.server._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server._closed(self)

    def data_received(self, data: bytes) -> None:
        if not self.reader.buffer and not self.busy:  # a new request starts: it has header_timeout to arrive
            self.waiting_since = time.monotonic()
            self.deadline = self.waiting_since + self.server.header_timeout
        self.reader.feed(data)
        if len(self.reader.buffer) > MAX_BUFFER:
            self._pause_reading()
        if not self.busy:
            self._process()

    def eof_received(self) -> bool:
        """The client sent everything (a half-close): answer what is complete, then close."""
        self.eof = True
        if not self.busy:
            self._process()
        return True  # keep the transport open for the answers still to be written

    def pause_writing(self) -> None:
        self.write_paused = True  # the client does not read its answers: stop answering it

    def resume_writing(self) -> None:
        self.write_paused = False
        self._process()

    # -- internals ------------------------------------------------------------------------------------
    def expired(self, now: float) -> bool:
        """Close the connection if its deadline passed (called by the server's sweep)."""
        if now < self.deadline or self.transport is None:
            return False
        if self.closing:  # closed, yet its answer is still unsent to a client that does not read
            self.transport.abort()
            return True
        if self.busy:
            return False
        if self.reader.buffer:
            self._fail(408, "request head not received in time")
        else:
            self.close()
        return True

    def close(self) -> None:
        """Close the connection now (after its pending answer, given ``header_timeout`` to go out)."""
        if not self.closing and self.transport is not None:
            self.closing = True
            # transport.close() waits for the write buffer to drain, for ever if the client never
            # reads: the sweep aborts the connection once this deadline passes.
            self.deadline = time.monotonic() + self.server.header_timeout
            self.transport.close()
            self.server._released(self)

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _fail(self, status: int, message: str) -> None:
        self._write(Response(status, (message + "\n").encode()), keep_alive=False)
        self.close()

    def _process(self) -> None:
        for _ in range(PIPELINE_BATCH):
            if self.closing or self.busy or self.write_paused:
                return
            try:
                request = self.reader.next()
            except HttpError as exc:
                self._fail(exc.status, str(exc))
                return
            if isinstance(request, Waiting):
                self._await_more(request)
                return
            self.continued = False
            self._dispatch(request)
        # More pipelined requests are waiting: let other connections have the loop first.
        asyncio.get_running_loop().call_soon(self._process)

    def _await_more(self, waiting: Waiting) -> None:
        """The buffer holds no complete request: make sure its missing bytes can arrive."""
        assert self.transport is not None
        if self.eof:  # what is missing will never come
            self.close()
            return
        if waiting.head is not None and waiting.head.expect_continue and not self.continued:
            self.continued = True
            self.transport.write(CONTINUE)
        if self.read_paused:  # paused while full of pipelined requests; the rest of this one is needed now
            self.read_paused = False
            self.transport.resume_reading()

    def _dispatch(self, request: Request) -> None:
        keep_alive = request.keep_alive
        try:
            result = self.server.handler(request)
        except Exception as exc:  # a handler bug must not kill the server
            self.server.on_error(exc)
            result = Response(500, b"internal error\n")
        if isinstance(result, Response):
            self._finish(result, keep_alive, request.method)
            return
        self.busy = True
        task = asyncio.ensure_future(result)
        self.server._tasks.add(task)
        task.add_done_callback(lambda t: self._async_done(t, keep_alive, request.method))

    def _async_done(self, task: asyncio.Future[Response], keep_alive: bool, method: str) -> None:
        self.server._tasks.discard(task)
        self.busy = False
        if task.cancelled():
            self.close()
            return
        exc = task.exception()
        if exc is not None:
            self.server.on_error(exc)
            response = Response(500, b"internal error\n")
        else:
            response = task.result()
        self._finish(response, keep_alive, method)
        self._process()

    def _finish(self, response: Response, keep_alive: bool, method: str) -> None:
        self._write(response, keep_alive, head_only=method == "HEAD")
        if not keep_alive:
            self.close()
            return
        self.waiting_since = time.monotonic()
        timeout = self.server.header_timeout if self.reader.buffer else self.server.idle_timeout
        self.deadline = self.waiting_since + timeout

    def _write(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = REASONS.get(response.status, "Unknown")
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
        ]
        lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(head if head_only else head + response.body)


class HttpServer:
    """Serves ``handler`` on one TCP port with the limits described in the module docstring."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = 64,
        header_timeout: float = 5.0,
        idle_timeout: float = 30.0,
        on_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.on_error = on_error
        self._conns: set[_Connection] = set()  # open, counted against max_connections
        # Closed, their last answer still going out; oldest first. Out of _conns at once: a flood's
        # evicted connections neither take the places of newcomers nor lengthen the victim search.
        self._draining: dict[_Connection, None] = {}
        self._tasks: set[asyncio.Future[Response]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.evictions = 0
        self.port = 0  # the bound port, once started

    @property
    def connections(self) -> int:
        """Open connections right now."""
        return len(self._conns)

    def _opened(self, conn: _Connection) -> None:
        if len(self._conns) >= self.max_connections:
            victim = self._victim()
            if victim is None:  # every connection is being answered: the newcomer waits its turn elsewhere
                conn.close()
                return
            victim.close()
            self.evictions += 1
        self._conns.add(conn)

    def _victim(self) -> _Connection | None:
        """The connection to drop for a newcomer: idle or slow, from the peer holding the most."""
        candidates = [c for c in self._conns if not c.busy]
        if not candidates:
            return None
        per_host = Counter(c.host for c in candidates)
        return min(candidates, key=lambda c: (-per_host[c.host], c.waiting_since))

    def _sweep(self) -> None:
        """Close every connection whose deadline passed; runs every SWEEP seconds while serving."""
        now = time.monotonic()
        for conn in [*self._conns, *self._draining]:
            conn.expired(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)

    def _released(self, conn: _Connection) -> None:
        """``conn`` is closing: it no longer counts; past max_connections draining, the oldest is aborted."""
        self._conns.discard(conn)
        self._draining[conn] = None
        while len(self._draining) > self.max_connections:
            oldest = next(iter(self._draining))
            del self._draining[oldest]
            if oldest.transport is not None:
                oldest.transport.abort()

    def _closed(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        self._draining.pop(conn, None)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (``port`` 0 picks one); return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=256,
                                                reuse_address=True)
        self._sweeper = loop.call_later(SWEEP, self._sweep)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
