"""Which Kubernetes jobs this configuration runs; the app supervises each as a component."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from sidecar import logs
from sidecar.config import Settings
from sidecar.kube.annotations import AnnotationsJob
from sidecar.kube.client import IN_CLUSTER_DIR, KubeClient, detect_mode
from sidecar.kube.events import EventsJob
from sidecar.kube.health import Health
from sidecar.kube.identity import IdentityJob
from sidecar.state import State

log = logs.get("kube")

Job = tuple[str, Callable[[], Awaitable[None]]]


def kube_jobs(settings: Settings, state: State, environ: Mapping[str, str] | None = None,
              sa_dir: Path = IN_CLUSTER_DIR) -> list[Job]:
    """``(name, run)`` of each enabled job; none when Kubernetes is off or absent.

    Only the mode is decided here (from the environment and one file test); the official client is
    imported and configured by the jobs' first request, off the event loop.
    """
    environ = os.environ if environ is None else environ
    mode = detect_mode(settings.kube, environ, sa_dir)
    if mode is None:
        if settings.network_env_file is not None:
            log.info("kube_off", detail="no in-cluster configuration or KUBECONFIG: no network identity written")
        return []
    kube = state.kube
    kube.enabled, kube.mode = True, mode
    client = KubeClient(settings, kube, mode, environ, sa_dir)
    health = Health(kube)
    jobs: list[Job] = []
    if settings.network_env_file is not None:  # with --service-name: the settings check both
        jobs.append(("kube-identity", IdentityJob(settings, kube, client, health).run))
    if settings.kube_events or settings.kube_annotations:
        if not settings.pod_name:
            health.fail("pod", "config", "POD_NAME (--pod-name) is not set: no Events, no annotations", api=False)
            return jobs
        if settings.kube_events:
            jobs.append(("kube-events", EventsJob(settings, state, client, health).run))
        if settings.kube_annotations:
            jobs.append(("kube-annotations", AnnotationsJob(settings, state, client, health).run))
    return jobs
