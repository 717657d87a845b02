"""Probe verdicts computed from ``state``: shared by the endpoints and the metrics, so they agree.

Nothing here performs I/O or a check: each verdict is a list of ``Part`` read from memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sidecar.config import Settings
from sidecar.state import CheckState, State


@dataclass(frozen=True)
class Part:
    """One line of a verbose probe answer: ``[+]name ok`` or ``[-]name failed: reason``."""

    name: str
    ok: bool
    reason: str = ""

    def line(self) -> str:
        """The line as the Kubernetes API server prints it."""
        return f"[+]{self.name} ok" if self.ok else f"[-]{self.name} failed: {self.reason}"


def scripts_part(state: State) -> Part:
    """The scripts are published."""
    s = state.scripts
    return Part("scripts", True) if s.published else Part("scripts", False, s.problem or "not published yet")


def startup(settings: Settings, state: State) -> list[Part]:
    """``/startupz``: scripts published and, when the identity file is wanted, written."""
    parts = [scripts_part(state)]
    if settings.network_env_file is not None and state.kube.enabled:
        parts.append(Part("network-identity", state.kube.identity_written,
                          "" if state.kube.identity_written else "env file not written yet"))
    return parts


def readiness(settings: Settings, state: State) -> list[Part]:
    """``/readyz``: scripts published and every gating check up."""
    parts = [scripts_part(state)]
    for name in settings.gating_checks():
        if name == "policy":
            parts.append(policy_part(state))
            continue
        check = state.checks.get(name)
        if check is None or check.up is None:
            reason = "not decided yet"
            if check is not None and check.last is not None:
                reason += f" (last: {check.last.reason})"
            parts.append(Part(name, False, reason))
        elif check.up:
            parts.append(Part(name, True))
        else:
            last = check.last.reason if check.last is not None else "down"
            parts.append(Part(name, False, f"{last}, {check.consecutive_fail} consecutive failures"))
    return parts


def policy_part(state: State) -> Part:
    """The node's policy carries its stable addresses (only when ``--ready-checks`` names ``policy``)."""
    p = state.policy
    if p.matches is None:
        return Part("policy", False, "not read yet" + (f" (last: {p.last_error})" if p.last_error else ""))
    return Part("policy", True) if p.matches else Part("policy", False, p.summary or p.verdict or "drift")


def node_liveness(settings: Settings, state: State) -> Part:
    """``/node/livez``: fails only once the rest check has failed for ``--node-livez-after`` seconds."""
    return node_liveness_part(state.checks.get("rest"), settings.node_livez_after)


def node_liveness_part(check: CheckState | None, after: float) -> Part:
    """The ``/node/livez`` verdict from the rest check's state.

    Passes when no rest check is configured, before the first result and whenever the last result
    was a success; thresholds do not matter here, only how long the failures have lasted.
    """
    if check is None or check.failing_since_monotonic is None:
        return Part("node-rest", True)
    failing_for = time.monotonic() - check.failing_since_monotonic
    if failing_for < after:
        return Part("node-rest", True)
    last = check.last.reason if check.last is not None else "failing"
    return Part("node-rest", False, f"{last} for {failing_for:.0f} s (limit {after:g} s)")


def all_ok(parts: list[Part]) -> bool:
    """True when every part passed."""
    return all(p.ok for p in parts)
