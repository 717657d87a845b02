"""Which Kubernetes jobs run for which configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakekube import kube_settings

from sidecar.config import SettingsError
from sidecar.kube.jobs import kube_jobs
from sidecar.state import State


def test_off_outside_a_cluster_and_when_turned_off(tmp_path: Path) -> None:
    state = State()
    assert kube_jobs(kube_settings(tmp_path), state, {}, tmp_path / "none") == []
    assert not state.kube.enabled and state.kube.mode == "off"
    off = kube_settings(tmp_path, "--kube", "off")
    assert kube_jobs(off, state, {"KUBECONFIG": "/x"}, tmp_path) == []


def test_every_job_in_a_pod(tmp_path: Path) -> None:
    state = State()
    jobs = kube_jobs(kube_settings(tmp_path), state, {"KUBECONFIG": str(tmp_path / "kubeconfig")})
    assert [name for name, _ in jobs] == ["kube-identity", "kube-events", "kube-annotations"]
    assert state.kube.enabled and state.kube.mode == "kubeconfig" and state.kube.problem is None
    quiet = kube_settings(tmp_path, "--no-kube-events", "--no-kube-annotations")
    assert [n for n, _ in kube_jobs(quiet, State(), {"KUBECONFIG": "/x"})] == ["kube-identity"]


def test_missing_names(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--network-env-file: needs --service-name"):
        kube_settings(tmp_path, "--service-name", "")
    assert kube_settings(tmp_path, "--service-name", "", "--kube", "off").network_env_file is not None
    state = State()
    settings = kube_settings(tmp_path, "--pod-name", "")
    assert [n for n, _ in kube_jobs(settings, state, {"KUBECONFIG": "/x"})] == ["kube-identity"]
    assert state.kube.problems == {"pod": "config: POD_NAME (--pod-name) is not set: no Events, no annotations"}
    assert not state.kube.api_errors
