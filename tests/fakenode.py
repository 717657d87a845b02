"""A stand-in EdgeLake node for tests and benches, built on what the real node was measured to do.

Blocking sockets and threads, like the node itself. The three servers share the node's two logs
(``node.log``): an event log (a ring of 100 entries) and an error log (a ring of 20, where the same
text twice in a row only bumps the entry's count). ``event_added`` and ``error_added`` count every
line ever added, so a test or bench can measure what a client costs the node.

- REST: a pool of 5 worker threads reading requests with no timeout. ``GET /health`` answers
  ``{"status": "healthy", ...}`` and logs nothing. A command needs ``User-Agent: AnyLog/...`` (else
  it is a ping: 200, chunked, no body) and the method of the node's method table (else 400,
  ``err_code`` 156, and an error-log line). Every command that succeeds adds ``(ok) <command>`` to
  the event log. ``process <absolute path>`` reads the file and sets the variables it assigns
  (``name = value`` lines), readable with ``get !name``; a relative path or a missing file is
  refused with 400. ``get event log`` and ``get error log`` answer the logs. Every answer says
  ``Connection: close``; an unknown command gets 400 with a JSON reason phrase and a body that
  claims chunked encoding without chunk framing; ``HEAD`` gets 501.
- TCP: listen backlog 5, 6 workers reading a 2,048-byte frame with no timeout; a connection closed
  before any data adds ``Peer closed (...) before data`` to the event log, a reset adds an error
  line too, a short frame an error line.
- Broker: CONNACK ``20 02 00 00`` only when a CONNECT arrives in a segment of its own; CONNECT with
  DISCONNECT in one segment and a lone PINGREQ get no answer; a reset adds an event and an error line.

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
import os
import queue
import select
import signal
import socket
import struct
import threading
import time
from typing import Any

try:  # imported as tests.fakenode (benches, some tests) or as fakenode (tests/ on the path, or run as a script)
    from tests.fakepolicy import PolicyBook, install
except ImportError:
    from fakepolicy import PolicyBook, install  # type: ignore[no-redef]

REST_WORKERS = 5
TCP_WORKERS = 6
BACKLOG = 5
FRAME = 2048
EVENT_LOG_SIZE = 100
ERROR_LOG_SIZE = 20
WRONG_METHOD = 156
KNOWN_PRODUCTS = ("anylog", "grafana", "curl")

# The node's method table: the first words of a command and the method(s) it takes; a command whose
# words are not here takes POST (written from the node's own table, independently of the sidecar's).
NODE_METHODS = {
    "sql": "get*post", "print": "get*post", "wait": "get*post", "subprocess": "get*post",
    "help": "get", "get": "get", "test": "get", "blockchain get": "get", "blockchain read": "get",
    "blockchain drop": "post", "query status": "get", "query explain": "get", "query destination": "get",
    "analyze output": "get", "time file get": "get", "time file summary": "get", "job status": "get",
    "job active": "get", "job run": "post", "job stop": "post", "file get": "get", "file retrieve": "get",
    "file to": "get", "file from": "get",
}


def method_accepted(method: str, command: str) -> tuple[bool, str]:
    """``(accepted, key)`` as the node decides it: two and three words are looked up before one."""
    words = command.split()
    method = method.lower()
    if len(words) == 1:
        key = words[0]
        return NODE_METHODS.get(key) == method, key
    if not words:
        return False, "Command not provided"
    key = f"{words[0]} {words[1]}".lower()
    if key in NODE_METHODS:
        if NODE_METHODS[key] == method:
            return True, key
    elif len(words) >= 3 and f"{key} {words[2].lower()}" in NODE_METHODS:
        key = f"{key} {words[2].lower()}"
        if NODE_METHODS[key] == method:
            return True, key
    key = words[0].lower()
    if key in NODE_METHODS:
        return method in NODE_METHODS[key].split("*"), key
    return method == "post", key


class NodeLog:
    """The node's event log and error log, shared by its servers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: collections.deque[str] = collections.deque(maxlen=EVENT_LOG_SIZE)
        self.errors: collections.deque[list[Any]] = collections.deque(maxlen=ERROR_LOG_SIZE)  # [text, count]
        self.event_added = 0
        self.error_added = 0

    def event(self, line: str) -> None:
        """Add one event-log line."""
        with self.lock:
            self.events.append(line)
            self.event_added += 1

    def error(self, line: str) -> None:
        """Add one error-log line (the same text as the last entry only bumps its count)."""
        with self.lock:
            self.error_added += 1
            if self.errors and self.errors[-1][0] == line:
                self.errors[-1][1] += 1
            else:
                self.errors.append([line, 1])

    def error_lines(self) -> list[str]:
        """The error log as text lines."""
        with self.lock:
            return [text if count == 1 else f"{text} (x{count})" for text, count in self.errors]


class _Server:
    """A listening socket, an accept thread and a fixed pool of blocking workers."""

    workers = 1
    name = "server"

    def __init__(self, log: NodeLog, host: str = "127.0.0.1", port: int = 0) -> None:
        self.log = log
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
        self._resets: set[socket.socket] = set()
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
                self.max_open = max(self.max_open, sum(1 for c in self._conns if not self._peer_gone(c)))
            self._queue.put(conn)

    def _peer_gone(self, conn: socket.socket) -> bool:
        """True when the client has closed its end (EOF waiting to be read)."""
        try:
            return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            self._resets.add(conn)  # the peek consumed the error: the worker must still see the reset
            return True
        except OSError:
            return True

    def recv(self, conn: socket.socket, size: int) -> bytes:
        """``conn.recv``, raising ConnectionResetError for a reset the accept loop's peek already consumed."""
        with self.lock:
            if conn in self._resets:
                self._resets.discard(conn)
                raise ConnectionResetError("connection reset by peer")
        return conn.recv(size)

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
                    self._resets.discard(conn)
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




def _peer(conn: socket.socket) -> str:
    """``host:port`` of the client (a client that already reset the connection has none)."""
    try:
        return "{}:{}".format(*conn.getpeername()[:2])
    except OSError:
        return "unknown peer"


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

    def __init__(self, log: NodeLog, node_name: str, tcp_address: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(log, host, port)
        self.node_name = node_name
        self.tcp_address = tcp_address
        self.commands: collections.Counter[str] = collections.Counter()  # every command received
        self.processed: list[str] = []  # files ``process`` read, in order
        self.variables: dict[str, str] = {}
        self.pings = 0  # command headers sent without the AnyLog user agent
        self.health_checks = 0

    def serve(self, conn: socket.socket) -> None:
        head = _read_head(conn)
        if head is None:
            return
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.split(" ")[0]
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
            self.log.event("Server received a non-supported REST request (HEAD)")
            self.log.error("Server received a non-supported REST request (HEAD)")
            return
        if method not in ("GET", "POST"):
            self._send(conn, 400, "Bad Request", json.dumps({"err_code": 156, "err_text": "Wrong method"}))
            return
        if mode == "bad-status":
            self._send(conn, 500, "Internal Server Error", "Internal error")
            return
        command = headers.get("command", "")
        agent = headers.get("user-agent", "")
        # The node answers a path only to a request that names no command and no product it knows
        # (curl counts as AnyLog, with a default command of get status).
        product = agent.partition("/")[0].strip().lower()
        if method == "GET" and path.startswith("/health") and not command and product not in KNOWN_PRODUCTS:
            with self.lock:
                self.health_checks += 1
            self._send(conn, 200, "OK", json.dumps({"status": "healthy", "service": "anylog-rest-server",
                                                    "timestamp": time.time()}), "application/json")
            return
        if not agent.startswith("AnyLog/") or not command:
            self.pings += "command" in headers  # the node treats it as a ping: chunked, and no body at all
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            return
        with self.lock:
            self.commands[command] += 1
        accepted, key = method_accepted(method, command)
        if not accepted:
            self.log.error(f"Wrong HTTP method ({method}) used with AnyLog command: '{key}'")
            self._send(conn, 400, "Bad Request", json.dumps({"method": method.lower(), "err_code": WRONG_METHOD,
                                                             "err_text": "Wrong HTTP method used"}))
            return
        answer = self.execute(command, mode)
        if answer is None:
            reason = json.dumps({"err_code": 6, "err_text": f"Unknown command: {command}"})
            self.log.error(f"Unknown command: {command}")
            conn.sendall(f"HTTP/1.1 400 {reason}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         f"{reason}".encode())
            return
        status, body = answer
        self._send(conn, status, "OK" if status == 200 else "Bad Request", body)
        if status == 200:
            self.log.event(f"(ok) {command}")

    def execute(self, command: str, mode: str) -> tuple[int, str] | None:
        """Run an accepted command: ``(status, body)``, or None when the node does not know it."""
        if command == "get status":
            state = "not running" if mode == "not-running" else "running"
            return 200, f"{self.node_name}@{self.tcp_address} {state}"
        if command == "get status where format = json":
            return 200, json.dumps({"assigned_name": self.node_name, "status": "running", "profiling": False})
        if command in ("get version", "get processes", "get connections"):
            return 200, f"{command}: fake answer"
        if command == "get event log":
            with self.log.lock:
                return 200, "\n".join(self.log.events)
        if command == "get error log":
            return 200, "\n".join(self.log.error_lines())
        if command.startswith("get !"):
            with self.lock:
                return 200, self.variables.get(command[5:].strip(), "")
        if command.startswith("process "):
            return self.process(command[8:].strip())
        return None

    def process(self, path: str) -> tuple[int, str]:
        """``process <file>``: an absolute path the node can open; sets the variables the file assigns."""
        failed = json.dumps({"err_code": 26, "err_text": "Failed to read script",
                             "local_msg": f"Missing script file: {path}"})
        if not os.path.isabs(path):
            self.log.error(f"Failed to read script: {path}")
            return 400, failed
        try:
            with open(path, encoding="utf-8", errors="replace") as script:
                text = script.read()
        except OSError:
            self.log.error(f"Failed to read script: {path}")
            return 400, failed
        assigned = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip().isidentifier() and not line.lstrip().startswith("#"):
                assigned[name.strip()] = value.strip()
        with self.lock:
            self.variables.update(assigned)
            self.processed.append(path)
        return 200, ""

    @staticmethod
    def _send(conn: socket.socket, status: int, phrase: str, body: str, kind: str = "text/plain") -> None:
        data = body.encode()
        conn.sendall(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)


class TcpServer(_Server):
    """The node's TCP server: 2,048-byte frames; empty connections and short frames leave log lines."""

    workers = TCP_WORKERS
    name = "tcp"

    def serve(self, conn: socket.socket) -> None:
        peer = _peer(conn)
        data = b""
        try:
            while len(data) < FRAME:
                chunk = self.recv(conn, FRAME - len(data))  # no timeout, like the node
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            self.log.event(f"Info: Peer closed ({peer}) before data")
            self.log.error(f"Socket error with peer {peer}: connection reset")
            return
        if not data:
            self.log.event(f"Info: Peer closed ({peer}) before data")
        elif len(data) < FRAME:
            self.log.error(f"Incomplete message from {peer}: {len(data)} bytes")


class BrokerServer(_Server):
    """The node's hand-written MQTT broker: one thread per connection."""

    workers = 16
    name = "broker"

    def __init__(self, log: NodeLog, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(log, host, port)
        self.connacks = 0
        self.disconnects = 0

    def serve(self, conn: socket.socket) -> None:
        peer = _peer(conn)
        try:
            self._serve(conn)
        except ConnectionResetError:
            self.log.event(f"MQTT client ({peer}) disconnected")
            self.log.error(f"MQTT socket error ({peer}): connection reset")

    def _serve(self, conn: socket.socket) -> None:
        segment = self.recv(conn, 4096)
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
    """The three servers of one node, sharing its logs."""

    def __init__(self, name: str = "el-fake", host: str = "127.0.0.1", tcp_port: int = 0, rest_port: int = 0,
                 broker_port: int = 0) -> None:
        self.log = NodeLog()
        self.tcp = TcpServer(self.log, host, tcp_port)
        self.tcp.start()
        self.rest = RestServer(self.log, name, f"{host}:{self.tcp.port}", host, rest_port)
        self.policies = PolicyBook()  # the network's metadata: blockchain get answers from it
        install(self.rest, self.policies)
        self.broker = BrokerServer(self.log, host, broker_port)
        self.rest.start()
        self.broker.start()

    def stop(self) -> None:
        """Stop every server."""
        for server in (self.rest, self.tcp, self.broker):
            server.stop()

    def counters(self) -> dict[str, Any]:
        """What the node has seen so far: connections, log lines, commands."""
        servers = {"tcp": self.tcp, "rest": self.rest, "broker": self.broker}
        return {
            "connections": {k: v.accepted for k, v in servers.items()},
            "max_open": {k: v.max_open for k, v in servers.items()},
            "event_log_lines": self.log.event_added,
            "error_log_lines": self.log.error_added,
            "event_log": list(self.log.events),
            "error_log": self.log.error_lines(),
            "rest_commands": dict(self.rest.commands),
            "rest_health_checks": self.rest.health_checks,
        }

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
    print(json.dumps({"seconds": round(elapsed, 1), **node.counters()}), flush=True)


if __name__ == "__main__":
    main()
