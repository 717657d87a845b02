"""Network identity: Service -> env file, stable, atomic, refreshed, and robust to API faults."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import structlog.testing
from fakekube import POD, SERVICE, FakeKube, client, kube_settings, node, service, until

from sidecar.backoff import Backoff
from sidecar.kube.health import Health
from sidecar.kube.identity import IdentityJob, compute, parse, render, write_atomic
from sidecar.state import KubeState


def job(fake: FakeKube, tmp_path: Path, *args: str) -> IdentityJob:
    settings = kube_settings(tmp_path, *args)
    state = KubeState()
    api = client(fake, tmp_path, settings, state)
    return IdentityJob(settings, state, api, Health(state), Backoff.doubling(0.05, 0.2))


def test_compute_from_each_kind_of_service(tmp_path: Path) -> None:
    settings = kube_settings(tmp_path, "--tcp-port", "32148", "--rest-port", "32149")
    values, problems = compute(service(), settings)
    assert values == {"OVERLAY_IP": "10.96.12.34", "ANYLOG_SERVER_PORT": "32148", "ANYLOG_REST_PORT": "32149",
                      "ANYLOG_BROKER_PORT": "32150"}
    assert problems == []
    lb = service(type="LoadBalancer", ingress=[{"ip": "203.0.113.10", "ipMode": "VIP"}])
    assert compute(lb, settings)[0]["EXTERNAL_IP"] == "203.0.113.10"
    assert compute(lb, settings)[0]["ANYLOG_REST_NODE_PORT"] == "32149"
    elb = service(type="LoadBalancer", ingress=[{"hostname": "a1b2c3.elb.us-east-1.amazonaws.com"}])
    assert compute(elb, settings)[0]["EXTERNAL_IP"] == "a1b2c3.elb.us-east-1.amazonaws.com"
    pending = service(type="LoadBalancer")
    assert "EXTERNAL_IP" not in compute(pending, settings)[0]
    node_port = service(type="NodePort")
    assert compute(node_port, settings, "198.51.100.7")[0]["EXTERNAL_IP"] == "198.51.100.7"
    assert "EXTERNAL_IP" not in compute(service(), settings, "198.51.100.7")[0]  # ClusterIP: no node port
    assert compute(service(external_ips=["192.0.2.5"]), settings)[0]["EXTERNAL_IP"] == "192.0.2.5"
    headless, headless_problems = compute(service(cluster_ip="None"), settings)
    assert "OVERLAY_IP" not in headless and "no ClusterIP" in headless_problems[0]


def test_compute_ports_by_target_and_mismatch(tmp_path: Path) -> None:
    settings = kube_settings(tmp_path, "--tcp-port", "32148", "--rest-port", "32149")
    ports = [{"name": "p1", "protocol": "TCP", "port": 32148, "targetPort": 32148},
             {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 32149},
             {"name": "broker", "protocol": "UDP", "port": 32150, "targetPort": 32150}]
    values, problems = compute(service(ports=ports), settings)
    assert values["ANYLOG_SERVER_PORT"] == "32148"  # found by target port
    assert "ANYLOG_REST_PORT" not in values  # 80 -> 32149: the node would bind 80
    assert "ANYLOG_BROKER_PORT" not in values  # UDP is not the broker
    assert len(problems) == 1 and "80 but targets 32149" in problems[0]


def test_rendered_file_is_sourced_by_a_shell(tmp_path: Path) -> None:
    values = {"OVERLAY_IP": "10.96.12.34", "EXTERNAL_IP": "a1b2.elb.amazonaws.com", "ANYLOG_REST_PORT": "32149"}
    path = tmp_path / "network.env"
    write_atomic(path, render(values, "Service edgelake/edgelake-operator"))
    assert parse(path.read_text()) == values
    out = subprocess.run(["sh", "-c", f'set -a; . "{path}"; set +a; env'], capture_output=True, text=True,
                         check=True).stdout
    assert "OVERLAY_IP=10.96.12.34" in out.splitlines() and "ANYLOG_REST_PORT=32149" in out.splitlines()


async def test_same_service_gives_the_same_file_after_restart(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    first = job(fake, tmp_path)
    assert await first.refresh() == first.settings.kube_period
    path = first.path
    content, inode = path.read_bytes(), path.stat().st_ino
    assert first.state.identity_written and first.state.identity["OVERLAY_IP"] == "10.96.12.34"
    await first.refresh()
    assert path.stat().st_ino == inode  # unchanged values: not rewritten
    restarted = job(fake, tmp_path)  # a new process: new client, new state
    await restarted.refresh()
    assert path.read_bytes() == content
    assert b"ANYLOG_SERVER_PORT=32148\n" in content


async def test_service_missing_then_created(fake: FakeKube, tmp_path: Path) -> None:
    identity = job(fake, tmp_path)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert await identity.refresh() < 1  # backing off, short in this test
    state = identity.state
    assert not state.identity_written and not identity.path.exists()
    assert state.problems["identity"] == f'not-found: services "{SERVICE}" not found'
    assert state.api_errors["not-found"] == 3
    assert [e["event"] for e in logs].count("kube_degraded") == 1  # said once, not at every retry
    fake.put(service())
    await identity.refresh()
    assert state.identity_written and state.problem is None
    assert parse(identity.path.read_text())["OVERLAY_IP"] == "10.96.12.34"


async def test_load_balancer_address_appears_later(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service(type="LoadBalancer"))
    identity = job(fake, tmp_path)
    assert await identity.refresh() < 1  # pending: look again soon, not after --kube-period
    assert identity.state.identity_written  # the ClusterIP is known already
    assert "EXTERNAL_IP" not in parse(identity.path.read_text())
    fake.put(service(type="LoadBalancer", ingress=[{"ip": "203.0.113.10", "ipMode": "VIP"}]))
    assert await identity.refresh() == identity.settings.kube_period
    assert parse(identity.path.read_text())["EXTERNAL_IP"] == "203.0.113.10"


async def test_node_external_ip_is_read_only_when_allowed(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service(type="NodePort"))
    fake.put(node())
    await job(fake, tmp_path).refresh()
    assert not fake.received(resource="nodes")
    identity = job(fake, tmp_path, "--node-external-ip")
    await identity.refresh()
    assert identity.state.identity["EXTERNAL_IP"] == "198.51.100.7"
    assert [r.path for r in fake.received(resource="nodes")] == ["/api/v1/nodes/worker-1"]
    assert fake.received("get", "pods")[0].name == POD


async def test_previous_file_is_kept_while_the_api_is_down(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    await job(fake, tmp_path).refresh()
    fake.stop()
    restarted = job(fake, tmp_path)  # the container restarts in the same pod; the API is down
    task = asyncio.create_task(restarted.run())
    try:
        await until(lambda: "identity" in restarted.state.problems)
        state = restarted.state
        assert state.identity_written and state.identity_source == "file"
        assert state.identity["OVERLAY_IP"] == "10.96.12.34"
        assert state.problems["identity"].startswith("unreachable")
        fake.start()
        await until(lambda: state.identity_source == "service" and state.problem is None)
    finally:
        task.cancel()


async def test_api_down_at_start_then_up(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    fake.stop()
    identity = job(fake, tmp_path)
    task = asyncio.create_task(identity.run())
    try:
        await until(lambda: identity.state.api_errors["unreachable"] >= 2)
        assert not identity.state.identity_written
        fake.start()
        await until(lambda: identity.state.identity_written)
        assert identity.path.exists()
    finally:
        task.cancel()


def test_env_file_is_never_half_written(tmp_path: Path) -> None:
    """Readers in a loop while the file changes see one whole version or the other, never a mix."""
    path = tmp_path / "network.env"
    versions = [render({"OVERLAY_IP": f"10.96.0.{i}", "EXTERNAL_IP": f"203.0.113.{i}"}, "Service x/y")
                + "# padding to vary the size\n" * (300 * i) for i in range(6)]
    write_atomic(path, versions[0])
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            text = path.read_text()
            (seen if text in versions else bad).append(text)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(600):
        write_atomic(path, versions[i % len(versions)])
    stop.set()
    for t in threads:
        t.join()
    assert not bad, f"{len(bad)} partial reads, e.g. {bad[0][:200]!r}"
    assert len(seen) > 100 and len(set(seen)) > 1  # the readers did overlap the changes
    assert not list(tmp_path.glob(".network.env.*"))  # no temp file left behind
