"""Each probe against the stand-in node (every quirk), and the broker probe against real mosquitto.

Every probe the checks run by default must leave the node's logs as they were.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from sidecar.checks import broker, tcp
from sidecar.checks.rest import RestProbe
from sidecar.noderest import NodeRest, NodeRestError
from tests.fakenode import FakeNode
from tests.published import eventually

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def logs_untouched(node: FakeNode) -> bool:
    return node.log.event_added == 0 and node.log.error_added == 0


async def test_tcp_listen_state_opens_no_connection(node: FakeNode) -> None:
    probe, how = await asyncio.to_thread(tcp.probe_for, "127.0.0.1", node.tcp.port)
    assert how == "listen-state"
    assert (await probe(3)).ok
    assert node.tcp.accepted == 0 and logs_untouched(node)
    node.tcp.close()
    outcome = await probe(3)
    assert (outcome.ok, outcome.reason) == (False, "not-listening")
    node.tcp.open()
    assert (await probe(3)).ok


async def test_tcp_listen_state_sees_a_full_accept_queue(node: FakeNode) -> None:
    probe = tcp.listen_probe([LOOPBACK], node.tcp.port)
    node.tcp.stall()
    fillers = []
    try:
        for _ in range(8):  # more than the backlog of 5 (the kernel admits one more)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", node.tcp.port))
            fillers.append(s)

        async def full() -> bool:
            return (await probe(3)).reason == "backlog-full"

        deadline = asyncio.get_running_loop().time() + 10
        while not await full():
            assert asyncio.get_running_loop().time() < deadline, "the queue never showed as full"
            await asyncio.sleep(0.05)
    finally:
        for s in fillers:
            s.close()
        node.tcp.resume()


async def test_tcp_listen_state_is_for_this_address_only(node: FakeNode) -> None:
    """A socket listening on 127.0.0.1 is not reachable at 127.0.0.2, nor at another port."""
    assert not (await tcp.listen_probe([ipaddress.ip_address("127.0.0.2")], node.tcp.port)(3)).ok
    assert not (await tcp.listen_probe([LOOPBACK], node.tcp.port + 1 if node.tcp.port < 65535 else 1)(3)).ok


def test_own_addresses() -> None:
    assert tcp.own_addresses("127.0.0.1") == [LOOPBACK]
    assert LOOPBACK in tcp.own_addresses("localhost")  # every address the name stands for
    assert tcp.own_addresses("192.0.2.1") == []  # TEST-NET-1: never assigned to this host
    assert tcp.own_addresses("no-such-host.invalid") == []


async def test_localhost_finds_a_listener_on_any_of_its_addresses(node: FakeNode) -> None:
    probe, how = await asyncio.to_thread(tcp.probe_for, "localhost", node.tcp.port)  # listens on 127.0.0.1
    assert how == "listen-state" and (await probe(3)).ok


async def test_tcp_connect_fallback_logs_one_peer_closed_line(node: FakeNode) -> None:
    """The probe used for a node elsewhere: it works, and it costs one event-log line."""
    outcome = await tcp.connect_probe("127.0.0.1", node.tcp.port)(3)
    assert outcome.ok and outcome.reason == "ok"
    await eventually(lambda: node.log.event_added == 1)
    assert node.log.events[-1].startswith("Info: Peer closed (127.0.0.1:")
    assert node.log.error_added == 0 and node.tcp.open_now == 0


async def test_tcp_connect_refused(node: FakeNode) -> None:
    node.tcp.close()
    with pytest.raises(ConnectionRefusedError):
        await tcp.connect_probe("127.0.0.1", node.tcp.port)(3)


async def test_tcp_connect_timeout_when_backlog_full(node: FakeNode) -> None:
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
            await tcp.connect_probe("127.0.0.1", node.tcp.port)(0.5)
    finally:
        for s in fillers:
            s.close()


async def test_rest_checks_health_and_asks_the_name_only_after_a_failure(node: FakeNode) -> None:
    client = NodeRest("127.0.0.1", node.rest.port)
    probe = RestProbe(client)
    first = await probe(3)
    assert first.ok and first.node_name == f"el-test@127.0.0.1:{node.tcp.port}"
    for _ in range(5):
        outcome = await probe(3)
        assert outcome.ok and outcome.node_name is None
    assert node.rest.health_checks == 6 and node.rest.commands == {"get status": 1}
    assert node.log.event_added == 1 and node.log.error_added == 0  # the one (ok) get status

    node.rest.close()
    with pytest.raises(NodeRestError):
        await probe(3)
    node.rest.open()
    assert (await probe(3)).node_name == f"el-test@127.0.0.1:{node.tcp.port}"  # learned again after recovery
    assert node.rest.commands == {"get status": 2} and node.log.error_added == 0


async def test_rest_does_not_insist_on_a_name_the_node_will_not_give(node: FakeNode) -> None:
    node.rest.mode = "not-running"  # /health fine, get status says "not running"
    probe = RestProbe(NodeRest("127.0.0.1", node.rest.port))
    for _ in range(3):
        outcome = await probe(3)
        assert outcome.ok and outcome.node_name is None
    assert node.rest.commands == {"get status": 1}


@pytest.mark.parametrize(("mode", "reason"), [("bad-status", "bad-status"), ("garbage", "bad-response"),
                                              ("odd-digits", "bad-response"), ("reset", "reset")])
async def test_rest_bad_answers(node: FakeNode, mode: str, reason: str) -> None:
    node.rest.mode = mode
    try:
        outcome = await RestProbe(NodeRest("127.0.0.1", node.rest.port))(3)
    except NodeRestError as exc:
        assert exc.reason == reason
    else:
        assert not outcome.ok and outcome.reason == reason


async def test_rest_health_must_say_healthy() -> None:
    """A server that answers 200 without the node's JSON (an old node's ping answer) is not healthy."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        outcome = await RestProbe(NodeRest("127.0.0.1", port))(3)
        assert (outcome.ok, outcome.reason) == (False, "bad-body")
    finally:
        server.close()


async def test_rest_hang_times_out_and_frees_the_worker(node: FakeNode) -> None:
    node.rest.mode = "hang"
    with pytest.raises(NodeRestError) as info:
        await RestProbe(NodeRest("127.0.0.1", node.rest.port))(0.3)
    assert info.value.reason == "timeout"
    await eventually(lambda: node.rest.open_now == 0)  # we hung up: the node's worker is free again


async def test_broker_ok_then_disconnect_leaves_no_log_line(node: FakeNode) -> None:
    outcome = await broker.probe_for("127.0.0.1", node.broker.port)(3)
    assert outcome.ok
    await eventually(lambda: node.broker.disconnects == 1 and node.broker.open_now == 0)
    assert node.broker.connacks == 1 and logs_untouched(node)


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
    probe = broker.probe_for("127.0.0.1", node.broker.port)
    if exc is not None:
        with pytest.raises(exc):
            await probe(0.3)
    else:
        outcome = await probe(3)
        assert not outcome.ok and outcome.reason == reason


async def test_broker_against_mosquitto(mosquitto: int) -> None:
    probe = broker.probe_for("127.0.0.1", mosquitto)
    outcome = await probe(3)
    assert outcome.ok, outcome
    outcome = await probe(3)  # again: the first session was ended cleanly
    assert outcome.ok, outcome
