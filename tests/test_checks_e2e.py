"""The real sidecar process checking a stand-in node (and real mosquitto): probes, metrics, `check`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, cli
from tests.fakenode import FakeNode
from tests.helpers import promtool_check

FALLBACK = str(ROOT / "examples" / "deployment-scripts")


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with FakeNode("el-test") as fake:
        yield fake


def node_args(node: FakeNode, tmp_path: Path, *extra: str) -> list[str]:
    fast = []
    for name in ("tcp", "rest", "broker"):
        fast += [f"--{name}-interval", "0.3", f"--{name}-failure-threshold", "2"]
    return ["--fallback-dir", FALLBACK, "--link", str(tmp_path / "vol" / "scripts"), "--check-jitter", "0",
            "--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
            "--broker-port", str(node.broker.port), *fast, *extra]


def test_probes_follow_the_node(node: FakeNode, tmp_path: Path, sidecar_factory: Any) -> None:
    sc = sidecar_factory(node_args(node, tmp_path, "--node-livez-after", "1"))
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, what="ready")
    assert sc.get("/startupz") == (200, "ok\n")
    assert sc.get("/node/livez")[0] == 200
    checks = sc.status()["checks"]
    assert {name: c["up"] for name, c in checks.items()} == {"tcp": True, "rest": True, "broker": True}
    assert checks["rest"]["node_name"] == f"el-test@127.0.0.1:{node.tcp.port}"
    assert checks["tcp"]["recent"][0]["reason"] == "ok"

    node.rest.close()
    sc.wait_for(lambda: sc.get("/readyz")[0] == 503, what="not ready")
    code, body = sc.get("/readyz")
    assert "[-]rest failed: refused, " in body and "[+]tcp ok" in body
    assert sc.get("/livez")[0] == 200  # the node's trouble is never the sidecar's
    sc.wait_for(lambda: sc.get("/node/livez")[0] == 503, what="node livez failing")
    assert "[-]node-rest failed: refused for" in sc.get("/node/livez")[1]

    node.rest.open()
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, what="ready again")
    assert sc.get("/node/livez") == (200, "ok\n")
    code, text = sc.get("/metrics")
    assert code == 200
    promtool_check(text)
    assert 'edgelake_sidecar_check_up{check="rest"} 1.0' in text
    assert 'edgelake_sidecar_component_up{component="check-broker"} 1.0' in text
    assert node.rest.max_open == 1 and node.rest.pings == 0
    events = [json.loads(line) for line in sc.output().splitlines() if line.startswith("{")]
    assert [e["check"] for e in events if e["event"] == "check_down"] == ["rest"]
    assert [e["event"] for e in events if e["event"].startswith("node_livez")] == ["node_livez_failing",
                                                                                  "node_livez_ok"]


def test_default_checks_leave_the_node_logs_alone(node: FakeNode, tmp_path: Path, sidecar_factory: Any) -> None:
    """With default check settings the node's error log gets nothing, its event log one line at start."""
    sc = sidecar_factory(["--fallback-dir", FALLBACK, "--link", str(tmp_path / "vol" / "scripts"),
                          "--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
                          "--broker-port", str(node.broker.port)])
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, what="ready")

    def runs() -> dict[str, int]:
        return {name: sum(c["results"].values()) for name, c in sc.status()["checks"].items()}

    sc.wait_for(lambda: min(runs().values()) >= 4, timeout=60, what="each check to run four times")
    assert list(node.log.events) == ["(ok) get status"]  # the node's name, learned once
    assert node.log.error_added == 0
    assert node.tcp.accepted == 0  # the tcp check read the LISTEN state: no connection at all
    assert sc.status()["checks"]["rest"]["node_name"] == f"el-test@127.0.0.1:{node.tcp.port}"


def test_broker_check_against_mosquitto(mosquitto: int, tmp_path: Path, sidecar_factory: Any) -> None:
    sc = sidecar_factory(["--fallback-dir", FALLBACK, "--link", str(tmp_path / "vol" / "scripts"),
                          "--broker-port", str(mosquitto), "--broker-interval", "0.3"])
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, what="ready")
    assert sc.get("/readyz?verbose")[1] == "[+]scripts ok\n[+]broker ok\nreadyz check passed\n"
    assert sc.status()["checks"]["broker"]["results"]["ok"] >= 1


def test_check_command(node: FakeNode) -> None:
    ports = ["--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
             "--broker-port", str(node.broker.port)]
    done = cli(["check", *ports])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "TARGET", "RESULT", "REASON", "TIME", "DETAIL"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["tcp", f"127.0.0.1:{node.tcp.port}", "ok", "ok"],
        ["rest", f"127.0.0.1:{node.rest.port}", "ok", "ok"],
        ["broker", f"127.0.0.1:{node.broker.port}", "ok", "ok"],
    ]
    assert f"el-test@127.0.0.1:{node.tcp.port}" in lines[2]

    node.broker.close()
    done = cli(["check", *ports])
    assert done.returncode == 1
    assert done.stdout.splitlines()[3].split()[2:4] == ["FAIL", "refused"]

    done = cli(["check"])
    assert done.returncode == 1 and "no check is enabled" in done.stderr


def test_check_command_takes_the_node_env(node: FakeNode) -> None:
    done = cli(["check"], env={"ANYLOG_REST_PORT": str(node.rest.port)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["rest"]
