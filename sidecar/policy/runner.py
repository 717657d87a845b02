"""Reads the node's own policy now and then and keeps the verdict in ``state.policy``.

When: once the node is up (the rest check is up), ``--policy-delay`` later so that the node has
declared its policy; again ``--policy-delay`` after the expected addresses change (a new identity
file, which the node only picks up when it restarts: until then the verdict is drift, rightly);
and every ``--policy-interval`` in between. Never while the node is down, and never two reads at
once: a read is awaited to its end (its deadline is the rest check's timeout) before the next is
planned. Each read is one ``blockchain get`` GET command, which adds one line to the node's event log.

Events go out when the verdict changes, not at every read: ``PolicyDrift`` when no policy carries
the expected addresses any more, ``DuplicatePolicies`` when a second policy appears, and
``PolicyMatches`` when one policy carries them again after either.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from sidecar import logs, progress
from sidecar.config import Settings
from sidecar.events import DuplicatePolicies, PolicyDrift, PolicyMatches
from sidecar.noderest import NodeAnswer, NodeRestError
from sidecar.policy import compare
from sidecar.state import State

log = logs.get("policy")

TICK = 1.0  # seconds between looks at the node's state and the expected addresses (memory only)


class NodeClient(Protocol):
    """The node's REST client (``sidecar.noderest``): one request at a time, each with a deadline."""

    async def command(self, command: str, *, timeout: float) -> NodeAnswer:
        """Send one node command with the method it needs and return the answer."""
        ...


class PolicyReader:
    """The ``policy`` component: plans reads, sends them, judges the answers."""

    def __init__(self, settings: Settings, state: State, client: NodeClient, *, tick: float = TICK) -> None:
        if not settings.node_type:
            raise ValueError("the policy check needs NODE_TYPE")
        self.settings = settings
        self.state = state
        self.client = client
        self.tick = tick
        self.kind = compare.policy_type(settings.node_type)
        p = state.policy
        p.enabled, p.kind, p.company = True, self.kind, settings.company_name

    # -- what to compare with ----------------------------------------------------------------------
    def expected(self) -> tuple[str, dict[str, str]]:
        """Where the stable addresses come from, and the policy fields they give.

        With a Kubernetes network identity, its values (the Service's ClusterIP and ports) are the
        stable ones; otherwise the node's own ``OVERLAY_IP`` and ports from the shared environment.
        """
        s = self.settings
        identity = self.state.kube.identity if self.state.kube.identity_written else {}

        def port(var: str, fallback: int | None) -> int | None:
            value = identity.get(var, "")
            return int(value) if value.isdigit() else fallback

        fields = compare.expected_addresses(
            overlay_ip=identity.get("OVERLAY_IP") or s.overlay_ip,
            tcp_bind=s.tcp_bind,
            tcp_port=port("ANYLOG_SERVER_PORT", s.tcp_port),
            rest_port=port("ANYLOG_REST_PORT", s.rest_port),
            broker_port=port("ANYLOG_BROKER_PORT", s.broker_port),
        )
        return ("kubernetes" if identity else "environment"), fields

    def node_name(self) -> str | None:
        """``NODE_NAME``, else the name the node reports (``<name>@<ip>:<port>`` from the rest check)."""
        if self.settings.node_name:
            return self.settings.node_name
        rest = self.state.checks.get("rest")
        reported = rest.node_name if rest is not None else None
        return reported.split("@", 1)[0] or None if reported else None

    def node_up(self) -> int | None:
        """While the rest check says the node answers, a number that changes whenever it went down and
        came back since (so a restart shorter than one look is not missed); None while it does not."""
        rest = self.state.checks.get("rest")
        return rest.transitions if rest is not None and rest.up is True else None

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read when due; forever."""
        p = self.state.policy
        reports = progress.current()
        due: float | None = None  # monotonic time of the next read; None while the node is down
        planned_for: tuple[str | None, tuple[tuple[str, str], ...]] | None = None
        seen_up: int | None = None
        while True:
            now = time.monotonic()
            up = self.node_up()
            if up is None:
                due = None
                reports.waiting("node up")
            else:
                _, fields = self.expected()
                key = (self.node_name(), tuple(sorted(fields.items())))
                if due is None or up != seen_up:
                    due = now + self.settings.policy_delay  # the node (re)started: it declares its policy
                elif key != planned_for:
                    due = min(due, now + self.settings.policy_delay)
                planned_for, seen_up = key, up
                if now >= due:
                    reports.working("policy read")
                    await self.read_once()
                    due = time.monotonic() + self.settings.policy_interval
                reports.waiting("next policy read", max(0.0, due - time.monotonic()) + self.tick)
            p.next_read_time = None if due is None else time.time() + max(0.0, due - time.monotonic())
            await asyncio.sleep(self.tick)

    async def read_once(self) -> None:
        """One read of the node's policies, judged and recorded."""
        p = self.state.policy
        source, expected = self.expected()
        name = self.node_name()
        p.name, p.expected, p.expected_source = name, expected, source
        if name is None:
            self._failed("the node's name is unknown: set NODE_NAME")
            return
        try:
            command = compare.query(self.kind, name)
        except ValueError as exc:
            self._failed(str(exc))
            return
        try:
            answer = await self.client.command(command, timeout=self.settings.rest_timeout)
        except NodeRestError as exc:
            self._failed(f"{exc.reason}: {exc}")
            return
        refused = answer.error()
        if refused is not None or answer.status != 200:
            self._failed(refused or f"HTTP {answer.status} {answer.reason_phrase[:80]}".strip())
            return
        try:
            policies = compare.parse(answer.text)
        except ValueError as exc:
            self._failed(f"bad-answer: {exc}")
            return
        verdict = compare.judge(policies, kind=self.kind, name=name, company=self.settings.company_name,
                                expected=expected)
        self._record(verdict)

    # -- state and events --------------------------------------------------------------------------
    def _failed(self, error: str) -> None:
        p = self.state.policy
        p.reads["error"] += 1
        if error != p.last_error:
            log.warning("policy_read_failed", error=error)
        p.last_error = error

    def _record(self, verdict: compare.Verdict) -> None:
        p = self.state.policy
        was_matching, was_count = p.matches, p.count
        p.reads["ok"] += 1
        p.last_error = None
        p.last_read_time = time.time()
        p.verdict, p.matches, p.count, p.summary = verdict.name, verdict.matches, verdict.count, verdict.summary()
        best = verdict.policy
        p.policy = best.as_dict() if best is not None else None
        p.policies = [policy.as_dict() for policy in verdict.policies]
        log.debug("policy_read", verdict=verdict.name, count=verdict.count)
        bus = self.state.bus
        ids = tuple(policy.id or "?" for policy in verdict.policies)
        if not verdict.matches and was_matching is not False:
            log.warning("policy_drift", summary=p.summary)
            bus.publish(PolicyDrift(message=f"Node policy drift: {p.summary}",
                                    policy_id=best.id if best is not None else None,
                                    differences=tuple(d.describe() for d in best.differences) if best else ()))
        if verdict.duplicates and not (was_count is not None and was_count > 1):
            log.warning("duplicate_policies", count=verdict.count, ids=list(ids))
            bus.publish(DuplicatePolicies(message=f"Duplicate node policies: {p.summary}", count=verdict.count,
                                          policy_ids=ids))
        recovered = (was_matching is False or (was_count is not None and was_count > 1))
        if verdict.name == "match" and recovered:
            log.info("policy_matches", summary=p.summary)
            bus.publish(PolicyMatches(message=f"Node policy matches: {p.summary}",
                                      policy_id=best.id if best is not None else None))
