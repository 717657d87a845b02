"""The broker check: an MQTT 3.1.1 CONNECT, sent alone, must be answered by CONNACK ``20 02 00 00``.

The node's hand-written broker answers only a CONNECT that arrives in a segment of its own (CONNECT
and DISCONNECT together get no CONNACK, a lone PINGREQ gets nothing), so the probe writes CONNECT,
waits for exactly four bytes, then sends DISCONNECT and closes.
"""

from __future__ import annotations

from sidecar import netio
from sidecar.checks.outcome import OK, Outcome, Probe

CLIENT_ID = b"edgelake-sidecar-check"


def connect_packet(client_id: bytes = CLIENT_ID) -> bytes:
    """CONNECT: protocol ``MQTT`` level 4, clean session, keep-alive 60 s, no will, no credentials."""
    variable = b"\x00\x04MQTT" + b"\x04" + b"\x02" + (60).to_bytes(2, "big")
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    assert len(body) < 128  # one-byte remaining length
    return bytes([0x10, len(body)]) + body


CONNECT = connect_packet()
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
DISCONNECT = b"\xe0\x00"


def probe_for(host: str, port: int) -> Probe:
    """The broker probe of ``host:port``; it leaves nothing in the node's logs."""

    async def probe(timeout: float) -> Outcome:
        """CONNECT alone, read exactly the 4-byte CONNACK, DISCONNECT, close; all within ``timeout``."""
        async with netio.connection(host, port, timeout) as (reader, writer):
            writer.write(CONNECT)
            await writer.drain()
            answer = await reader.readexactly(4)
            if answer != CONNACK_ACCEPTED:
                return Outcome(False, "bad-answer", f"expected CONNACK 20 02 00 00, got {answer.hex(' ')}")
            writer.write(DISCONNECT)
            await writer.drain()
        return OK

    return probe
