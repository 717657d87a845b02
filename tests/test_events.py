"""The event model: every kind has exactly one class, and the bus delivers them without blocking."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar.bus import Bus
from sidecar.events import CheckDown, CheckUp, Event, Kind, ScriptsPublished, ScriptsSeeded, SyncFailed


def _concrete(cls: type[Event]) -> list[type[Event]]:
    found: list[type[Event]] = []
    for sub in cls.__subclasses__():
        if "kind" in vars(sub):
            found.append(sub)
        found.extend(_concrete(sub))
    return found


def test_every_kind_has_exactly_one_class() -> None:
    classes = _concrete(Event)
    kinds = [cls.kind for cls in classes]
    assert sorted(kinds) == sorted(Kind), "each Kind member needs one Event subclass, and no kind two"
    for cls in classes:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]


def test_events_are_immutable_and_typed() -> None:
    seeded = ScriptsSeeded(message="m", revision="abc", source="git", path="/s/abc")
    assert isinstance(seeded, ScriptsPublished) and seeded.kind == "scripts-seeded" and not seeded.warning
    assert SyncFailed(message="m", error="e").warning and not CheckUp(message="m", check="rest").warning
    with pytest.raises(dataclasses.FrozenInstanceError):
        seeded.revision = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CheckDown(message="m", check="rest")  # type: ignore[call-arg]  # the payload is required


def test_a_full_queue_drops_the_oldest_and_never_blocks() -> None:
    bus = Bus()
    queue = bus.subscribe(maxsize=2)
    gone = bus.subscribe()
    bus.unsubscribe(gone)
    for n in range(3):
        bus.publish(CheckUp(message=str(n), check="tcp"))
    assert [queue.get_nowait().message for _ in range(2)] == ["1", "2"]
    assert gone.empty()
