"""The policy check against the stand-in node and the loopback API server: verdicts, their changes, Events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from fakekube import SERVICE, FakeKube, client, kube_settings, service, until
from fakenode import FakeNode
from fakepolicy import OLD_POD_IP, PolicyBook, policy

from sidecar import health
from sidecar.backoff import Backoff
from sidecar.events import DuplicatePolicies, Event, PolicyDrift, PolicyMatches
from sidecar.kube.events import EventsJob
from sidecar.kube.health import Health
from sidecar.kube.identity import IdentityJob
from sidecar.noderest import NodeRest
from sidecar.policy.runner import PolicyReader
from sidecar.state import CheckState, State

CLUSTER_IP = "10.96.12.34"  # the Service's address in fakekube.service()
NEW_CLUSTER_IP = "10.96.40.2"
MATCHING = policy("operator", "el-op", local_ip=CLUSTER_IP, id="match")
DRIFTED = policy("operator", "el-op", local_ip=OLD_POD_IP, id="drifted", date="2026-11-01T00:00:00.000000Z")


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with FakeNode("el-op") as stand_in:
        yield stand_in


class Pod:
    """One sidecar's state, its identity and Events jobs against fakekube, and its policy reader."""

    def __init__(self, fake: FakeKube, node: FakeNode, tmp_path: Path, *args: str) -> None:
        if fake.get("services", SERVICE) is None:
            fake.put(service())
        self.state = State()
        self.settings = kube_settings(tmp_path, "--node-type", "operator", "--rest-port", str(node.rest.port),
                                      "--policy-delay", "0", *args)
        api = client(fake, tmp_path, self.settings, self.state.kube)
        self.identity = IdentityJob(self.settings, self.state.kube, api, Health(self.state.kube),
                                    Backoff.doubling(0.05, 0.2))
        self.events = EventsJob(self.settings, self.state, api, Health(self.state.kube),
                                backoff=Backoff.doubling(0.05, 0.2))
        self.reader = PolicyReader(self.settings, self.state, NodeRest("127.0.0.1", node.rest.port), tick=0.02)
        self.published = self.state.bus.subscribe()
        self.state.checks["rest"] = CheckState("rest")

    def node_up(self, up: bool = True) -> None:
        """What the rest check writes when the node answers (or stops answering)."""
        rest = self.state.checks["rest"]
        rest.up = up
        rest.transitions += 1

    def kinds(self) -> list[type[Event]]:
        """The events published since the last call."""
        out = []
        while not self.published.empty():
            out.append(type(self.published.get_nowait()))
        return out


async def started(fake: FakeKube, node: FakeNode, tmp_path: Path, *policies: dict[str, Any],
                  args: tuple[str, ...] = ("--node-name", "el-op")) -> tuple[Pod, PolicyBook]:
    """A pod whose identity file is written, beside a node that holds ``policies``."""
    book: PolicyBook = node.policies
    book.set(*policies)
    pod_ = Pod(fake, node, tmp_path, *args)
    await pod_.identity.refresh()
    return pod_, book


def blockchain_lines(node: FakeNode) -> list[str]:
    return [line for line in node.counters()["event_log"] if "blockchain get" in line]


@pytest.mark.parametrize(("policies", "verdict", "matches", "count", "events"), [
    ((MATCHING,), "match", True, 1, []),
    ((DRIFTED,), "drift", False, 1, [PolicyDrift]),
    ((DRIFTED, MATCHING), "duplicates", True, 2, [DuplicatePolicies]),
    ((), "missing", False, 0, [PolicyDrift]),
])
async def test_each_verdict(fake: FakeKube, node: FakeNode, tmp_path: Path, policies: tuple[dict[str, Any], ...],
                            verdict: str, matches: bool, count: int, events: list[type[Event]]) -> None:
    pod_, book = await started(fake, node, tmp_path, *policies,
                               policy("operator", "el-other", local_ip=CLUSTER_IP, id="other"))
    await pod_.reader.read_once()
    p = pod_.state.policy
    assert (p.verdict, p.matches, p.count, p.last_error) == (verdict, matches, count, None)
    assert p.expected == {"local_ip": CLUSTER_IP, "port": "32148", "rest_port": "32149", "broker_port": "32150"}
    assert p.expected_source == "kubernetes"
    assert pod_.kinds() == events
    assert book.reads == ['blockchain get operator where name = "el-op"']
    assert len(blockchain_lines(node)) == 1  # one event-log line per read
    assert node.counters()["error_log"] == []
    status = p.as_dict()
    assert status["duplicates"] is (count > 1)
    if verdict == "drift":
        assert status["id"] == "drifted"
        assert status["policy"]["differences"] == [{"field": "local_ip", "policy": OLD_POD_IP, "expected": CLUSTER_IP}]
        assert p.summary == f"policy drifted differs: local_ip {OLD_POD_IP} (expected {CLUSTER_IP})"
    await pod_.reader.read_once()  # the same verdict again: no new event
    assert pod_.kinds() == []


async def test_verdict_follows_the_service_address_and_the_node(fake: FakeKube, node: FakeNode,
                                                                tmp_path: Path) -> None:
    """The story the check exists for: the Service changes, the node restarts and declares again."""
    pod_, book = await started(fake, node, tmp_path, MATCHING)
    tasks = [asyncio.create_task(pod_.reader.run()), asyncio.create_task(pod_.events.run())]
    p = pod_.state.policy
    try:
        assert p.verdict is None and p.next_read_time is None and book.reads == []  # the node is not up yet
        pod_.node_up()
        await until(lambda: p.verdict == "match")
        # The Service is recreated with another ClusterIP: the identity file changes, the node still
        # runs with the old address until it restarts, so its policy no longer carries the stable one.
        fake.put(service(cluster_ip=NEW_CLUSTER_IP))
        await pod_.identity.refresh()
        await until(lambda: p.verdict == "drift")
        assert p.summary == f"policy match differs: local_ip {CLUSTER_IP} (expected {NEW_CLUSTER_IP})"
        await until(lambda: [e["reason"] for e in fake.events()] == ["PolicyDrift"])
        # The node restarts with the new address, finds no policy with it and declares a second one.
        pod_.node_up(False)
        await until(lambda: p.next_read_time is None)
        book.set(MATCHING, policy("operator", "el-op", local_ip=NEW_CLUSTER_IP, id="again",
                                  date="2026-12-01T00:00:00.000000Z"))
        pod_.node_up()
        await until(lambda: p.verdict == "duplicates")
        assert (p.matches, p.count, p.as_dict()["id"]) == (True, 2, "again")
        # A person drops the stale policy with the node's own commands: one policy, matching.
        book.set(policy("operator", "el-op", local_ip=NEW_CLUSTER_IP, id="again"))
        pod_.node_up(False)
        await until(lambda: p.next_read_time is None)
        pod_.node_up()
        await until(lambda: p.verdict == "match")
        await until(lambda: len(fake.events()) == 3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert pod_.kinds() == [PolicyDrift, DuplicatePolicies, PolicyMatches]
    events = {e["reason"]: e for e in fake.events()}
    assert sorted(events) == ["DuplicatePolicies", "PolicyDrift", "PolicyMatches"]
    assert events["PolicyDrift"]["type"] == "Warning" and events["DuplicatePolicies"]["type"] == "Warning"
    assert events["PolicyMatches"]["type"] == "Normal"
    assert "2 policies carry this node's name and company (again, match)" in events["DuplicatePolicies"]["message"]
    assert node.rest.max_open <= 1
    assert len(book.reads) == len(blockchain_lines(node)) == 4  # up, address change, restart, restart


async def test_without_kubernetes_the_shared_environment_is_the_identity(node: FakeNode, tmp_path: Path) -> None:
    from sidecar.config import load

    node.policies.set(DRIFTED, policy("operator", "el-op", company="Acme Edge", local_ip="192.0.2.5", port=32548,
                                      rest_port=32549, broker_port=None, id="env"))
    env = {"NODE_TYPE": "master-operator", "NODE_NAME": "el-op", "COMPANY_NAME": "Acme Edge",
           "OVERLAY_IP": "192.0.2.5", "ANYLOG_SERVER_PORT": "32548", "ANYLOG_REST_PORT": str(node.rest.port)}
    settings = load(["run", "--fallback-dir", str(tmp_path), "--kube", "off"], env)
    state = State()
    reader = PolicyReader(settings, state, NodeRest("127.0.0.1", node.rest.port))
    await reader.read_once()
    p = state.policy
    assert p.expected_source == "environment"
    assert p.expected == {"local_ip": "192.0.2.5", "port": "32548", "rest_port": str(node.rest.port)}
    assert (p.verdict, p.count, p.as_dict()["id"]) == ("drift", 1, "env")  # other company's policy not counted
    assert p.as_dict()["policy"]["differences"] == [{"field": "rest_port", "policy": "32549",
                                                     "expected": str(node.rest.port)}]


async def test_the_name_the_node_reports_is_used_without_node_name(fake: FakeKube, node: FakeNode,
                                                                   tmp_path: Path) -> None:
    pod_, book = await started(fake, node, tmp_path, MATCHING, args=())
    await pod_.reader.read_once()
    assert pod_.state.policy.last_error == "the node's name is unknown: set NODE_NAME"
    assert book.reads == []  # nothing to ask without a name
    pod_.state.checks["rest"].node_name = "el-op@127.0.0.1:32148"
    await pod_.reader.read_once()
    assert (pod_.state.policy.verdict, pod_.state.policy.name) == ("match", "el-op")


async def test_a_refused_or_garbled_answer_is_an_error_and_keeps_the_verdict(fake: FakeKube, node: FakeNode,
                                                                             tmp_path: Path) -> None:
    pod_, book = await started(fake, node, tmp_path, MATCHING)
    await pod_.reader.read_once()
    p = pod_.state.policy
    assert p.verdict == "match"
    book.answer = lambda command: (200, "Blockchain file not found")  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        await pod_.reader.read_once()
        await pod_.reader.read_once()
    assert p.verdict == "match" and p.matches is True  # an unusable answer never counts as "no policy"
    assert p.last_error is not None and p.last_error.startswith("bad-answer: not JSON")
    assert p.reads == {"ok": 1, "error": 2}
    assert [e["event"] for e in logs].count("policy_read_failed") == 1  # said once, not at every read
    node.stop()
    await pod_.reader.read_once()
    assert p.last_error is not None and p.last_error.startswith("refused")
    assert pod_.kinds() == []


async def test_readiness_waits_for_a_matching_policy_only_when_asked(fake: FakeKube, node: FakeNode,
                                                                     tmp_path: Path) -> None:
    book: PolicyBook = node.policies
    book.set(DRIFTED)
    gated = Pod(fake, node, tmp_path, "--node-name", "el-op", "--ready-checks", "policy")
    reporting = Pod(fake, node, tmp_path, "--node-name", "el-op")
    for pod_ in (gated, reporting):
        pod_.state.scripts.published = True
        await pod_.identity.refresh()
    assert health.readiness(gated.settings, gated.state)[-1] == health.Part("policy", False, "not read yet")
    await gated.reader.read_once()
    await reporting.reader.read_once()
    part = health.readiness(gated.settings, gated.state)[-1]
    assert not part.ok and part.reason.startswith("policy drifted differs: local_ip")
    assert "policy" not in [p.name for p in health.readiness(reporting.settings, reporting.state)]
    book.set(MATCHING)
    await gated.reader.read_once()
    assert health.all_ok(health.readiness(gated.settings, gated.state))


async def test_metrics_show_the_verdict(fake: FakeKube, node: FakeNode, tmp_path: Path) -> None:
    from sidecar.metrics import Exposition

    pod_, _ = await started(fake, node, tmp_path, DRIFTED, MATCHING)
    text = Exposition(pod_.settings, pod_.state).render().decode()
    assert "node_policy_matches" not in text  # unknown before the first read, not "0"
    await pod_.reader.read_once()
    text = Exposition(pod_.settings, pod_.state).render().decode()
    assert "edgelake_sidecar_node_policy_matches 1.0" in text
    assert "edgelake_sidecar_node_policies 2.0" in text
    assert 'edgelake_sidecar_node_policy_reads_total{result="ok"} 1.0' in text


def test_the_running_sidecar_reads_reports_and_gates_on_the_policy(tmp_path: Path, sidecar_factory: Any) -> None:
    """The whole process: the component starts from the settings, reads after the node comes up, and
    reads again after the node restarts; /status, /metrics and /readyz follow."""
    from tests.conftest import ROOT, cli

    with FakeNode("el-op") as node:
        def declared(local_ip: str) -> dict[str, Any]:
            return policy("operator", "el-op", local_ip=local_ip, port=node.tcp.port, rest_port=node.rest.port,
                          broker_port=None, id=local_ip)

        book: PolicyBook = node.policies
        book.set(declared("192.0.2.5"))
        sc = sidecar_factory(
            ["--fallback-dir", str(ROOT / "examples" / "deployment-scripts"), "--link", str(tmp_path / "vol" / "s"),
             "--kube", "off", "--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
             "--rest-interval", "0.3", "--rest-failure-threshold", "1", "--check-jitter", "0",
             "--policy-delay", "0", "--ready-checks", "rest,policy"],
            env={"NODE_TYPE": "operator", "NODE_NAME": "el-op", "OVERLAY_IP": "192.0.2.5"})
        sc.wait_for(lambda: sc.status()["node"]["policy"]["verdict"] == "match", what="policy match")
        sc.wait_for(lambda: sc.get("/readyz")[0] == 200, what="ready")
        assert "edgelake_sidecar_node_policy_matches 1.0" in sc.get("/metrics")[1]
        # The node restarts and, as a node without a stable address would, declares itself anew.
        node.rest.close()
        sc.wait_for(lambda: sc.status()["checks"]["rest"]["up"] is False, what="rest down")
        book.set(declared(OLD_POD_IP))
        node.rest.open()
        sc.wait_for(lambda: sc.status()["node"]["policy"]["verdict"] == "drift", what="policy drift")
        code, body = sc.get("/readyz?verbose")
        assert code == 503
        assert f"[-]policy failed: policy {OLD_POD_IP} differs: local_ip {OLD_POD_IP} (expected 192.0.2.5)" in body
        assert "edgelake_sidecar_node_policy_matches 0.0" in sc.get("/metrics")[1]
        summary = cli(["status", "--http-port", str(sc.port)]).stdout
        assert f"policy:   drift: policy {OLD_POD_IP} differs: local_ip {OLD_POD_IP}" in summary
        assert len(book.reads) == 2


async def test_a_node_that_refuses_the_read_gets_no_verdict(fake: FakeKube, node: FakeNode, tmp_path: Path) -> None:
    pod_, book = await started(fake, node, tmp_path, MATCHING)
    book.answer = lambda command: (400, '{"err_code": 9, "err_text": "Blockchain file not found"}')  # type: ignore
    await pod_.reader.read_once()
    p = pod_.state.policy
    assert (p.verdict, p.matches, p.reads) == (None, None, {"error": 1})
    assert p.last_error == "HTTP 400: err_code 9: Blockchain file not found"
    assert health.policy_part(pod_.state) == health.Part(
        "policy", False, "not read yet (last: HTTP 400: err_code 9: Blockchain file not found)")
