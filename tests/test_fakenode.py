"""The stand-in node answers and logs like the real node, or the tests built on it would prove nothing."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

from sidecar.noderest import NodeRest
from tests.fakenode import ERROR_LOG_SIZE, EVENT_LOG_SIZE, FakeNode, NodeLog
from tests.published import eventually


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


async def test_quirks_of_the_rest_server(node: FakeNode) -> None:
    port = node.rest.port
    plain = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\ncommand: get status\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 200") and b"chunked" in plain and plain.endswith(b"\r\n\r\n")
    assert b"Connection: close" in _raw(port, b"GET / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\n"
                                              b"command: get status\r\n\r\n")
    unknown = await NodeRest("127.0.0.1", port).command("no such thing", timeout=3)
    assert unknown.status == 400 and unknown.reason_phrase.startswith("{") and b"chunked" not in unknown.body


async def test_what_each_request_leaves_in_the_logs(node: FakeNode) -> None:
    port = node.rest.port
    health = _raw(port, b"GET /health HTTP/1.1\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200") and json.loads(health.split(b"\r\n\r\n", 1)[1])["status"] == "healthy"
    assert (node.log.event_added, node.log.error_added) == (0, 0)
    # With the AnyLog user agent the path means nothing: a ping, answered empty.
    ping = _raw(port, b"GET /health HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\n\r\n")
    assert ping.startswith(b"HTTP/1.1 200") and b"healthy" not in ping and node.rest.health_checks == 1

    assert (await NodeRest("127.0.0.1", port).command("get status", timeout=3)).status == 200
    assert list(node.log.events) == ["(ok) get status"] and node.log.error_added == 0

    head = _raw(port, b"HEAD / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501")
    assert (node.log.event_added, node.log.error_added) == (2, 1)

    wrong = _raw(port, b"GET / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\ncommand: process /x.al\r\n\r\n")
    assert wrong.startswith(b"HTTP/1.1 400") and json.loads(wrong.split(b"\r\n\r\n", 1)[1])["err_code"] == 156
    assert node.log.error_lines()[-1] == "Wrong HTTP method (GET) used with AnyLog command: 'process'"
    assert node.rest.processed == []

    with socket.create_connection(("127.0.0.1", node.tcp.port)):
        pass  # connect and close: one Info line
    await eventually(lambda: node.log.event_added == 3)
    assert node.log.events[-1].startswith("Info: Peer closed (127.0.0.1:")
    with socket.create_connection(("127.0.0.1", node.tcp.port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset: an error too
    await eventually(lambda: node.log.error_added == 3)
    assert node.log.event_added == 4


async def test_process_needs_an_absolute_path_and_sets_variables(node: FakeNode, tmp_path: Path) -> None:
    client = NodeRest("127.0.0.1", node.rest.port)
    script = tmp_path / "local_script.al"
    script.write_text("# a comment = no\nnode_label = edge one\nif !x then process !y\ncount = 3\n")
    relative = await client.command("process local_script.al", timeout=3)
    assert relative.status == 400 and relative.error() is not None
    missing = await client.command(f"process {tmp_path}/missing.al", timeout=3)
    assert missing.status == 400
    assert node.log.error_added == 2 and node.rest.variables == {}

    done = await client.command(f"process {script}", timeout=3)
    assert done.status == 200 and done.error() is None
    assert node.rest.variables == {"node_label": "edge one", "count": "3"}
    assert (await client.command("get !node_label", timeout=3)).text == "edge one"
    assert (await client.command("get !unset", timeout=3)).text == ""
    events = (await client.command("get event log", timeout=3)).text.splitlines()
    assert events[-3:] == [f"(ok) process {script}", "(ok) get !node_label", "(ok) get !unset"]
    assert "Failed to read script: local_script.al" in (await client.command("get error log", timeout=3)).text


def test_log_rings() -> None:
    log = NodeLog()
    for i in range(EVENT_LOG_SIZE + 5):
        log.event(f"e{i}")
    assert len(log.events) == EVENT_LOG_SIZE and log.events[0] == "e5" and log.event_added == EVENT_LOG_SIZE + 5
    log.error("same")
    log.error("same")  # twice in a row: one entry, its count bumped
    log.error("other")
    assert log.error_lines() == ["same (x2)", "other"] and log.error_added == 3
    for i in range(ERROR_LOG_SIZE + 1):
        log.error(f"r{i}")
    assert len(log.error_lines()) == ERROR_LOG_SIZE and log.error_lines()[0] == "r1"
