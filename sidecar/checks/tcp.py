"""The tcp check: is the node's TCP port listening?

When the node's address is one of this host's own (the sidecar shares the pod's network namespace,
the chart's case), the probe reads the port's state from ``/proc/net/tcp`` and ``/proc/net/tcp6``
and makes no connection at all: the node's logs see nothing. A listening socket whose accept queue
is full counts as a failure (the node is not taking connections).

For a node elsewhere (``--node-host`` not an own address) the kernel tables say nothing, so the
probe connects and closes at once. That is the cheapest thing a foreign client can do on the node's
TCP server, but each empty connection adds a ``Peer closed ... before data`` line to the node's
100-entry event log. Sending anything would be worse: fewer than 2,048 bytes logs an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sidecar import netio
from sidecar.checks.outcome import OK, Outcome, Probe

PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LISTEN = "0A"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Listener:
    """One listening socket from the kernel's table."""

    address: Address
    port: int
    queued: int  # connections waiting to be accepted
    backlog: int  # the most that may wait

    @property
    def full(self) -> bool:
        """The accept queue is full: new connects wait or are dropped (the kernel admits ``backlog + 1``)."""
        return self.queued > self.backlog


def _address(field: str) -> Address:
    """An address as the kernel prints it: 32-bit words in host byte order, in hex."""
    words = [int(field[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(field), 8)]
    return ipaddress.ip_address(b"".join(words))


def parse_listeners(text: str) -> list[Listener]:
    """The LISTEN sockets of one ``/proc/net/tcp*`` table."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or fields[3] != LISTEN:
            continue
        try:
            host, port = fields[1].split(":")
            tx_queue, rx_queue = fields[4].split(":")
            out.append(Listener(_address(host), int(port, 16), int(rx_queue, 16), int(tx_queue, 16)))
        except ValueError:
            continue  # a line this parser does not know is not evidence of a listener
    return out


def serves(listener: Listener, target: Address, port: int) -> bool:
    """True when a connect to ``target:port`` would reach ``listener``."""
    if listener.port != port:
        return False
    if listener.address.is_unspecified:
        # An IPv6 wildcard also takes IPv4 unless the socket is v6-only, which the table does not
        # say; the node's servers listen on IPv4, so this only widens what an IPv6 listener covers.
        return True
    mapped = getattr(listener.address, "ipv4_mapped", None)
    return listener.address == target or mapped == target


def read_tables(tables: Iterable[Path] = PROC_TABLES) -> list[Listener]:
    """Every listener in the tables that exist (blocking: call it in a thread)."""
    out: list[Listener] = []
    for table in tables:
        try:
            out.extend(parse_listeners(table.read_text()))
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
    return out


def own_addresses(host: str) -> list[Address]:
    """The addresses ``host`` stands for, when they are this network namespace's own (blocking).

    An address is our own exactly when a socket can be bound to it; that also covers the pod's IP.
    Empty when ``host`` does not resolve or any of its addresses is elsewhere.
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    found: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((sockaddr[0], 0))
            except OSError:
                return []
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def listen_probe(addresses: Iterable[Address], port: int, tables: Iterable[Path] = PROC_TABLES) -> Probe:
    """A probe that reads the LISTEN state of ``port`` on any of ``addresses``; it opens no connection."""
    paths = tuple(tables)
    targets = tuple(addresses)

    async def probe(timeout: float) -> Outcome:
        async with asyncio.timeout(timeout):
            listeners = await asyncio.to_thread(read_tables, paths)
        found = [item for item in listeners if any(serves(item, target, port) for target in targets)]
        if not found:
            return Outcome(False, "not-listening", f"no socket listens on port {port}")
        if all(item.full for item in found):
            return Outcome(False, "backlog-full", f"{found[0].queued} connections wait to be accepted "
                                                  f"(backlog {found[0].backlog})")
        return OK

    return probe


def connect_probe(host: str, port: int) -> Probe:
    """A probe that connects within ``timeout`` seconds, then closes (one event-log line on the node)."""

    async def probe(timeout: float) -> Outcome:
        async with netio.connection(host, port, timeout):
            pass
        return OK

    return probe


def probe_for(host: str, port: int) -> tuple[Probe, str]:
    """The probe for ``host:port`` and how it works (``listen-state`` or ``connect``); blocking."""
    addresses = own_addresses(host)
    if addresses and any(table.exists() for table in PROC_TABLES):
        return listen_probe(addresses, port), "listen-state"
    return connect_probe(host, port), "connect"
