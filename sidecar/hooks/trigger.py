"""What a hook run is about (:class:`Trigger`), what an action is, and how a run can fail."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Trigger:
    """Why a hook should run: a published revision, or local files that changed."""

    trigger: str  # change | publish
    event: str  # files-changed | scripts-seeded | scripts-updated
    revision: str | None = None
    source: str | None = None
    changes: dict[str, str] = field(default_factory=dict)  # path -> added|modified|deleted, oldest first
    at: float = field(default_factory=time.time)

    def merged(self, newer: Trigger) -> Trigger:
        """This pending trigger with a newer one folded in: the newer wins.

        A publish only matters for its latest revision. A change keeps the older paths too (each
        still needs processing), with the newer kind for a path seen twice.
        """
        if self.trigger != "change":
            return newer
        changes = dict(self.changes)
        for path, kind in newer.changes.items():
            changes.pop(path, None)  # re-inserted last: the order stays the order of the changes
            changes[path] = kind
        return replace(newer, changes=changes)

    def payload(self, hook: str) -> dict[str, Any]:
        """The JSON document a webhook receives and an exec hook reads on its standard input."""
        return {
            "hook": hook,
            "trigger": self.trigger,
            "event": self.event,
            "revision": self.revision,
            "source": self.source,
            "changes": [{"path": p, "kind": k} for p, k in self.changes.items()],
            "time": self.at,
        }


class HookError(Exception):
    """A run that failed and may work later (refused connection, timeout, 5xx); retried with backoff.

    The message must already be free of secrets.
    """


class HookRefused(Exception):
    """The receiver understood the request and said no (a 4xx, an error body): retrying will not help."""


class HookSkipped(Exception):
    """A run that decided not to act; not retried."""


class Action(Protocol):
    """One kind of action; ``run`` raises HookError, HookRefused or HookSkipped, or returns when it succeeded."""

    kind: str

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Perform the action once for ``trigger`` within ``timeout`` seconds."""
