"""The rest check: ``GET /health`` on the node's REST port, which the node answers without logging.

Healthy is ``200`` with a JSON body whose ``status`` is ``healthy``. The node's name comes from
``get status`` (``<name>@<ip>:<tcp port> running``), which adds an ``(ok) get status`` line to the
node's event log: it is asked once when the check first succeeds and once after each failure, never
at every probe. A name that could not be learned is not asked again until the next recovery, so a
node that refuses ``get status`` does not get a line in its error log at every probe.
"""

from __future__ import annotations

from sidecar.checks.outcome import OK, Outcome
from sidecar.noderest import NodeRest, NodeRestError

NAME_COMMAND = "get status"
HEALTHY = "healthy"


class RestProbe:
    """The rest probe of one node; remembers whether the node's name must be learned again."""

    def __init__(self, client: NodeRest) -> None:
        self.client = client
        self.name_wanted = True

    async def __call__(self, timeout: float) -> Outcome:
        """One ``GET /health``; ``timeout`` covers the exchange, not the wait for the client's lock."""
        try:
            outcome = await self.health(timeout)
        except BaseException:
            self.name_wanted = True
            raise
        if not outcome.ok:
            self.name_wanted = True
            return outcome
        if self.name_wanted:
            self.name_wanted = False
            name = await self.learn_name(timeout)
            if name:
                return Outcome(True, "ok", node_name=name)
        return outcome

    async def health(self, timeout: float) -> Outcome:
        """The verdict of ``GET /health``."""
        answer = await self.client.health(timeout=timeout)
        if answer.status != 200:
            return Outcome(False, "bad-status", f"HTTP {answer.status} {answer.reason_phrase[:60]}".strip())
        body = answer.json()
        status = body.get("status") if isinstance(body, dict) else None
        if status != HEALTHY:
            return Outcome(False, "bad-body", f"expected a JSON status of 'healthy', got {answer.text[:80]!r}")
        return OK

    async def learn_name(self, timeout: float) -> str | None:
        """The node's ``<name>@<ip>:<port>`` from ``get status``, or None when it does not tell."""
        try:
            answer = await self.client.command(NAME_COMMAND, timeout=timeout)
        except NodeRestError:
            return None
        words = answer.text.split()
        if answer.status != 200 or len(words) < 2 or words[-1] != "running" or words[-2].lower() == "not":
            return None
        return " ".join(words[:-1])
