"""/startupz, /readyz, /node/livez and /metrics through the real HTTP server, fed by real check runners."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sidecar import config, health
from sidecar.checks.runner import CheckRunner, CheckSpec
from sidecar.http.routes import Endpoints
from sidecar.http.server import HttpServer
from sidecar.noderest import NodeRest
from sidecar.state import State
from tests.fakenode import FakeNode
from tests.helpers import promtool_check


def settings_for(node: FakeNode | None, tmp: Path, *extra: str) -> config.Settings:
    args = ["run", "--fallback-dir", str(tmp), "--link", str(tmp / "link"), "--check-jitter", "0"]
    if node is not None:
        args += ["--tcp-port", str(node.tcp.port), "--rest-port", str(node.rest.port),
                 "--broker-port", str(node.broker.port)]
    return config.load([*args, *extra], environ={})


@contextlib.asynccontextmanager
async def serving(settings: config.Settings, state: State) -> AsyncIterator[int]:
    server = HttpServer(Endpoints(settings, state).handle)
    port = await server.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        await server.stop()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def runners(settings: config.Settings, state: State) -> dict[str, CheckRunner]:
    client = NodeRest(settings.node_host, settings.rest_port) if settings.rest_port is not None else None
    return {n: CheckRunner(CheckSpec.from_settings(settings, n), state, client=client)
            for n in settings.enabled_checks()}


async def test_startupz_waits_for_scripts_and_identity(tmp_path: Path) -> None:
    state = State()
    settings = settings_for(None, tmp_path, "--network-env-file", str(tmp_path / "net.env"),
                            "--service-name", "svc")
    async with serving(settings, state) as port:
        assert await get(port, "/startupz") == (503, "[-]scripts failed: not published yet\nstartupz check failed\n")
        state.scripts.published = True
        assert await get(port, "/startupz") == (200, "ok\n")  # kube not in use: no identity to wait for
        state.kube.enabled = True
        status, body = await get(port, "/startupz")
        assert status == 503 and "[-]network-identity failed" in body and "[+]scripts ok" in body
        state.kube.identity_written = True
        assert await get(port, "/startupz?verbose") == (
            200, "[+]scripts ok\n[+]network-identity ok\nstartupz check passed\n")


async def test_readyz_flips_exactly_at_the_thresholds(node: FakeNode, tmp_path: Path) -> None:
    state = State()
    settings = settings_for(node, tmp_path, "--rest-failure-threshold", "3", "--rest-success-threshold", "2")
    run = runners(settings, state)
    async with serving(settings, state) as port:
        state.scripts.published = True
        status, body = await get(port, "/readyz?verbose")
        assert status == 503 and "[-]tcp failed: not decided yet" in body
        for r in run.values():
            await r.once()
        status, body = await get(port, "/readyz")
        assert status == 503 and "[-]rest failed: not decided yet (last: ok)" in body  # 1 of 2 successes
        await run["rest"].once()
        assert await get(port, "/readyz") == (200, "ok\n")
        assert await get(port, "/readyz?verbose") == (
            200, "[+]scripts ok\n[+]tcp ok\n[+]rest ok\n[+]broker ok\nreadyz check passed\n")

        node.rest.close()
        for _ in range(2):
            await run["rest"].once()
            assert (await get(port, "/readyz"))[0] == 200  # below the failure threshold: still ready
        await run["rest"].once()
        status, body = await get(port, "/readyz")
        assert status == 503
        assert body == ("[+]scripts ok\n[+]tcp ok\n[-]rest failed: refused, 3 consecutive failures\n[+]broker ok\n"
                        "readyz check failed\n")

        node.rest.open()
        await run["rest"].once()
        assert (await get(port, "/readyz"))[0] == 503  # one success of two
        await run["rest"].once()
        assert (await get(port, "/readyz"))[0] == 200

        state.scripts.published = False  # readiness needs the scripts too
        assert (await get(port, "/readyz"))[0] == 503


async def test_readyz_gates_only_the_chosen_checks(node: FakeNode, tmp_path: Path) -> None:
    state = State()
    settings = settings_for(node, tmp_path, "--ready-checks", "tcp", "--broker-failure-threshold", "1")
    run = runners(settings, state)
    state.scripts.published = True
    node.broker.close()
    for r in run.values():
        await r.once()
    assert state.checks["broker"].up is False
    async with serving(settings, state) as port:
        assert await get(port, "/readyz?verbose") == (200, "[+]scripts ok\n[+]tcp ok\nreadyz check passed\n")
    no_gates = settings_for(node, tmp_path, "--ready-checks", "")
    assert [p.name for p in health.readiness(no_gates, state)] == ["scripts"]


async def test_node_livez_fails_only_after_sustained_rest_failure(node: FakeNode, tmp_path: Path) -> None:
    state = State()
    settings = settings_for(node, tmp_path, "--node-livez-after", "1", "--rest-failure-threshold", "100",
                            "--rest-timeout", "0.1")
    rest = runners(settings, state)["rest"]
    async with serving(settings, state) as port:
        assert await get(port, "/node/livez") == (200, "ok\n")  # nothing measured yet
        node.rest.mode = "hang"
        await rest.once()
        started = state.checks["rest"].failing_since_monotonic
        assert started is not None
        assert (await get(port, "/node/livez"))[0] == 200  # failing, not for long yet
        while time.monotonic() - started < 1.05:
            await rest.once()
        status, body = await get(port, "/node/livez")
        assert status == 503 and body.startswith("[-]node-rest failed: timeout for 1 s")
        assert state.checks["rest"].up is None  # thresholds play no part: it never reached 100 failures
        node.rest.mode = "ok"
        await rest.once()
        assert await get(port, "/node/livez") == (200, "ok\n")


async def test_node_livez_passes_without_a_rest_check(tmp_path: Path) -> None:
    state = State()
    settings = settings_for(None, tmp_path, "--tcp-port", "1")
    await CheckRunner(CheckSpec.from_settings(settings, "tcp"), state).once()  # port 1: refused
    async with serving(settings, state) as port:
        assert await get(port, "/node/livez?verbose") == (200, "[+]node-rest ok\nnode/livez check passed\n")


async def test_probes_never_touch_the_node(node: FakeNode, tmp_path: Path) -> None:
    state = State()
    settings = settings_for(node, tmp_path)
    async with serving(settings, state) as port:
        for path in ("/readyz", "/startupz", "/node/livez", "/livez", "/metrics", "/status") * 5:
            await get(port, path)
    assert (node.tcp.accepted, node.rest.accepted, node.broker.accepted) == (0, 0, 0)


async def test_head_answers_without_body(tmp_path: Path) -> None:
    state = State()
    state.scripts.published = True
    async with serving(settings_for(None, tmp_path), state) as port:
        assert await get(port, "/readyz", "HEAD") == (200, "")


async def test_metrics_pass_promtool_and_say_what_state_says(node: FakeNode, tmp_path: Path) -> None:
    state = State()
    settings = settings_for(node, tmp_path, "--rest-failure-threshold", "1")
    run = runners(settings, state)
    for r in run.values():
        await r.once()
    node.rest.close()
    await run["rest"].once()
    _fill_other_sections(state)
    async with serving(settings, state) as port:
        status, text = await get(port, "/metrics")
    assert status == 200
    await asyncio.to_thread(promtool_check, text)
    samples = _samples(text)
    assert samples['edgelake_sidecar_check_up{check="tcp"}'] == 1
    assert samples['edgelake_sidecar_check_up{check="rest"}'] == 0
    assert samples['edgelake_sidecar_check_results_total{check="rest",reason="refused"}'] == 1
    assert samples['edgelake_sidecar_check_results_total{check="rest",reason="ok"}'] == 1
    assert samples['edgelake_sidecar_check_duration_seconds_count{check="broker"}'] == 1
    assert samples[f'edgelake_sidecar_node_info{{node="el-test@127.0.0.1:{node.tcp.port}"}}'] == 1
    assert samples['edgelake_sidecar_probe_passing{probe="readyz"}'] == 0
    assert samples["edgelake_sidecar_scripts_sync_duration_seconds_count"] == 1
    assert samples['edgelake_sidecar_probe_passing{probe="startupz"}'] == 1
    assert samples['edgelake_sidecar_scripts_revision_info{ref="main",revision="abc123",source="git"}'] == 1
    assert samples['edgelake_sidecar_scripts_syncs_total{result="ok"}'] == 2
    assert samples["edgelake_sidecar_scripts_local_edits"] == 3
    assert samples["edgelake_sidecar_scripts_conflict_files"] == 1
    assert samples['edgelake_sidecar_watch_changes_total{kind="modified"}'] == 4
    assert samples['edgelake_sidecar_hook_runs_total{hook="change-rest",result="error"}'] == 1
    assert samples['edgelake_sidecar_hook_duration_seconds_bucket{hook="change-rest",le="+Inf"}'] == 1
    assert samples['edgelake_sidecar_kube_api_errors_total{reason="forbidden"}'] == 2
    assert samples['edgelake_sidecar_hook_triggers_total{hook="change-rest"}'] == 5
    assert samples['edgelake_sidecar_hook_consecutive_failures{hook="change-rest"}'] == 1
    assert samples["edgelake_sidecar_kube_problems"] == 1
    assert any(k.startswith("edgelake_sidecar_build_info{") for k in samples)
    assert samples["process_resident_memory_bytes"] > 0


def _fill_other_sections(state: State) -> None:
    """What the scripts, watch, hooks and kube components would have written."""
    from sidecar.state import HookState

    sc = state.scripts
    sc.published, sc.revision, sc.source, sc.ref = True, "abc123", "git", "main"
    sc.last_success_time = sc.published_time = time.time()
    sc.syncs.update({"ok": 2, "error": 1})
    sc.sync_duration.observe(0.2)
    sc.local_edits, sc.conflict_files = 3, ["node-deployment/local_script.al"]
    state.watch.changes["modified"] += 4
    state.watch.last_change_time = time.time()
    hook = state.hooks.setdefault("change-rest", HookState("change-rest"))
    hook.runs["error"] += 1
    hook.triggers, hook.consecutive_failures = 5, 1
    hook.duration.observe(0.01)
    state.kube.api_errors["forbidden"] += 2
    state.kube.problems["events"] = "forbidden: no RBAC for events"


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
