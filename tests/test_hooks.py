"""Hooks with real parts: processes, an HTTP server on loopback, a REST stand-in, the real watcher."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidecar import config
from sidecar.config import Settings
from sidecar.events import Event, HookRefused, ScriptsSeeded, ScriptsUpdated
from sidecar.hooks.component import Hooks
from sidecar.hooks.rest import MAX_FILES
from sidecar.hooks.runner import MIN_INTERVAL, REFUSED_ATTEMPTS
from sidecar.noderest import NodeRest
from sidecar.state import HookState, State
from sidecar.watch import Watcher
from tests.conftest import ROOT, sidecar_env
from tests.fakenode import FakeNode
from tests.helpers import gone, running
from tests.published import Published, eventually, in_other_process

pytestmark = pytest.mark.timeout(180)

SCRIPTS = {"node-deployment/main.al": "# main\n", "node-deployment/local_script.al": "# local\n"}
FAST = {"min_interval": 0.0, "backoff_initial": 0.1}  # runner pace for tests that are about retries
# 1,000 writes to FILES scripts in a new FOLDER, pausing PAUSE seconds after every 200 (0: none).
BURST = (
    "import os, sys, time\n"
    "folder, files, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "os.makedirs(folder)\n"
    "for i in range(1000):\n"
    "    open(f'{folder}/f{i % files:04d}.al', 'a').write(f'{i}\\n')\n"
    "    if pause and i % 200 == 199:\n"
    "        time.sleep(pause)\n")


class WebhookReceiver:
    """A real HTTP server that records each POST (arrival time, query, JSON) and answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.status = 200
        self.runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append((time.monotonic(), dict(request.query), await request.json()))
        return web.Response(status=self.status, text="thanks\n")

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def hooks_for(settings: Settings, state: State, **runner_options: float) -> Hooks:
    """The hooks component with its own REST client when the settings name a REST port."""
    client = NodeRest(settings.node_host, settings.rest_port) if settings.rest_port is not None else None
    return Hooks(settings, state, client, **runner_options)


def load(pub: Published | None, tmp: Path, *extra: str) -> Settings:
    """Settings for a layout (or none: publish hooks only)."""
    link = pub.link if pub else tmp / "vol" / "deployment-scripts"
    return config.load(["run", "--link", str(link), "--fallback-dir", str(tmp), "--kube", "off", *extra],
                       environ={})


def exec_logger(tmp: Path) -> tuple[str, Path]:
    """An exec hook command that appends its environment and stdin to a log, one JSON line a run."""
    log = tmp / "exec.log"
    script = tmp / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "entry = {k: v for k, v in os.environ.items() if k.startswith('SIDECAR_')}\n"
        "entry['stdin'] = json.load(sys.stdin)\n"
        "open(sys.argv[1], 'a').write(json.dumps(entry) + '\\n')\n")
    return f"{sys.executable} {script} {log}", log


def exec_runs(log: Path) -> list[dict[str, Any]]:
    """What the exec hook logged."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def settle(hooks: list[HookState], quiet: float = 1.5) -> None:
    """Wait until no hook has a run pending and none has started for ``quiet`` seconds."""
    def snapshot() -> tuple[Any, ...]:
        return tuple((sum(h.runs.values()), h.pending) for h in hooks)

    last, since = snapshot(), time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < quiet or any(h.pending for h in hooks):
        assert time.monotonic() < deadline, "hooks never settled"
        await asyncio.sleep(0.05)
        if snapshot() != last:
            last, since = snapshot(), time.monotonic()


class TriggerTimes:
    """When each runner was handed a trigger (the runner's own clock), to bound its runs by its pace."""

    def __init__(self, hooks: Hooks) -> None:
        self.times: dict[str, list[float]] = {}
        for runner in hooks.runners["change"]:
            self.times[runner.name] = []
            runner.submit = self._recording(runner.submit, self.times[runner.name])  # type: ignore[method-assign]

    @staticmethod
    def _recording(submit: Any, times: list[float]) -> Any:
        def record(trigger: Any) -> None:
            times.append(asyncio.get_running_loop().time())
            submit(trigger)
        return record

    def max_runs(self, name: str, since: int = 0) -> int:
        """The most runs the pace allows for the triggers from index ``since`` on.

        Runs start at least MIN_INTERVAL apart and each takes a pending trigger, so the runs that
        start by the last trigger number at most 1 + span // MIN_INTERVAL, and one more may follow
        it. A burst that fits in one interval (a quiet machine) runs a hook at most twice; a busy
        machine that stretches the burst allows one more run per interval, never one per trigger.
        """
        times = self.times[name][since:]
        assert times, f"{name} got no trigger"
        return 2 + int((times[-1] - times[0]) // MIN_INTERVAL)


async def test_a_burst_of_1000_writes_runs_each_hook_at_most_twice(tmp_path: Path, node: FakeNode) -> None:
    pub = Published(tmp_path)
    pub.publish(pub.commit(SCRIPTS))
    receiver = WebhookReceiver()
    hook_port = await receiver.start()
    command, log = exec_logger(tmp_path)
    settings = load(pub, tmp_path, "--rest-port", str(node.rest.port), "--on-change-rest", "process {path}",
                    "--on-change-exec", command, "--on-change-webhook", f"http://127.0.0.1:{hook_port}/hook",
                    "--on-change-glob", "*.al")
    state = State()
    hooks = hooks_for(settings, state)
    triggers = TriggerTimes(hooks)
    watcher = Watcher(settings, state)
    hs = [state.hooks[n] for n in ("change-rest", "change-exec", "change-webhook")]
    try:
        async with running(watcher.run, hooks.run):
            await eventually(lambda: state.watch.running, what="watch running")
            # 1,000 writes to 10 scripts, from another process, plus a file the glob leaves out. The
            # pauses (longer than the debounce) usually split the burst into several batches, so the
            # runners get several triggers to coalesce; how many is the scheduler's choice.
            await in_other_process(BURST, str(pub.link / "burst"), "10", "0.08")
            await in_other_process("import sys; open(sys.argv[1], 'w').write('x')", str(pub.link / "notes.txt"))
            await eventually(lambda: len(state.watch.local_edit_files) == 11, what="burst counted", timeout=60)
            await settle(hs)
            for h in hs:
                runs = sum(h.runs.values())
                assert 1 <= runs <= min(h.triggers, triggers.max_runs(h.name)), (h.name, h.runs, h.triggers)
                assert h.runs["ok"] == runs, (h.name, h.runs, h.last_error)
            wanted = {f"burst/f{i:04d}.al" for i in range(10)}
            # Coalescing loses nothing: every script reached each hook, and nothing the glob excludes.
            assert {p.removeprefix(f"{pub.link}/") for p in node.rest.processed} == wanted
            rest_runs = sum(hs[0].runs.values())
            assert sum(node.rest.commands.values()) <= len(wanted) * rest_runs  # a command per file and run
            assert node.log.error_added == 0  # every command went with the method the node wants
            runs = exec_runs(log)
            assert {p for r in runs for p in r["SIDECAR_CHANGED_PATHS"].split("\n")} == wanted
            assert all(r["SIDECAR_TRIGGER"] == "change" for r in runs)
            assert {c["path"] for _, _, body in receiver.posts for c in body["changes"]} == wanted

            # 1,000 writes to 1,000 new scripts: a bulk change. Still a few runs at most; the
            # per-file REST hook declines to replay it file by file.
            before = [sum(h.runs.values()) for h in hs]
            since = {h.name: len(triggers.times[h.name]) for h in hs}
            commands = sum(node.rest.commands.values())
            await in_other_process(BURST, str(pub.link / "bulk"), "1000", "0")
            await eventually(lambda: len(state.watch.local_edit_files) == 1011, what="bulk counted", timeout=60)
            await settle(hs)
            for h, n in zip(hs, before, strict=True):
                assert 1 <= sum(h.runs.values()) - n <= triggers.max_runs(h.name, since[h.name]), (h.name, h.runs)
            assert hs[0].runs["skipped"] >= 1 and "bulk change" in (hs[0].last_error or "")
            # A batch the scheduler happened to cut small may still be processed file by file, but
            # never more than MAX_FILES commands a run: the bulk itself is not replayed.
            rest_runs = sum(hs[0].runs.values()) - before[0]
            assert sum(node.rest.commands.values()) - commands <= MAX_FILES * (rest_runs - hs[0].runs["skipped"])
            bulk = {f"bulk/f{i:04d}.al" for i in range(1000)}
            later = exec_runs(log)[len(runs):]
            assert {c["path"] for r in later for c in r["stdin"]["changes"]} == bulk
            assert int(later[-1]["SIDECAR_CHANGED_COUNT"]) <= 1000
    finally:
        await receiver.stop()


async def test_a_hook_that_hangs_is_killed_and_retried(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        "marker = sys.argv[1] + '/marker'\n"
        "if os.path.exists(marker):\n"
        "    sys.exit(0)\n"
        "open(marker, 'w').close()\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "open(sys.argv[1] + '/pids', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(300)\n")
    settings = load(None, tmp_path, "--on-publish-exec", f"{sys.executable} {script} {tmp_path}",
                    "--hook-timeout", "1")
    state = State()
    hooks = hooks_for(settings, state, **FAST)
    h = state.hooks["publish-exec"]
    async with running(hooks.run):
        state.bus.publish(ScriptsUpdated(message="new revision", revision="abc", source="git", path="/s/abc"))
        await eventually(lambda: h.runs["ok"] == 1, what="the retry succeeding")
    assert h.runs["timeout"] == 1
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert all(gone(pid) for pid in pids), "the hook and its child must be killed"
    assert h.consecutive_failures == 0 and h.last_result == "ok"


async def test_a_failing_hook_backs_off_and_the_latest_trigger_wins(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    receiver.status = 500
    port = await receiver.start()
    settings = load(None, tmp_path, "--on-publish-webhook", f"http://127.0.0.1:{port}/hook?token=s3cr3t-t0ken",
                    "--hook-backoff-max", "0.4")
    state = State()
    hooks = hooks_for(settings, state, **FAST)
    h = state.hooks["publish-webhook"]
    try:
        async with running(hooks.run):
            for n in range(150):  # a flood of triggers while the hook fails
                state.bus.publish(ScriptsUpdated(message="new", revision=f"r{n}", source="git", path=f"/s/r{n}"))
                await asyncio.sleep(0.01)
            await eventually(lambda: len(receiver.posts) >= 6, what="six attempts")
            arrivals = [t for t, _, _ in receiver.posts]
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            # Sleeps never end early, so these lower bounds hold on any machine: 0.1, 0.2, then the cap.
            for gap, least in zip(gaps, (0.1, 0.2, 0.4, 0.4, 0.4), strict=False):
                assert gap >= least, gaps
            assert h.triggers == 150
            assert h.consecutive_failures >= 5
            assert h.last_result == "error" and "answered 500" in (h.last_error or "")
            assert h.next_retry_time is not None
            status_text = json.dumps({"hooks": h.as_dict(), "config": settings.redacted()})
            assert "s3cr3t" not in status_text and "?<redacted>" in status_text

            receiver.status = 200
            await eventually(lambda: h.runs["ok"] == 1, what="recovery")
            assert receiver.posts[-1][2]["revision"] == "r149"  # the latest revision, not a replay of each
            assert receiver.posts[-1][1] == {"token": "s3cr3t-t0ken"}  # the real URL is used, only hidden
            assert h.consecutive_failures == 0
    finally:
        await receiver.stop()


async def test_publish_hooks_and_rest_at_seed(tmp_path: Path, node: FakeNode) -> None:
    main = tmp_path / "main.al"
    main.write_text("revision = r2\n")
    command, log = exec_logger(tmp_path)
    settings = load(None, tmp_path, "--rest-port", str(node.rest.port), "--on-publish-rest", f"process {main}",
                    "--on-publish-exec", command)
    state = State()
    hooks = hooks_for(settings, state, **FAST)
    async with running(hooks.run):
        state.bus.publish(ScriptsSeeded(message="seeded", revision="r1", source="fallback", path="/s"))
        await eventually(lambda: len(exec_runs(log)) == 1, what="exec at seed")
        # The node starts after the seed and reads its scripts itself: no REST command then.
        assert node.rest.commands == {} and "publish-rest" in state.hooks
        assert state.hooks["publish-rest"].runs == {}
        state.bus.publish(ScriptsUpdated(message="updated", revision="r2", source="git", path="/s"))
        await eventually(lambda: node.rest.processed == [str(main)] and len(exec_runs(log)) == 2,
                         what="both hooks after an update")
        assert node.rest.variables == {"revision": "r2"} and node.log.error_added == 0
        first, second = exec_runs(log)
        assert (first["SIDECAR_EVENT"], first["SIDECAR_REVISION"], first["SIDECAR_SOURCE"]) == \
            ("scripts-seeded", "r1", "fallback")
        assert (second["SIDECAR_EVENT"], second["SIDECAR_REVISION"]) == ("scripts-updated", "r2")
        assert second["SIDECAR_SCRIPTS"] == str(settings.link)


async def test_hung_rest_and_flooding_exec_never_block_the_loop(tmp_path: Path, node: FakeNode) -> None:
    node.rest.mode = "hang"
    settings = load(None, tmp_path, "--rest-port", str(node.rest.port), "--on-publish-rest", "process /main.al",
                    "--on-publish-exec",
                    f"{sys.executable} -c \"import sys; [sys.stdout.write('x' * 65536) for _ in range(800)]\"",
                    "--hook-timeout", "2")
    state = State()
    hooks = hooks_for(settings, state, **FAST)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with running(hooks.run, ticker):
        state.bus.publish(ScriptsUpdated(message="updated", revision="r1", source="git", path="/s"))
        await eventually(lambda: state.hooks["publish-exec"].runs["ok"] == 1, what="50 MB of output drained")
        at_exec_done = ticks
        await eventually(lambda: state.hooks["publish-rest"].runs["timeout"] == 1, what="REST hook timed out")
        # The loop kept turning while one hook hung on the node and the other flooded its output.
        assert ticks > at_exec_done > 0
        assert state.hooks["publish-rest"].last_error == "ran over 2 s and was stopped"


async def test_a_rest_change_hook_makes_the_node_process_the_edited_file(tmp_path: Path, node: FakeNode) -> None:
    """``process {path}`` as the docs write it: POST, the absolute path, and the node sets the variable."""
    pub = Published(tmp_path)
    pub.publish(pub.commit(SCRIPTS))
    settings = load(pub, tmp_path, "--rest-port", str(node.rest.port), "--on-change-rest", "process {path}")
    state = State()
    async with running(Watcher(settings, state).run, hooks_for(settings, state).run):
        await eventually(lambda: state.watch.running, what="watch running")
        await in_other_process("import sys; open(sys.argv[1], 'a').write('hook_check = edited\\n')",
                               str(pub.link / "node-deployment" / "local_script.al"))
        await eventually(lambda: node.rest.variables.get("hook_check") == "edited", what="the node processed it",
                         timeout=60)
        await settle([state.hooks["change-rest"]])
    # One write is usually one batch, but a writer paused between its events on a busy machine can
    # give two, and so two runs: each processes the same file, and every one is accepted.
    edited = f"{pub.link}/node-deployment/local_script.al"
    runs = state.hooks["change-rest"].runs
    assert set(node.rest.processed) == {edited} and len(node.rest.processed) == runs["ok"]
    answer = await NodeRest("127.0.0.1", node.rest.port).command("get !hook_check", timeout=30)
    assert answer.text == "edited"
    assert node.log.error_added == 0 and set(runs) == {"ok"}
    assert node.log.events[0] == f"(ok) process {edited}"


async def test_a_hook_the_node_refuses_stops_until_the_next_trigger(tmp_path: Path, node: FakeNode) -> None:
    """A node that answers 400 gets at most REFUSED_ATTEMPTS error-log lines per trigger, then an Event."""
    settings = load(None, tmp_path, "--rest-port", str(node.rest.port),
                    "--on-publish-rest", "process /no/such/main.al")
    state = State()
    events = state.bus.subscribe()
    hooks = hooks_for(settings, state, **FAST)
    h = state.hooks["publish-rest"]
    async with running(hooks.run):
        state.bus.publish(ScriptsUpdated(message="updated", revision="r1", source="git", path="/s"))
        await eventually(lambda: h.stopped, what="the hook stops")
        assert h.runs == {"refused": REFUSED_ATTEMPTS} and h.last_result == "refused"
        assert "err_code 26" in (h.last_error or "") and h.next_retry_time is None and not h.pending
        assert node.log.error_added == REFUSED_ATTEMPTS
        assert h.as_dict()["stopped"] is True
        refused = [e for e in _drain(events) if e.kind == "hook-refused"]
        assert len(refused) == 1 and isinstance(refused[0], HookRefused) and refused[0].hook == "publish-rest"

        state.bus.publish(ScriptsUpdated(message="updated", revision="r2", source="git", path="/s"))
        await eventually(lambda: h.runs["refused"] == 2 * REFUSED_ATTEMPTS and h.stopped, what="stops again")
        assert node.log.error_added == 2 * REFUSED_ATTEMPTS  # the node's error log: 3 lines per trigger


async def test_an_unreachable_node_keeps_the_backoff(tmp_path: Path, node: FakeNode) -> None:
    """Refused connections are not refusals: the hook keeps retrying, and works once the node is back."""
    main = tmp_path / "main.al"
    main.write_text("up = yes\n")
    settings = load(None, tmp_path, "--rest-port", str(node.rest.port), "--on-publish-rest", f"process {main}",
                    "--hook-backoff-max", "0.2")
    state = State()
    h = state.hooks.setdefault("publish-rest", HookState("publish-rest"))
    node.rest.close()
    async with running(hooks_for(settings, state, **FAST).run):
        state.bus.publish(ScriptsUpdated(message="updated", revision="r1", source="git", path="/s"))
        await eventually(lambda: h.runs["error"] > REFUSED_ATTEMPTS, what="more retries than a refusal gets")
        assert not h.stopped
        node.rest.open()
        await eventually(lambda: h.runs["ok"] == 1, what="it works once the node is back")
    assert node.rest.variables == {"up": "yes"}


def _drain(queue: asyncio.Queue[Event]) -> list[Event]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


@pytest.mark.parametrize(("args", "problem"), [
    (["--on-change-rest", "process {path}"], "--on-change-rest: needs the node's REST port"),
    (["--on-change-exec", "run 'unbalanced"], "--on-change-exec: cannot be split into words"),
    (["--on-publish-exec", "  "], "--on-publish-exec: is empty"),
    (["--rest-port", "1", "--on-publish-rest", "process {path}"], "--on-publish-rest: {path} and {abspath}"),
    (["--no-watch", "--on-change-webhook", "http://h/x"], "--on-change-webhook: needs --watch"),
])
def test_hook_settings_that_could_never_work_are_refused(tmp_path: Path, args: list[str], problem: str) -> None:
    with pytest.raises(config.SettingsError) as err:
        load(None, tmp_path, *args)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_webhook_secrets_stay_out_of_logs(tmp_path: Path) -> None:
    """The real logging setup, in its own process: a failing webhook's URL token never printed."""
    code = (
        "import asyncio, json, sys\n"
        "from sidecar import config, logs\n"
        "logs.setup('debug', 'json')\n"
        "from sidecar.events import ScriptsUpdated\n"
        "from sidecar.hooks.component import Hooks\n"
        "from sidecar.state import State\n"
        "async def main():\n"
        "    s = config.load(['run', '--fallback-dir', '/tmp', '--link', '/tmp/x/l', '--kube', 'off',\n"
        "                     '--on-publish-webhook', 'http://user:pa55word@127.0.0.1:9/h?token=s3cr3t-t0ken'],\n"
        "                    environ={})\n"
        "    st = State()\n"
        "    hooks = Hooks(s, st, None)\n"
        "    task = asyncio.create_task(hooks.run())\n"
        "    st.bus.publish(ScriptsUpdated(message='x', revision='r', source='git', path='/tmp/x'))\n"
        "    while not st.hooks['publish-webhook'].runs:\n"
        "        await asyncio.sleep(0.02)\n"
        "    task.cancel()\n"
        "    print(json.dumps({n: h.as_dict() for n, h in st.hooks.items()}))\n"
        "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code], env=sidecar_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    hooks = json.loads(done.stdout)
    assert hooks["publish-webhook"]["last_result"] == "error"
    assert '"event": "hook_run"' in done.stderr and "<redacted>" in done.stderr
    for secret in ("s3cr3t", "pa55word"):
        assert secret not in done.stderr and secret not in done.stdout


def test_end_to_end_edit_reaches_status_and_hook(tmp_path: Path, sidecar_factory: Any) -> None:
    """The real sidecar process: an edit with a shell tool shows in /status and runs the change hook."""
    pytest.importorskip("sidecar.scripts.sync", reason="needs the scripts component (lead's branch)")
    fallback = tmp_path / "fallback"
    for rel, text in SCRIPTS.items():
        (fallback / rel).parent.mkdir(parents=True, exist_ok=True)
        (fallback / rel).write_text(text)
    link = tmp_path / "vol" / "deployment-scripts"
    command, log = exec_logger(tmp_path)
    sc = sidecar_factory(["--fallback-dir", str(fallback), "--link", str(link), "--on-change-exec", command])
    sc.wait_for(lambda: sc.status()["watch"]["running"], what="watch running")
    subprocess.run(["sh", "-c", f"echo edit >> {link}/node-deployment/local_script.al"], check=True, timeout=10)
    sc.wait_for(lambda: sc.status()["scripts"]["local_edits"] == 1, what="local edit in /status")
    status = sc.status()
    assert set(status["watch"]["changes"]) == {"modified"}  # once, or twice if the shell's write was split
    assert status["watch"]["recent"][-1]["path"] == "node-deployment/local_script.al"
    sc.wait_for(lambda: len(exec_runs(log)) == 1, what="change hook ran")
    assert exec_runs(log)[0]["SIDECAR_CHANGED_PATHS"] == "node-deployment/local_script.al"
