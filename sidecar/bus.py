"""A tiny in-process publish/subscribe bus for the notable things that happen (``sidecar.events``).

Publishers never block: each subscriber has a bounded queue and, when it is full, the oldest
event is dropped (a slow consumer, such as the Kubernetes API, must not stall a sync).
"""

from __future__ import annotations

import asyncio

from sidecar.events import Event


class Bus:
    """Fan-out of events to subscribers with bounded queues."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[Event]] = []

    def subscribe(self, maxsize: int = 256) -> asyncio.Queue[Event]:
        """A new queue that receives every event published from now on."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        """Stop delivering to ``queue``."""
        if queue in self._queues:
            self._queues.remove(queue)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber without waiting."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
