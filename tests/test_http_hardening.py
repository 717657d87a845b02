"""The endpoint port under abuse, with raw sockets against the real process: malformed requests,
oversized heads, slow-loris, floods and clients that never read. /livez and /readyz must keep answering."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Sidecar

FALLBACK = str(ROOT / "examples" / "deployment-scripts")
ATTACKER = "127.0.0.2"  # another loopback address: the eviction policy tells peers apart


@pytest.fixture
def sc(tmp_path: Path, sidecar_factory: Any) -> Sidecar:
    side: Sidecar = sidecar_factory(["--fallback-dir", FALLBACK, "--link", str(tmp_path / "vol" / "scripts"),
                                     "--http-header-timeout", "1", "--http-max-connections", "32"])
    side.wait_for(lambda: side.get("/readyz")[0] == 200, what="ready")
    return side


def connect(sc: Sidecar, source: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", sc.port))
    return s


def exchange(sc: Sidecar, raw: bytes) -> bytes:
    """Send ``raw`` and read until the server closes."""
    with connect(sc) as s:
        s.sendall(raw)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def probes_answer(sc: Sidecar) -> None:
    """/livez and /readyz answer 200 on fresh connections (the client timeout bounds the wait)."""
    for path in (b"/livez", b"/readyz"):
        answer = exchange(sc, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(answer) == 200, answer


H = b"Host: x\r\n"
MALFORMED = [  # the parser's full table is in test_http_parser.py; these go through the real process
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /livez HTTP/2.0\r\n" + H + b"\r\n", 505),
    (b"GET /livez HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET /livez HTTP/1.1\r\nX: a\nContent-Length: 25\r\n\r\nGET /status HTTP/1.1\r\n\r\n", 400),  # smuggling
    (b"GET /livez HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    (b"GET /livez HTTP/1.1\r\n" + H + b" folded: x\r\n\r\n", 400),
    (b"POST /sync HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    (b"POST /sync HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST /sync HTTP/1.1\r\n" + H + b"Content-Length: 100000\r\n\r\n", 413),
    (b"POST /sync HTTP/1.1\r\n" + H + b"Expect: 101-switch\r\nContent-Length: 1\r\n\r\nx", 417),
    (b"GET /livez HTTP/1.1\r\n" + H + b"".join(b"h%d: v\r\n" % i for i in range(80)) + b"\r\n", 431),
    (b"GET /livez HTTP/1.1\r\n" + H + b"X: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"get /livez HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 405),  # a token, but no such method
    (b"DELETE /livez HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 405),
    (b"GET /nope HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 404),
]


def test_malformed_requests_get_one_error_and_a_close(sc: Sidecar) -> None:
    for raw, status in MALFORMED:
        answer = exchange(sc, raw)
        assert answer.count(b"HTTP/1.1 ") == 1, answer  # one answer: the bytes after a refusal are never read
        assert status_of(answer) == status, answer
        if status not in (404, 405):
            assert b"Connection: close" in answer
    probes_answer(sc)


def test_oversized_head_without_end_is_cut_off(sc: Sidecar) -> None:
    with connect(sc) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nX: ")
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(64):
                s.sendall(b"a" * 1024)
        answer = read_all(s)
    assert status_of(answer) == 431


def test_slow_head_gets_408_also_after_a_keep_alive_request(sc: Sidecar) -> None:
    """The header timeout (1 s here) applies to every request on a connection, not the idle timeout (30 s)."""
    with connect(sc, timeout=10) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert status_of(first) == 200
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = read_all(s)
    assert status_of(answer) == 408


def test_slow_loris_does_not_lock_out_probes(sc: Sidecar) -> None:
    loris: list[socket.socket] = []
    try:
        for i in range(200):  # far more than --http-max-connections 32
            with contextlib.suppress(OSError):
                s = connect(sc, ATTACKER)
                s.sendall(b"GET /livez HTTP/1.1\r\nX-%d: " % i)
                loris.append(s)
            if i % 40 == 0:
                probes_answer(sc)
        for s in loris[-20:]:  # keep trickling
            with contextlib.suppress(OSError):
                s.sendall(b"a")
        probes_answer(sc)
    finally:
        for s in loris:
            s.close()
    status = sc.status()
    assert status["components"]["watchdog"]["alive"]


def test_a_flood_evicts_the_flooder_not_the_old_client(sc: Sidecar) -> None:
    """A keep-alive client from one address outlives a flood of connections from another."""
    with connect(sc) as keeper:
        keeper.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(keeper.recv(65536)) == 200
        flood = []
        try:
            for _ in range(150):
                with contextlib.suppress(OSError):
                    flood.append(connect(sc, ATTACKER))
            probes_answer(sc)
            keeper.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")  # still open: it was never evicted
            assert status_of(keeper.recv(65536)) == 200
        finally:
            for s in flood:
                s.close()


def test_a_client_that_never_reads_is_not_buffered_forever(sc: Sidecar) -> None:
    assert sc.proc is not None
    before = _rss_kb(sc.proc.pid)
    request = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n" * 64
    with connect(sc, timeout=0.2) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        with contextlib.suppress(OSError):  # the server stops reading us: sendall times out
            for _ in range(2000):
                s.sendall(request)
                sent += len(request)
        probes_answer(sc)
        grown = _rss_kb(sc.proc.pid) - before
    assert sent < 2000 * len(request), "the server kept reading a client that reads nothing"
    assert grown < 30_000, f"RSS grew {grown} kB"
    probes_answer(sc)


def test_clients_that_never_read_cannot_hold_the_port(sc: Sidecar) -> None:
    """Closing a connection whose answers the client never reads must not wait for ever to flush them."""
    request = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" * 256
    hogs = []
    try:
        for _ in range(40):  # more than --http-max-connections 32
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((ATTACKER, 0))
            s.settimeout(0.2)
            s.connect(("127.0.0.1", sc.port))
            with contextlib.suppress(OSError):
                for _ in range(50):
                    s.sendall(request)
            hogs.append(s)
        probes_answer(sc)
        # header timeout 1 s, then 1 s to flush, swept every 0.5 s: dropped within seconds; the
        # deadline is for a loaded machine
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_tcp_state(s) == TCP_ESTABLISHED for s in hogs):
            time.sleep(0.2)
        assert all(_tcp_state(s) != TCP_ESTABLISHED for s in hogs)
        probes_answer(sc)
    finally:
        for s in hogs:
            s.close()


TCP_ESTABLISHED = 1


def _tcp_state(s: socket.socket) -> int:
    """The kernel's TCP state of a socket, read without reading its data (TCP_INFO's first byte)."""
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def _many(sc: Sidecar, n: int) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(n):
            with contextlib.suppress(OSError):
                socks.append(connect(sc, ATTACKER))
        yield socks
    finally:
        for s in socks:
            s.close()


def test_connection_churn_keeps_probes_answering(sc: Sidecar) -> None:
    for _ in range(5):
        with _many(sc, 100):
            probes_answer(sc)
    probes_answer(sc)
