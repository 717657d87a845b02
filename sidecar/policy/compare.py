"""The node's policies in the network's metadata against the addresses it should have. Pure: no I/O.

At start the node's scripts look up a policy of their type with the node's name, company and
address, and declare a new one when none matches. A pod that came back with a new address therefore
leaves its old policy behind and adds another. This module builds the read (``blockchain get``),
parses the node's JSON answer and judges it: does a policy carry the stable addresses, and is there
only one?
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# NODE_TYPE -> the policy type the node declares (its set_params.al folds the master-* types).
POLICY_TYPES = {"master-operator": "operator", "master-publisher": "publisher"}
# The policy fields that hold addresses, in the order people read them.
ADDRESS_FIELDS = ("ip", "local_ip", "port", "rest_port", "broker_port")
# What the node's policies can carry in one read; a longer answer is cut, and the cut is reported.
MAX_POLICIES = 50


def policy_type(node_type: str) -> str:
    """The policy type a node of ``node_type`` declares."""
    low = node_type.strip().lower()
    return POLICY_TYPES.get(low, low)


def _quoted(value: str) -> str:
    if not value or any(c in value for c in "\"'\r\n\x00") or value.strip() != value:
        raise ValueError(f"cannot put {value!r} in a node command")
    return f'"{value}"'


def query(kind: str, name: str) -> str:
    """The node command that reads every policy of type ``kind`` with the name ``name`` (a GET command).

    The company is compared afterwards rather than in the command: a company name often holds
    spaces and dots, and one condition is the simplest form the node parses the same way everywhere.
    """
    if not kind.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"cannot read policies of type {kind!r}")
    return f"blockchain get {kind} where name = {_quoted(name)}"


def expected_addresses(
    *,
    overlay_ip: str | None,
    tcp_bind: bool,
    tcp_port: int | None,
    rest_port: int | None,
    broker_port: int | None,
) -> dict[str, str]:
    """The policy fields whose values the sidecar knows, as the node's scripts fill them.

    The overlay address goes to ``local_ip``, or to ``ip`` when the node binds its TCP server to it
    (``TCP_BIND``). The other address field is the node's own idea (its external or pod address),
    which is not stable and not the sidecar's to judge, so it is not compared.
    """
    out: dict[str, str] = {}
    if overlay_ip:
        out["ip" if tcp_bind else "local_ip"] = overlay_ip
    for name, port in (("port", tcp_port), ("rest_port", rest_port), ("broker_port", broker_port)):
        if port is not None:
            out[name] = str(port)
    return out


@dataclass(frozen=True)
class Difference:
    """One address field whose value in the policy is not the expected one."""

    field: str
    policy: str | None
    expected: str

    def describe(self) -> str:
        """``local_ip 10.244.1.7 (expected 10.96.0.12)``."""
        return f"{self.field} {self.policy if self.policy is not None else '(none)'} (expected {self.expected})"


@dataclass(frozen=True)
class Policy:
    """One policy of this node: its id, its addresses and how they differ from the expected ones."""

    id: str | None
    addresses: Mapping[str, str]
    date: str | None
    differences: tuple[Difference, ...]

    @property
    def matches(self) -> bool:
        """Every expected address is in the policy."""
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "id": self.id,
            **{k: self.addresses.get(k) for k in ADDRESS_FIELDS},
            "date": self.date,
            "matches": self.matches,
            "differences": [{"field": d.field, "policy": d.policy, "expected": d.expected}
                            for d in self.differences],
        }


@dataclass(frozen=True)
class Verdict:
    """What one read found."""

    policies: tuple[Policy, ...]  # this node's policies, matching ones first (at most MAX_POLICIES)
    expected: Mapping[str, str]
    count: int  # how many policies carry this node's name and company

    @property
    def matches(self) -> bool:
        """At least one of them carries every expected address."""
        return any(p.matches for p in self.policies)

    @property
    def duplicates(self) -> bool:
        """More than one carries this node's name and company."""
        return self.count > 1

    @property
    def name(self) -> str:
        """``match``, ``drift`` (no policy has the expected addresses), ``missing`` or ``duplicates``."""
        if not self.policies:
            return "missing"
        if self.duplicates:
            return "duplicates"
        return "match" if self.matches else "drift"

    @property
    def policy(self) -> Policy | None:
        """The policy that speaks for the node: the matching one, else the newest."""
        return self.policies[0] if self.policies else None

    def summary(self) -> str:
        """One sentence for a person: what was found and which field differs."""
        if not self.policies:
            return "no policy carries this node's name and company"
        best = self.policies[0]
        if self.duplicates:
            ids = ", ".join(p.id or "?" for p in self.policies[:5])
            which = f"policy {best.id} matches" if best.matches else "none matches"
            return f"{self.count} policies carry this node's name and company ({ids}); {which}"
        if best.matches:
            return f"policy {best.id} carries the node's addresses"
        return f"policy {best.id} differs: " + "; ".join(d.describe() for d in best.differences)


def parse(body: str) -> list[dict[str, Any]]:
    """The node's answer to ``blockchain get``: a JSON list of ``{type: {fields}}`` policies.

    Raises ValueError on anything else, so a garbled answer is never judged as "no policy".
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError(f"not JSON: {body[:80]!r}") from None
    if not isinstance(data, list):
        raise ValueError(f"not a list of policies: {body[:80]!r}")
    out: list[dict[str, Any]] = []
    for entry in data:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"not a policy: {str(entry)[:80]!r}")
        inner = next(iter(entry.values()))
        if not isinstance(inner, dict):
            raise ValueError(f"not a policy: {str(entry)[:80]!r}")
        out.append({"type": next(iter(entry)), **inner})
    return out


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def judge(policies: Sequence[Mapping[str, Any]], *, kind: str, name: str, company: str,
          expected: Mapping[str, str]) -> Verdict:
    """Keep this node's policies (type, name and company) and compare each with ``expected``."""
    mine: list[Policy] = []
    for raw in policies:
        if raw.get("type") != kind or _text(raw.get("name")) != name or _text(raw.get("company")) != company:
            continue
        addresses = {k: v for k in ADDRESS_FIELDS if (v := _text(raw.get(k))) is not None}
        differences = tuple(Difference(k, addresses.get(k), v) for k, v in expected.items() if addresses.get(k) != v)
        mine.append(Policy(_text(raw.get("id")), addresses, _text(raw.get("date")), differences))
    # Matching policies first, then the newest (the node stamps "date" as sortable text).
    mine.sort(key=lambda p: p.date or "", reverse=True)
    mine.sort(key=lambda p: not p.matches)
    return Verdict(tuple(mine[:MAX_POLICIES]), dict(expected), len(mine))
