"""Node checks: one probe per node port (tcp, rest, broker) and a runner with kubelet semantics.

A probe is ``async probe(host, port, timeout) -> Outcome``. It enforces its own timeout (the rest
probe's excludes the wait for the process-wide REST lock, see ``sidecar.noderest``) and either
returns an Outcome (the port answered, well or badly) or raises; :func:`failure` turns what it
raised into a reason word. Probes never keep a node connection open after their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What one probe saw: ``reason`` is ``ok`` or a short word saying what went wrong."""

    ok: bool
    reason: str
    detail: str = ""
    node_name: str | None = None


OK = Outcome(True, "ok")

Probe = Callable[[str, int, float], Awaitable[Outcome]]


def failure(exc: BaseException) -> Outcome:
    """The Outcome of a probe that raised ``exc``."""
    # Imported here: the rest probe's errors carry their own reason word.
    from sidecar.noderest import NodeRestError

    if isinstance(exc, NodeRestError):
        return Outcome(False, exc.reason, str(exc))
    if isinstance(exc, TimeoutError):
        return Outcome(False, "timeout", "no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return Outcome(False, "refused", "connection refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Outcome(False, "reset", "connection reset by the node")
    if isinstance(exc, asyncio.IncompleteReadError):
        return Outcome(False, "closed", f"closed after {len(exc.partial)} of {exc.expected} bytes")
    if isinstance(exc, OSError):
        return Outcome(False, "unreachable", str(exc) or type(exc).__name__)
    return Outcome(False, "error", f"{type(exc).__name__}: {exc}")


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a node connection now; never wait long for the node to acknowledge."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


def probe_for(name: str) -> Probe:
    """The probe function of check ``name`` (``tcp``, ``rest`` or ``broker``)."""
    from sidecar.checks import broker, rest, tcp

    probes: dict[str, Probe] = {"tcp": tcp.probe, "rest": rest.probe, "broker": broker.probe}
    return probes[name]
