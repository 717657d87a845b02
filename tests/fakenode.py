"""A stand-in EdgeLake node for tests and benches, built on the measured facts (docs/checks.md).

Blocking sockets and threads, like the node itself:

- REST: a pool of 5 worker threads reading requests with no timeout. ``User-Agent: AnyLog/...``
  is required (else a command is a ping: 200, chunked, no body); every answer says
  ``Connection: close``; an unknown command gets 400 with a JSON reason phrase and a body that
  claims chunked encoding without chunk framing; ``HEAD`` gets 501; a wrong method 400 JSON.
- TCP: listen backlog 5, 6 workers reading a 2,048-byte frame with no timeout; a connection closed
  before any data adds ``Peer closed (...) before data`` to a 100-entry event log, a short frame an
  error line; ``log_lines`` counts every line ever added.
- Broker: CONNACK ``20 02 00 00`` only when a CONNECT arrives in a segment of its own; CONNECT with
  DISCONNECT in one segment and a lone PINGREQ get no answer.

Each server counts the connections open at once (from accept until either side closes), so tests
can assert the sidecar never holds more than one REST connection. ``mode`` switches behaviour live:
REST ``ok | hang | garbage | odd-digits | bad-status | not-running | reset``; broker ``ok | hang | garbage | refuse``.
``close()`` stops listening (connects are refused), ``open()`` listens again on the same port,
``stall()`` stops accepting (the backlog fills, then connects hang).

Run alone for a bench: ``python tests/fakenode.py --rest-port P --tcp-port P --broker-port P``.
"""

from __future__ import annotations

import argparse
import collections
import json
import queue
import select
import signal
import socket
import struct
import threading
import time
from typing import Any

REST_WORKERS = 5
TCP_WORKERS = 6
BACKLOG = 5
FRAME = 2048
EVENT_LOG_SIZE = 100


class _Server:
    """A listening socket, an accept thread and a fixed pool of blocking workers."""

    workers = 1
    name = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.mode = "ok"
        self.lock = threading.Lock()
        self.open_now = 0
        self.max_open = 0
        self.accepted = 0
        self.release = threading.Event()  # frees workers held by a hanging mode
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._queue: queue.Queue[socket.socket | None] = queue.Queue()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> _Server:
        """Listen and start the workers."""
        for _ in range(self.workers):
            self._spawn(self._worker)
        self._spawn(self._accept_loop)
        self.open()
        return self

    def open(self) -> None:
        """Listen (again) on the same port."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(BACKLOG)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accepting.set()

    def close(self) -> None:
        """Stop listening: new connects are refused."""
        self._accepting.clear()
        sock, self._listener = self._listener, None
        if sock is not None:
            # shutdown() first: it stops the listen at once even while the accept thread is in
            # select() on it, where a bare close() leaves the port listening for a moment.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stall(self) -> None:
        """Keep listening but stop accepting: the backlog fills, then connects hang."""
        self._accepting.clear()

    def resume(self) -> None:
        """Accept again after :meth:`stall`."""
        self._accepting.set()

    def stop(self) -> None:
        """Stop everything (end of test)."""
        self._stopped.set()
        self.release.set()
        self.close()
        with self.lock:
            for conn in self._conns:  # wake workers blocked in recv() on a silent client
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for _ in range(self.workers):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    # -- internals --------------------------------------------------------------------------------
    def _spawn(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True, name=f"fake-{self.name}")
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None or not self._accepting.is_set():
                time.sleep(0.01)
                continue
            try:  # a short poll, only so that close() and stop() are noticed; accepted sockets block
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready or not self._accepting.is_set():
                    continue
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.setblocking(True)
            with self.lock:
                self.accepted += 1
                self.open_now += 1
                self._conns.add(conn)
                # Held by clients right now: a connection its client already closed (a worker pinned by
                # a hanging mode notices a moment later) does not count against the client.
                self.max_open = max(self.max_open, sum(1 for c in self._conns if not _peer_gone(c)))
            self._queue.put(conn)

    def _worker(self) -> None:
        while True:
            conn = self._queue.get()
            if conn is None:
                return
            try:
                self.serve(conn)
            except OSError:
                pass
            finally:
                # Counted closed before close(): a client that waits for our close to send its next
                # request must never be seen holding two connections.
                with self.lock:
                    self.open_now -= 1
                    self._conns.discard(conn)
                conn.close()

    def hold(self, conn: socket.socket) -> None:
        """Pin this worker until the peer hangs up or the test releases it (the node has no timeouts)."""
        while not self.release.is_set():
            ready, _, _ = select.select([conn], [], [], 0.05)
            if ready and not conn.recv(4096):
                return

    def misbehave(self, conn: socket.socket, garbage: bytes) -> bool:
        """The modes every server shares, once the request is read; True when they answered it."""
        if self.mode == "hang":
            self.hold(conn)
            return True
        if self.mode == "garbage":
            conn.sendall(garbage)
            return True
        return False

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _peer_gone(conn: socket.socket) -> bool:
    """True when the client has closed its end (EOF waiting to be read)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _read_head(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)  # no timeout: like the node, a silent client pins this worker
        if not chunk:
            return None
        data += chunk
    return data


class RestServer(_Server):
    """The node's REST server."""

    workers = REST_WORKERS
    name = "rest"

    def __init__(self, node_name: str, tcp_address: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.node_name = node_name
        self.tcp_address = tcp_address
        self.commands: collections.Counter[str] = collections.Counter()
        self.pings = 0  # command headers sent without the AnyLog user agent

    def serve(self, conn: socket.socket) -> None:
        head = _read_head(conn)
        if head is None:
            return
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method = lines[0].split(" ")[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if self.misbehave(conn, b"\x00\xffthis is not HTTP\r\n\r\n"):
            return
        mode = self.mode
        if mode == "odd-digits":  # digits to str.isdigit(), not to int()
            conn.sendall(b"HTTP/1.1 \xb2\xb2\xb2 OK\r\nContent-Length: \xb2\r\n\r\nrunning")
            return
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if method == "HEAD":
            conn.sendall(b"HTTP/1.1 501 Unsupported method ('HEAD')\r\nConnection: close\r\n\r\n")
            return
        if method not in ("GET", "POST"):
            self._send(conn, 400, "Bad Request", json.dumps({"err_code": 156, "err_text": "Wrong method"}))
            return
        command = headers.get("command", "")
        if not headers.get("user-agent", "").startswith("AnyLog/"):
            self.pings += 1  # the node treats it as a ping: chunked, and no body at all
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            return
        self.commands[command] += 1
        if mode == "bad-status":
            self._send(conn, 500, "Internal Server Error", "Internal error")
        elif command == "get status":
            state = "not running" if mode == "not-running" else "running"
            self._send(conn, 200, "OK", f"{self.node_name}@{self.tcp_address} {state}")
        elif command == "get status where format = json":
            self._send(conn, 200, "OK", json.dumps({"assigned_name": self.node_name, "status": "running",
                                                    "profiling": False}))
        elif command in ("get version", "get processes", "get connections") or command.startswith("process "):
            self._send(conn, 200, "OK", f"{command}: fake answer")
        else:
            reason = json.dumps({"err_code": 6, "err_text": f"Unknown command: {command}"})
            conn.sendall(f"HTTP/1.1 400 {reason}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         f"{reason}".encode())

    @staticmethod
    def _send(conn: socket.socket, status: int, phrase: str, body: str) -> None:
        data = body.encode()
        conn.sendall(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)


class TcpServer(_Server):
    """The node's TCP server: 2,048-byte frames, and an event log that empty connections fill."""

    workers = TCP_WORKERS
    name = "tcp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.event_log: collections.deque[str] = collections.deque(maxlen=EVENT_LOG_SIZE)
        self.log_lines = 0

    def _log(self, line: str) -> None:
        with self.lock:
            self.event_log.append(line)
            self.log_lines += 1

    def serve(self, conn: socket.socket) -> None:
        host, port = conn.getpeername()[:2]
        peer = f"{host}:{port}"
        data = b""
        while len(data) < FRAME:
            chunk = conn.recv(FRAME - len(data))  # no timeout, like the node
            if not chunk:
                break
            data += chunk
        if not data:
            self._log(f"Info: Peer closed ({peer}) before data")
        elif len(data) < FRAME:
            self._log(f"Error: Incomplete message from {peer}: {len(data)} bytes")


class BrokerServer(_Server):
    """The node's hand-written MQTT broker: one thread per connection."""

    workers = 16
    name = "broker"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.connacks = 0
        self.disconnects = 0

    def serve(self, conn: socket.socket) -> None:
        segment = conn.recv(4096)
        if not segment:
            return
        if self.misbehave(conn, b"HTTP/1.1 400 Bad Request\r\n\r\n"):
            return
        mode = self.mode
        packets = _split_packets(segment)
        if len(packets) == 1 and packets[0][0] >> 4 == 1:  # a CONNECT that came alone
            conn.sendall(b"\x20\x02\x00\x05" if mode == "refuse" else b"\x20\x02\x00\x00")
            with self.lock:
                self.connacks += 1
        elif not any(p[0] >> 4 == 14 for p in packets):  # a lone PINGREQ, or anything else: no answer
            self.hold(conn)
            return
        while not any(p[0] >> 4 == 14 for p in packets):  # read until DISCONNECT or the peer closes
            segment = conn.recv(4096)
            if not segment:
                return
            packets = _split_packets(segment)
        with self.lock:
            self.disconnects += 1


def _split_packets(data: bytes) -> list[bytes]:
    """MQTT control packets in ``data`` (a trailing partial packet counts as one)."""
    packets = []
    i = 0
    while i < len(data):
        start, length, shift = i, 0, 0
        i += 1
        while i < len(data):
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        i += length
        packets.append(data[start:i])
    return packets


class FakeNode:
    """The three servers of one node."""

    def __init__(self, name: str = "el-fake", host: str = "127.0.0.1", tcp_port: int = 0, rest_port: int = 0,
                 broker_port: int = 0) -> None:
        self.tcp = TcpServer(host, tcp_port)
        self.tcp.start()
        self.rest = RestServer(name, f"{host}:{self.tcp.port}", host, rest_port)
        self.broker = BrokerServer(host, broker_port)
        self.rest.start()
        self.broker.start()

    def stop(self) -> None:
        """Stop every server."""
        for server in (self.rest, self.tcp, self.broker):
            server.stop()

    def __enter__(self) -> FakeNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Serve until SIGTERM/SIGINT; print the counters as JSON on exit."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("tcp", "rest", "broker"):
        parser.add_argument(f"--{name}-port", type=int, default=0)
    parser.add_argument("--name", default="el-fake")
    args = parser.parse_args()
    node = FakeNode(args.name, tcp_port=args.tcp_port, rest_port=args.rest_port, broker_port=args.broker_port)
    print(json.dumps({"tcp": node.tcp.port, "rest": node.rest.port, "broker": node.broker.port}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    start = time.monotonic()
    done.wait()
    elapsed = time.monotonic() - start
    node.stop()
    print(json.dumps({
        "seconds": round(elapsed, 1),
        "connections": {"tcp": node.tcp.accepted, "rest": node.rest.accepted, "broker": node.broker.accepted},
        "max_open": {"tcp": node.tcp.max_open, "rest": node.rest.max_open, "broker": node.broker.max_open},
        "tcp_event_log_lines": node.tcp.log_lines,
        "rest_commands": dict(node.rest.commands),
    }), flush=True)


if __name__ == "__main__":
    main()
