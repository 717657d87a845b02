"""Each probe against the stand-in node (every quirk) and the broker probe against real mosquitto."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sidecar import noderest
from sidecar.checks import broker, rest, tcp
from tests.fakenode import FakeNode
from tests.published import eventually


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with FakeNode("el-test") as fake:
        yield fake


async def test_tcp_ok_and_logs_one_peer_closed_line(node: FakeNode) -> None:
    outcome = await tcp.probe("127.0.0.1", node.tcp.port, 3)
    assert outcome.ok and outcome.reason == "ok"
    await eventually(lambda: node.tcp.log_lines == 1)
    assert node.tcp.event_log[-1].startswith("Info: Peer closed (127.0.0.1:")
    assert node.tcp.open_now == 0


async def test_tcp_refused(node: FakeNode) -> None:
    node.tcp.close()
    with pytest.raises(ConnectionRefusedError):
        await tcp.probe("127.0.0.1", node.tcp.port, 3)


async def test_tcp_timeout_when_backlog_full(node: FakeNode) -> None:
    node.tcp.stall()
    fillers = []
    try:
        for _ in range(12):  # more than the backlog of 5: the kernel starts dropping SYNs
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", node.tcp.port))
            fillers.append(s)
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):
            await tcp.probe("127.0.0.1", node.tcp.port, 0.5)
    finally:
        for s in fillers:
            s.close()


async def test_rest_ok_keeps_node_name(node: FakeNode) -> None:
    outcome = await rest.probe("127.0.0.1", node.rest.port, 3)
    assert outcome.ok
    assert outcome.node_name == f"el-test@127.0.0.1:{node.tcp.port}"
    assert node.rest.commands["get status"] == 1 and node.rest.pings == 0


@pytest.mark.parametrize(("mode", "reason"), [("bad-status", "bad-status"), ("not-running", "bad-body"),
                                              ("garbage", "bad-response"), ("odd-digits", "bad-response"),
                                              ("reset", "reset")])
async def test_rest_bad_answers(node: FakeNode, mode: str, reason: str) -> None:
    node.rest.mode = mode
    try:
        outcome = await rest.probe("127.0.0.1", node.rest.port, 3)
    except noderest.NodeRestError as exc:
        assert exc.reason == reason
    else:
        assert not outcome.ok and outcome.reason == reason


async def test_rest_hang_times_out_and_frees_the_worker(node: FakeNode) -> None:
    node.rest.mode = "hang"
    with pytest.raises(noderest.NodeRestError) as info:
        await rest.probe("127.0.0.1", node.rest.port, 0.3)
    assert info.value.reason == "timeout"
    await eventually(lambda: node.rest.open_now == 0)  # we hung up: the node's worker is free again


async def test_node_quirks_reproduced(node: FakeNode) -> None:
    """The stand-in answers like the real node, or the tests above would prove nothing."""
    port = node.rest.port
    plain = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\ncommand: get status\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 200") and b"chunked" in plain and plain.endswith(b"\r\n\r\n")
    assert b"501" in _raw(port, b"HEAD / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\n\r\n").split(b"\r\n")[0]
    unknown = await noderest.command("127.0.0.1", port, "no such thing", timeout=3)
    assert unknown.status == 400 and unknown.reason_phrase.startswith("{") and b"chunked" not in unknown.body
    assert b"Connection: close" in _raw(port, b"GET / HTTP/1.1\r\nUser-Agent: AnyLog/1.23\r\n"
                                              b"command: get status\r\n\r\n")


async def test_broker_ok_then_disconnect(node: FakeNode) -> None:
    outcome = await broker.probe("127.0.0.1", node.broker.port, 3)
    assert outcome.ok
    await eventually(lambda: node.broker.disconnects == 1 and node.broker.open_now == 0)
    assert node.broker.connacks == 1


def test_broker_answers_only_a_lone_connect(node: FakeNode) -> None:
    """CONNECT+DISCONNECT in one segment and a lone PINGREQ get nothing: why the probe sends CONNECT alone."""
    for segment in (broker.CONNECT + broker.DISCONNECT, b"\xc0\x00"):
        with socket.create_connection(("127.0.0.1", node.broker.port), timeout=0.5) as s:
            s.sendall(segment)
            try:
                answer = s.recv(4)  # closed without a word, or silent
            except TimeoutError:
                answer = b""
            assert answer == b""
    assert node.broker.connacks == 0


@pytest.mark.parametrize(("mode", "exc", "reason"), [("hang", TimeoutError, None), ("garbage", None, "bad-answer"),
                                                     ("refuse", None, "bad-answer")])
async def test_broker_bad(node: FakeNode, mode: str, exc: type[BaseException] | None, reason: str | None) -> None:
    node.broker.mode = mode
    if exc is not None:
        with pytest.raises(exc):
            await broker.probe("127.0.0.1", node.broker.port, 0.3)
    else:
        outcome = await broker.probe("127.0.0.1", node.broker.port, 3)
        assert not outcome.ok and outcome.reason == reason


async def test_broker_against_mosquitto(mosquitto: int) -> None:
    outcome = await broker.probe("127.0.0.1", mosquitto, 3)
    assert outcome.ok, outcome
    outcome = await broker.probe("127.0.0.1", mosquitto, 3)  # again: the first session was ended cleanly
    assert outcome.ok, outcome


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out
