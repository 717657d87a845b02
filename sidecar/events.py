"""The notable things that happen, as typed events: one ``Kind`` member and one dataclass per kind.

Each event is a frozen dataclass whose fields are its payload; ``message`` is the sentence a person
reads (``kubectl describe pod``), ``kind`` names it on the wire (a hook's ``SIDECAR_EVENT``) and
``warning`` marks events that mean something is wrong. Consumers match on the class
(``isinstance(event, ScriptsPublished)``), never on strings or dict keys.

Adding a kind is a member of ``Kind`` and a subclass of ``Event`` that sets ``kind`` (and
``warning = True`` when it reports a problem); a test checks that every kind has exactly one class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class Kind(StrEnum):
    """The name of each kind of event, as hooks and logs show it."""

    SCRIPTS_SEEDED = "scripts-seeded"
    SCRIPTS_UPDATED = "scripts-updated"
    SYNC_FAILED = "sync-failed"
    SYNC_RECOVERED = "sync-recovered"
    EDITS_HELD = "edits-held"
    EDITS_CONFLICT = "edits-conflict"
    FILES_CHANGED = "files-changed"
    SCRIPTS_ADOPTED = "scripts-adopted"
    SCRIPTS_LOST = "scripts-lost"
    CONFLICT_RESOLVED = "conflict-resolved"
    CHECK_DOWN = "check-down"
    CHECK_UP = "check-up"
    NODE_LIVEZ_FAILING = "node-livez-failing"
    NODE_LIVEZ_OK = "node-livez-ok"
    HOOK_REFUSED = "hook-refused"
    POLICY_DRIFT = "policy-drift"
    DUPLICATE_POLICIES = "duplicate-policies"
    POLICY_MATCHES = "policy-matches"


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something a person or a hook may care about; subclasses carry the payload of one kind."""

    kind: ClassVar[Kind]
    warning: ClassVar[bool] = False
    message: str


# --- scripts ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ScriptsPublished(Event):
    """A revision went live (either kind below); consumers that treat both alike match this class."""

    revision: str  # the commit
    source: str  # git | fallback | adopted
    path: str  # the revision folder


@dataclass(frozen=True, kw_only=True)
class ScriptsSeeded(ScriptsPublished):
    """The first revision of this run, published before the node starts."""

    kind = Kind.SCRIPTS_SEEDED


@dataclass(frozen=True, kw_only=True)
class ScriptsUpdated(ScriptsPublished):
    """A newer revision replaced the one the node runs."""

    kind = Kind.SCRIPTS_UPDATED


@dataclass(frozen=True, kw_only=True)
class SyncFailed(Event):
    """The first failure of a run of failed syncs."""

    kind = Kind.SYNC_FAILED
    warning = True
    error: str


@dataclass(frozen=True, kw_only=True)
class SyncRecovered(Event):
    """A sync succeeded after failures."""

    kind = Kind.SYNC_RECOVERED
    failures: int  # how many in a row before this success


@dataclass(frozen=True, kw_only=True)
class EditsHeld(Event):
    """Local edits keep an upstream update from being published."""

    kind = Kind.EDITS_HELD
    warning = True
    files: tuple[str, ...]  # the first edited paths
    upstream: str | None = None  # the upstream commit held back


@dataclass(frozen=True, kw_only=True)
class EditsConflict(Event):
    """Local edits conflict with an upstream update."""

    kind = Kind.EDITS_CONFLICT
    warning = True
    files: tuple[str, ...]
    upstream: str | None = None  # the upstream commit held back (None: edits made during a swap)


@dataclass(frozen=True, kw_only=True)
class ScriptsAdopted(Event):
    """A tree found at the link was adopted; ``base`` is the commit its edits are measured against."""

    kind = Kind.SCRIPTS_ADOPTED
    base: str | None  # None: no upstream commit matched, every file counts as an edit
    reason: str
    identical: int
    edited: tuple[str, ...]
    added: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def warning(self) -> bool:  # type: ignore[override]
        """Adopting without a matching base makes every file an edit: a person should know."""
        return self.base is None


@dataclass(frozen=True, kw_only=True)
class ScriptsLost(Event):
    """The published tree went away under the sidecar (link or root removed or replaced)."""

    kind = Kind.SCRIPTS_LOST
    warning = True
    problem: str
    kept_at: str | None = None  # where a file or folder found at the link was moved


@dataclass(frozen=True, kw_only=True)
class ConflictResolved(Event):
    """A person settled a held conflict (``resolve``); the upstream commit is published."""

    kind = Kind.CONFLICT_RESOLVED
    take: str  # upstream | mine
    files: tuple[str, ...]
    upstream: str
    kept_in: str | None  # where the person's copies went (take upstream)


# --- watch -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FilesChanged(Event):
    """One debounced batch of changes in the published tree."""

    kind = Kind.FILES_CHANGED
    changes: Mapping[str, str]  # path -> added | modified | deleted, oldest first
    revision: str | None  # the revision the tree belongs to


# --- node checks -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CheckDown(Event):
    """A node check crossed its failure threshold."""

    kind = Kind.CHECK_DOWN
    warning = True
    check: str
    reason: str
    failures: int


@dataclass(frozen=True, kw_only=True)
class CheckUp(Event):
    """A node check that was down passes again."""

    kind = Kind.CHECK_UP
    check: str


@dataclass(frozen=True, kw_only=True)
class NodeLivezFailing(Event):
    """``/node/livez`` turned 503: the rest check has failed for ``--node-livez-after`` seconds."""

    kind = Kind.NODE_LIVEZ_FAILING
    warning = True
    reason: str  # e.g. "refused for 120 s (limit 120 s)"


@dataclass(frozen=True, kw_only=True)
class NodeLivezOk(Event):
    """``/node/livez`` passes again."""

    kind = Kind.NODE_LIVEZ_OK


# --- hooks -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HookRefused(Event):
    """The receiver refused a hook's request often enough that the trigger was dropped until the next."""

    kind = Kind.HOOK_REFUSED
    warning = True
    hook: str  # e.g. change-rest
    error: str


# --- the node's policy -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyDrift(Event):
    """No policy of this node carries its stable addresses (any longer)."""

    kind = Kind.POLICY_DRIFT
    warning = True
    policy_id: str | None  # the policy that speaks for the node, None when there is none
    differences: tuple[str, ...]  # e.g. "local_ip 10.244.1.7 (expected 10.96.0.12)"


@dataclass(frozen=True, kw_only=True)
class DuplicatePolicies(Event):
    """More than one policy carries this node's name and company."""

    kind = Kind.DUPLICATE_POLICIES
    warning = True
    count: int
    policy_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class PolicyMatches(Event):
    """After drift or duplicates, one policy carries the node's stable addresses again."""

    kind = Kind.POLICY_MATCHES
    policy_id: str | None
