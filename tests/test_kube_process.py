"""The real sidecar process against the fake API server: identity, secrets, and probes under API faults."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fakekube import NAMESPACE, POD, SERVICE, FakeKube, service

from sidecar.kube.identity import parse

pytest.importorskip("sidecar.scripts.sync", reason="the sidecar's run command needs the scripts component")

ROOT = Path(__file__).resolve().parent.parent


def start(sidecar_factory: Any, fake: FakeKube, tmp_path: Path, *args: str, wait_live: bool = True) -> Any:
    fake.put(service())
    env = {"SIDECAR_KUBE": "auto", "KUBECONFIG": str(fake.kubeconfig(tmp_path / "kube")), "POD_NAME": POD,
           "POD_NAMESPACE": NAMESPACE}
    return sidecar_factory(["--fallback-dir", str(ROOT / "examples" / "deployment-scripts"),
                            "--link", str(tmp_path / "app" / "scripts" / "deployment-scripts"),
                            "--service-name", SERVICE, "--network-env-file", str(tmp_path / "shared" / "network.env"),
                            "--rest-port", "32149", *args], env=env, wait_live=wait_live)


def test_identity_events_and_annotations_from_a_real_process(sidecar_factory: Any, fake: FakeKube,
                                                              tmp_path: Path) -> None:
    sc = start(sidecar_factory, fake, tmp_path, "--log-level", "debug")  # not even debug lines show the token
    env_file = tmp_path / "shared" / "network.env"
    sc.wait_for(lambda: sc.status()["kube"]["identity_written"], 60, "identity")
    assert parse(env_file.read_text())["OVERLAY_IP"] == "10.96.12.34"
    kube = sc.status()["kube"]
    assert (kube["enabled"], kube["mode"], kube["namespace"]) == (True, "kubeconfig", NAMESPACE)
    sc.wait_for(lambda: any(e["reason"] == "ScriptsSeeded" for e in fake.events()), 60, "ScriptsSeeded Event")
    sc.wait_for(lambda: "sidecar.edgelake.io/scripts-revision" in (fake.get("pods", POD) or {})["metadata"]
                ["annotations"], 20, "annotations")
    # Each job reports what it waits for through the handle its supervisor gave it.
    idle = {"kube-identity": "next read of the Service", "kube-events": "bus events",
            "kube-annotations": "a published revision"}
    sc.wait_for(lambda: {name: sc.status()["components"][name]["doing"].get("main", {}).get("doing")
                         for name in idle} == idle, 20, "the jobs idle, saying what they wait for")
    status_text = sc.get("/status")[1]
    assert sc.stop() == 0
    assert fake.token not in sc.output() and fake.token not in status_text


def test_probes_stay_up_while_the_api_is_slow_down_or_back(sidecar_factory: Any, fake: FakeKube,
                                                           tmp_path: Path) -> None:
    fake.delay = 30.0
    sc = start(sidecar_factory, fake, tmp_path, "--kube-timeout", "5", "--kube-period", "1")

    def probe_fast() -> None:
        # A probe that waited on the API would wait out its 5 s timeout: half of that is a bound
        # from the design that a busy machine still meets, not a speed figure.
        started = time.monotonic()
        assert sc.get("/livez")[0] == 200
        assert time.monotonic() - started < 2.5

    sc.wait_for(lambda: "timeout" in json.dumps(sc.status()["kube"]["problems"]), 60, "timeout reported")
    for _ in range(10):
        probe_fast()
    fake.delay = 0
    sc.wait_for(lambda: sc.status()["kube"]["identity_written"], 90, "identity after the slow API")
    fake.stop()  # the API goes away later
    sc.wait_for(lambda: "unreachable" in json.dumps(sc.status()["kube"]["problems"]), 90, "unreachable reported")
    probe_fast()
    fake.start()
    sc.wait_for(lambda: sc.status()["kube"]["problem"] is None, 90, "recovery")
    probe_fast()
    assert sc.stop() == 0
    degraded = [line for line in sc.output().splitlines() if '"kube_degraded"' in line]
    # Said once per job and kind of problem, not at every retry.
    assert len(degraded) <= 6, degraded


def test_a_hung_api_request_does_not_delay_shutdown(sidecar_factory: Any, fake: FakeKube, tmp_path: Path) -> None:
    fake.delay = 30.0
    sc = start(sidecar_factory, fake, tmp_path, "--kube-timeout", "20")
    sc.wait_for(lambda: fake.received("get", "services"), 60, "a request in flight")
    # stop() SIGKILLs after 10 s, half the 20 s the request had left, and a killed sidecar does not
    # exit 0. How fast it stops is measured by bench/bench_stop.py, not asserted here.
    assert sc.stop(timeout=10) == 0
