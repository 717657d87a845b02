"""The one-shot commands that write the volume: ``seed``, and ``resolve``.

Each takes the volume's writer lock first (``lock.py``): a command never writes beside a running
sidecar. ``seed`` beside one is the init-container case: when a complete tree is published it has
nothing to do, so it exits 0 without touching anything; otherwise it waits a bounded time for
the other writer to publish or to go. ``resolve`` asks the running sidecar (``POST /resolve``) and
works on the volume itself only when none answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from sidecar.config import Settings
from sidecar.scripts import lock, report, resolve, trees
from sidecar.scripts.edits import edited_paths
from sidecar.scripts.git import GitError
from sidecar.scripts.layout import Layout
from sidecar.scripts.publish import head
from sidecar.scripts.recover import SeedError, recover
from sidecar.scripts.seed import first_seed
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace, log
from sidecar.state import State

LOCK_WAIT_EXTRA = 5.0  # seconds beyond --first-seed-timeout that seed waits for another writer
LOCK_POLL = 0.2
RESOLVE_TIMEOUT = 330.0  # the sidecar itself gives up after 300 s


async def wait_for_writer(settings: Settings, command: str, *, give_up_when_published: bool) -> bool:
    """Take the writer lock, waiting up to ``--first-seed-timeout`` + 5 s while another process has it.

    Returns False (without the lock) when ``give_up_when_published`` and a complete tree is
    published meanwhile; raises :class:`lock.Busy` when the wait runs out.
    """
    root = settings.revisions_root
    layout = Layout(root, settings.link)
    deadline = time.monotonic() + settings.first_seed_timeout + LOCK_WAIT_EXTRA
    said = False
    while True:
        try:
            await asyncio.to_thread(lock.hold, root, command, settings.pod_name)
            return True
        except lock.Busy as exc:
            if give_up_when_published and await asyncio.to_thread(layout.link_problem) is None:
                log.info("seed_skipped_other_writer", reason="a complete tree is published and another writer "
                         "runs", holder=exc.holder, link=str(settings.link))
                return False
            if time.monotonic() > deadline:
                raise
            if not said:
                log.info("waiting_for_other_writer", holder=exc.holder)
                said = True
        await asyncio.sleep(LOCK_POLL)


async def seed_command(settings: Settings) -> int:
    """``edgelake-sidecar seed``: publish once (or sync once when already published) and exit.

    Exits 0 whenever a tree is published at the end, even if a sync of an existing tree failed,
    so an init container never blocks a node that already has its scripts.
    """
    try:
        if not await wait_for_writer(settings, "seed", give_up_when_published=True):
            return 0
    except lock.Busy as exc:
        log.error("seed_failed", error=f"{exc}; no complete tree was published meanwhile")
        return 1
    except OSError as exc:
        log.error("seed_failed", error=f"cannot take the writer lock in {settings.revisions_root}: {exc}")
        return 1
    ws = Workspace.create(settings, State())
    try:
        current = await recover(ws)
        if current is None:
            await first_seed(ws)
        else:
            report.found(ws, current, await head(ws, current), await edited_paths(ws.git, current.path))
            result = await sync_once(ws)
            if result != "ok" and result != "noop":
                log.warning("seed_sync_not_applied", result=result, error=ws.state.scripts.last_sync_error,
                            conflicts=ws.state.scripts.conflict_files, upstream=ws.state.scripts.held_upstream)
    except (SeedError, GitError, trees.UnsafeTree, OSError) as exc:
        log.error("seed_failed", error=str(exc))
        return 1
    await ws.settle()  # old revisions retired by this run are deleted before the process exits
    s = ws.state.scripts
    if s.adoption:  # no one hears this process's Events: the sidecar that runs next sends it
        await asyncio.to_thread(ws.layout.adoption_record.write_text, json.dumps(s.adoption))
    log.info("seed_done", source=s.source, revision=s.revision, link=str(settings.link), local_edits=s.local_edits)
    return 0


def _ask_sidecar(settings: Settings, take: str, paths: tuple[str, ...]) -> tuple[int, dict[str, Any]] | None:
    """POST /resolve to the sidecar on this host, authorized as POST /sync; None when none listens.

    Blocking: run in a thread.
    """
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    body = json.dumps({"take": take, "paths": list(paths)}).encode()
    headers = {"Content-Type": "application/json"}
    if settings.sync_token_file is not None:
        headers["Authorization"] = "Bearer " + settings.sync_token_file.read_text().strip()
    elif settings.sync_hmac_secret_file is not None:
        secret = settings.sync_hmac_secret_file.read_bytes().strip()
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://{host}:{settings.http_port}/resolve", body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=RESOLVE_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"ok": False, "error": text.strip()}
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        raise


async def _resolve_here(settings: Settings, take: str, paths: tuple[str, ...]) -> dict[str, Any]:
    """No sidecar answers: settle the conflict on the volume directly, holding the writer lock."""
    await asyncio.to_thread(lock.hold, settings.revisions_root, "resolve", settings.pod_name)
    ws = Workspace.create(settings, State())
    current = await recover(ws)
    if current is None:
        raise resolve.NotResolvable("no tree is published")
    report.found(ws, current, await head(ws, current), await edited_paths(ws.git, current.path))
    result = await resolve.resolve(ws, take, paths)
    await ws.settle()
    return result


async def resolve_command(settings: Settings) -> int:
    """``edgelake-sidecar resolve --take upstream|mine [PATH...]``: through the running sidecar, else directly."""
    take, paths = settings.take or "", settings.paths
    try:
        answer = await asyncio.to_thread(_ask_sidecar, settings, take, paths)
        result = answer[1] if answer is not None else {"ok": True, **await _resolve_here(settings, take, paths)}
    except lock.Busy as exc:
        result = {"ok": False, "error": f"{exc}, but nothing answers on port {settings.http_port}"}
    except resolve.NotResolvable as exc:
        result = {"ok": False, "error": str(exc)}
    except (SeedError, GitError, OSError) as exc:
        result = {"ok": False, "error": f"resolve failed: {exc}"}
    if not result.get("ok"):
        print(f"edgelake-sidecar: {result.get('error', 'refused')}", file=sys.stderr)
        return 1
    kept = f"; your copies are in {result['kept_in']}" if result.get("kept_in") else ""
    print(f"took {result['take']} for {', '.join(result['paths'])}; published upstream {result['upstream'][:12]}{kept}")
    return 0
