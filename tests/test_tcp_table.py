"""The kernel's TCP tables read in process: which sockets listen, where, and whether their queue is full."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from sidecar.checks.tcp import parse_listeners, serves

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def _hex4(address: str) -> str:
    """An IPv4 address as the kernel prints it (a 32-bit word in host byte order)."""
    return f"{int.from_bytes(ipaddress.ip_address(address).packed, sys.byteorder):08X}"


def _hex6(address: str) -> str:
    packed = ipaddress.ip_address(address).packed
    return "".join(f"{int.from_bytes(packed[i:i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))


def _line(local: str, port: int, state: str, tx: int = 0, rx: int = 0) -> str:
    return (f"   0: {local}:{port:04X} 00000000:0000 {state} {tx:08X}:{rx:08X} 00:00000000 00000000  0  0 1 1 "
            "0000000000000000 100 0 0 10 0\n")


TABLE4 = HEADER + "".join([
    _line(_hex4("127.0.0.1"), 32048, "0A", tx=5, rx=0),
    _line(_hex4("0.0.0.0"), 32049, "0A", tx=5, rx=6),  # accept queue over its backlog: full
    _line(_hex4("10.1.2.3"), 32050, "0A", tx=128, rx=1),
    _line(_hex4("127.0.0.1"), 40000, "01"),  # an established connection, not a listener
    "   garbage line that is not a socket\n",
    _line("ZZZZZZZZ", 1, "0A"),
])
TABLE6 = HEADER + "".join([
    _line(_hex6("::"), 32150, "0A", tx=5),
    _line(_hex6("::ffff:127.0.0.1"), 32151, "0A", tx=5),
    _line(_hex6("fd00::7"), 32152, "0A", tx=5),
])


def test_listeners_are_parsed() -> None:
    found = {(str(item.address), item.port, item.queued, item.backlog) for item in parse_listeners(TABLE4)}
    assert found == {("127.0.0.1", 32048, 0, 5), ("0.0.0.0", 32049, 6, 5), ("10.1.2.3", 32050, 1, 128)}
    six = {(str(item.address), item.port) for item in parse_listeners(TABLE6)}
    assert six == {("::", 32150), ("::ffff:7f00:1", 32151), ("fd00::7", 32152)}


def test_only_the_full_queue_is_full() -> None:
    full = {item.port: item.full for item in parse_listeners(TABLE4)}
    assert full == {32048: False, 32049: True, 32050: False}


LOOPBACK = ipaddress.ip_address("127.0.0.1")
POD = ipaddress.ip_address("10.1.2.3")


@pytest.mark.parametrize(("target", "port", "expected"), [
    (LOOPBACK, 32048, True),  # exact address
    (POD, 32048, False),  # listening on loopback only: the pod's address does not reach it
    (LOOPBACK, 32049, True),  # wildcard
    (POD, 32049, True),
    (POD, 32050, True),
    (LOOPBACK, 32050, False),  # bound to the pod's address only
    (LOOPBACK, 32150, True),  # IPv6 wildcard
    (LOOPBACK, 32151, True),  # IPv4-mapped
    (POD, 32151, False),
    (LOOPBACK, 32152, False),
    (LOOPBACK, 9, False),  # nothing on that port
])
def test_which_listener_serves_an_address(target: ipaddress.IPv4Address, port: int, expected: bool) -> None:
    listeners = parse_listeners(TABLE4) + parse_listeners(TABLE6)
    assert any(serves(item, target, port) for item in listeners) is expected
