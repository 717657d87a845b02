"""The tcp check: connect to the node's TCP port and close at once.

It is the cheapest check a foreign client can make on the node's proprietary TCP server, but each
empty connection adds a ``Peer closed ... before data`` line to the node's 100-entry event log,
which is why the default interval is long (30 s). Sending anything would be worse: fewer than
2,048 bytes logs an error and prints to the node's stdout.
"""

from __future__ import annotations

from sidecar import netio
from sidecar.checks import OK, Outcome


async def probe(host: str, port: int, timeout: float) -> Outcome:
    """Connect within ``timeout`` seconds, then close."""
    async with netio.connection(host, port, timeout):
        pass
    return OK
