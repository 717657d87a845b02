"""What one probe saw, and how a probe that raised is turned into a reason word.

A probe is ``async probe(timeout) -> Outcome``, bound to its target when it is built. It enforces
its own timeout (the rest probe's excludes the wait for the REST client's lock) and either returns
an Outcome (the port answered, well or badly) or raises; :func:`failure` turns what it raised into
a reason word. Probes never keep a node connection open after their answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar import netio
from sidecar.noderest import NodeRestError


@dataclass(frozen=True)
class Outcome:
    """What one probe saw: ``reason`` is ``ok`` or a short word saying what went wrong."""

    ok: bool
    reason: str
    detail: str = ""
    node_name: str | None = None


OK = Outcome(True, "ok")

# Reasons that mean nothing listens on the port: probing again costs the node nothing.
NOT_LISTENING = frozenset({"refused", "not-listening"})

Probe = Callable[[float], Awaitable[Outcome]]


def failure(exc: BaseException) -> Outcome:
    """The Outcome of a probe that raised ``exc``."""
    if isinstance(exc, NodeRestError):
        return Outcome(False, exc.reason, str(exc))
    known = netio.reason(exc)
    if known is not None:
        return Outcome(False, *known)
    return Outcome(False, "error", f"{type(exc).__name__}: {exc}")
