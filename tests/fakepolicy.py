"""The network's metadata as the stand-in node answers it: ``blockchain get`` over a list of policies.

Every :class:`fakenode.FakeNode` holds one book (``node.policies``, empty at first: the node then
answers ``[]``, as a node whose network holds no policy of its own does). It answers as the node does: a GET
command, a JSON list of ``{type: {fields}}`` policies (``[]`` when none), one ``(ok)`` event-log line
per answered read (the stand-in's REST server writes it), and an unknown-command error for a
``blockchain get`` it cannot parse. Conditions are ``key = value`` pairs joined by ``and``; values may
be double-quoted (the node drops the quotes); a policy matches when each named field equals the value
as text.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable
from typing import Any, Protocol

OLD_POD_IP = "10.244.1.7"


def policy(kind: str, name: str, *, company: str = "New Company", local_ip: str, ip: str = "203.0.113.10",
           port: int = 32148, rest_port: int = 32149, broker_port: int | None = 32150,
           id: str = "a1", date: str = "2026-11-27T10:00:00.000000Z") -> dict[str, Any]:
    """One node policy as the node's ``node_policy.al`` declares it, with the ledger's own fields."""
    fields: dict[str, Any] = {"name": name, "company": company, "hostname": f"{name}-0", "ip": ip,
                              "local_ip": local_ip, "port": port, "rest_port": rest_port}
    if broker_port is not None:
        fields["broker_port"] = broker_port
    return {kind: {**fields, "id": id, "date": date, "ledger": "global"}}


class PolicyBook:
    """The policies the stand-in node holds; tests change them while the sidecar reads."""

    def __init__(self, *policies: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self.policies = list(policies)
        self.reads: list[str] = []  # every blockchain get command answered

    def set(self, *policies: dict[str, Any]) -> None:
        """Replace every policy."""
        with self.lock:
            self.policies = list(policies)

    def answer(self, command: str) -> tuple[int, str] | None:
        """``(status, body)`` for a ``blockchain get`` command; None for any other command."""
        words = command.split(None, 3)
        if words[:2] != ["blockchain", "get"] or len(words) < 3:
            return None
        conditions: dict[str, str] = {}
        if len(words) == 4:
            try:
                parts = shlex.split(words[3])
            except ValueError:
                return None
            if not parts or parts[0] != "where":
                return None
            terms = parts[1:]
            while terms:
                if len(terms) < 3 or terms[1] != "=":
                    return None
                conditions[terms[0]] = terms[2]
                terms = terms[3:]
                if terms:
                    if terms[0] != "and":
                        return None
                    terms = terms[1:]
        with self.lock:
            self.reads.append(command)
            found = [p for p in self.policies if words[2] in p
                     and all(str(p[words[2]].get(k)) == v for k, v in conditions.items())]
        return 200, json.dumps(found)


class _Executes(Protocol):
    execute: Callable[[str, str], tuple[int, str] | None]


def install(rest: _Executes, book: PolicyBook) -> None:
    """Make the stand-in's REST server answer ``blockchain get`` from ``book`` (other commands as before)."""
    execute = rest.execute

    def answer(command: str, mode: str) -> tuple[int, str] | None:
        return book.answer(command) or execute(command, mode)

    rest.execute = answer
