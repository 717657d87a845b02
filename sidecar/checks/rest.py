"""The rest check: ``get status`` through the node REST client; healthy is 200 and ``... running``.

The node answers ``<name>@<ip>:<tcp port> running``; the name part is kept for ``/status`` and the
``edgelake_sidecar_node_info`` metric.
"""

from __future__ import annotations

from sidecar import noderest
from sidecar.checks import Outcome

COMMAND = "get status"
HEALTHY_SUFFIX = "running"


async def probe(host: str, port: int, timeout: float) -> Outcome:
    """One ``get status``; ``timeout`` covers the exchange, not the wait for the REST lock."""
    answer = await noderest.command(host, port, COMMAND, timeout=timeout)
    text = answer.text.strip()
    if answer.status != 200:
        return Outcome(False, "bad-status", f"HTTP {answer.status} {answer.reason_phrase[:60]}".strip())
    words = text.split()
    # "... not running" also ends in "running": the word before must not negate it.
    if not words or words[-1] != HEALTHY_SUFFIX or (len(words) > 1 and words[-2].lower() == "not"):
        return Outcome(False, "bad-body", f"body does not end in 'running': {text[:80]!r}")
    return Outcome(True, "ok", node_name=" ".join(words[:-1]) or None)
