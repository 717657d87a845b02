"""Node checks: one probe per node port (tcp, rest, broker) and a runner with kubelet semantics.

A probe is ``async probe(host, port, timeout) -> Outcome``. It enforces its own timeout (the rest
probe's excludes the wait for the process-wide REST lock, see ``sidecar.noderest``) and either
returns an Outcome (the port answered, well or badly) or raises; :func:`failure` turns what it
raised into a reason word. Probes never keep a node connection open after their answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar import netio


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
    known = netio.reason(exc)
    if known is not None:
        return Outcome(False, *known)
    return Outcome(False, "error", f"{type(exc).__name__}: {exc}")


def probe_for(name: str) -> Probe:
    """The probe function of check ``name`` (``tcp``, ``rest`` or ``broker``)."""
    from sidecar.checks import broker, rest, tcp

    probes: dict[str, Probe] = {"tcp": tcp.probe, "rest": rest.probe, "broker": broker.probe}
    return probes[name]
