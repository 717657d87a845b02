"""Pod annotations with the scripts revision and source, so ``kubectl get pod -o yaml`` tells which
scripts a node runs. One merge patch per change; nothing is sent when the values are already there."""

from __future__ import annotations

from sidecar import logs, progress
from sidecar.backoff import Backoff, Retries
from sidecar.config import Settings
from sidecar.events import ScriptsPublished
from sidecar.kube.client import MERGE_PATCH, KubeClient, KubeError
from sidecar.kube.health import API_BACKOFF, Health, next_event
from sidecar.state import State

log = logs.get("kube.annotations")

PREFIX = "sidecar.edgelake.io/"
REVISION = PREFIX + "scripts-revision"
SOURCE = PREFIX + "scripts-source"


class AnnotationsJob:
    """Keeps the pod's annotations equal to the published scripts' revision and source."""

    def __init__(self, settings: Settings, state: State, client: KubeClient, health: Health,
                 backoff: Backoff = API_BACKOFF) -> None:
        self.settings = settings
        self.state = state
        self.client = client
        self.health = health
        self.queue = state.bus.subscribe()
        self.retries = Retries(backoff)
        self.wanted: dict[str, str] = {}

    def _want(self, revision: object, source: object) -> None:
        for key, value in ((REVISION, revision), (SOURCE, source)):
            if isinstance(value, str) and value:
                self.wanted[key] = value

    async def run(self) -> None:
        """Never returns: patches when the scripts change, retries with backoff when the API fails."""
        scripts = self.state.scripts
        if scripts.published:
            self._want(scripts.revision, scripts.source)
        report = progress.current()
        retry_in: float | None = None
        while True:
            if self.wanted and self.wanted != self.state.kube.annotations:
                report.working("patching the pod")
                retry_in = await self._patch()
            report.waiting("a published revision" if retry_in is None else "retry after an API error", retry_in)
            event = await next_event(self.queue, retry_in)
            if isinstance(event, ScriptsPublished):
                # The event is what was just published; state.scripts says the same a moment later.
                self._want(event.revision, event.source)

    async def _patch(self) -> float | None:
        """One patch; the seconds until a retry, or None when done."""
        wanted = dict(self.wanted)
        try:
            await self.client.request("PATCH", "pods", self.settings.pod_name or "",
                                      {"metadata": {"annotations": wanted}}, MERGE_PATCH)
        except KubeError as exc:
            self.health.fail("annotations", exc.reason, str(exc))
            return self.retries.failed()
        self.state.kube.annotations = wanted
        self.health.ok("annotations")
        self.retries.reset()
        log.info("pod_annotated", **{k.removeprefix(PREFIX): v for k, v in wanted.items()})
        return None
