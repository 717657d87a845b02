"""The endpoints. Every answer comes from in-memory state: no check or git call runs inline."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar import __version__, health, logs, progress
from sidecar.config import Settings
from sidecar.http.server import Request, Response
from sidecar.state import ResolveRequest, State

if TYPE_CHECKING:
    from sidecar.metrics import Exposition

log = logs.get("http")

JSON = "application/json"
RESOLVE_WAIT = 300.0  # seconds a POST /resolve waits for the scripts component (a sync may run first)


def _json(status: int, payload: object) -> Response:
    return Response(status, (json.dumps(payload, indent=1, sort_keys=False) + "\n").encode(), JSON)


def _text(status: int, text: str) -> Response:
    return Response(status, text.encode())


def _parts(probe: str, parts: list[health.Part], request: Request) -> Response:
    """A probe answer as the Kubernetes API server writes it: ``ok``, or the lines with ``?verbose``.

    A failure always lists the lines, so whoever reads a failing probe sees why.
    """
    ok = health.all_ok(parts)
    if ok and "verbose" not in request.query:
        return _text(200, "ok\n")
    lines = [p.line() for p in parts]
    lines.append(f"{probe} check {'passed' if ok else 'failed'}")
    return _text(200 if ok else 503, "\n".join(lines) + "\n")


def _load_metrics(settings: Settings, state: State) -> Exposition:
    from sidecar.metrics import Exposition

    return Exposition(settings, state)


async def read_secret(path: Path) -> bytes:
    """Read a secret file off the event loop, stripped of surrounding white space."""
    data = await asyncio.to_thread(path.read_bytes)
    secret = data.strip()
    logs.add_secret(secret.decode(errors="replace"))
    return secret


class Endpoints:
    """Routes requests to handlers that read ``state``."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self._metrics: Exposition | None = None
        self.routes: dict[tuple[str, str], Callable[[Request], Response | Awaitable[Response]]] = {
            ("GET", "/livez"): self.livez,
            ("GET", "/startupz"): self.startupz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/node/livez"): self.node_livez,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/status"): self.status,
            ("POST", "/sync"): self.sync,
            ("POST", "/resolve"): self.resolve,
        }

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """Dispatch one request."""
        method = "GET" if request.method == "HEAD" else request.method
        handler = self.routes.get((method, request.path))
        if handler is not None:
            return handler(request)
        if any(path == request.path for _, path in self.routes):
            allowed = sorted({m for m, p in self.routes if p == request.path})
            return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
        return _text(404, "not found\n")

    # -- liveness of the sidecar itself ------------------------------------------------------------
    def livez(self, request: Request) -> Response:
        """200 while the event loop turns and every component task runs and makes progress."""
        problems = progress.liveness(self.settings, self.state)
        if problems:
            return _text(503, "".join(f"[-]{p}\n" for p in problems))
        return _text(200, "ok\n")

    # -- probes answered from state (sidecar.health) ------------------------------------------------
    def startupz(self, request: Request) -> Response:
        """200 once the scripts are published (and the network identity written, when wanted)."""
        return _parts("startupz", health.startup(self.settings, self.state), request)

    def readyz(self, request: Request) -> Response:
        """200 when the scripts are published and every gating node check is up."""
        return _parts("readyz", health.readiness(self.settings, self.state), request)

    def node_livez(self, request: Request) -> Response:
        """For the node container's liveness probe: 503 only after a sustained REST failure."""
        return _parts("node/livez", [health.node_liveness(self.settings, self.state)], request)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text exposition of the state."""
        if self._metrics is None:
            # First scrape: import prometheus_client (~0.1 s) off the event loop, so probes keep answering.
            self._metrics = await asyncio.to_thread(_load_metrics, self.settings, self.state)
        from sidecar.metrics import CONTENT_TYPE

        # Rendered on the loop (about 1.4 ms): it reads state that only the loop may touch, and the
        # process collector's reads of /proc are served from memory.
        return Response(200, self._metrics.render(), CONTENT_TYPE)

    # -- status ------------------------------------------------------------------------------------
    def status(self, request: Request) -> Response:
        """Everything, as JSON; secrets redacted."""
        s = self.state
        edits, edit_files = s.local_edits()  # the publisher's count or the watcher's, whichever is newer
        payload = {
            "version": __version__,
            "uptime_seconds": round(time.time() - s.started, 3),
            "config": self.settings.redacted(),
            "scripts": {**s.scripts.as_dict(), "local_edits": edits, "local_edit_files": edit_files[:100]},
            "checks": {name: c.as_dict() for name, c in s.checks.items()},
            "watch": s.watch.as_dict(),
            "hooks": {name: h.as_dict() for name, h in s.hooks.items()},
            "kube": s.kube.as_dict(),
            "node": {"policy": s.policy.as_dict()},
            "components": {name: h.as_dict(time.monotonic()) for name, h in s.components.items()},
            "loop_lag_seconds": round(s.loop_lag, 4),
        }
        return _json(200, payload)

    # -- sync trigger ------------------------------------------------------------------------------
    async def _denied(self, request: Request, what: str) -> Response | None:
        """None when the request carries the bearer token or the HMAC; else the answer that refuses it."""
        token_file = self.settings.sync_token_file
        hmac_file = self.settings.sync_hmac_secret_file
        if token_file is None and hmac_file is None:
            return _text(404, f"{what} is off (no --sync-token-file or --sync-hmac-secret-file)\n")
        try:
            if not await self._authorized(request, token_file, hmac_file):
                log.warning("trigger_denied", what=what, peer=request.peer)
                return Response(401, b"unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
        except OSError as exc:
            log.error("sync_secret_unreadable", error=str(exc))
            return _text(500, "sync secret unreadable\n")
        return None

    async def sync(self, request: Request) -> Response:
        """Trigger a sync now; needs a bearer token or an ``X-Hub-Signature-256`` HMAC."""
        denied = await self._denied(request, "sync trigger")
        if denied is not None:
            return denied
        self.state.sync_now.set()
        log.info("sync_triggered", peer=request.peer)
        return _text(202, "sync triggered\n")

    async def resolve(self, request: Request) -> Response:
        """Settle a held conflict: ``{"take": "upstream"|"mine", "paths": [...]}``, authorized as ``/sync``.

        The scripts component does the work between syncs; the answer waits for it (bounded).
        """
        denied = await self._denied(request, "resolve")
        if denied is not None:
            return denied
        try:
            body = json.loads(request.body or b"{}")
            take, paths = body["take"], body.get("paths", [])
            if take not in ("upstream", "mine") or not isinstance(paths, list) \
                    or not all(isinstance(p, str) for p in paths) or len(paths) > 1000:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _text(400, 'expected JSON {"take": "upstream" or "mine", "paths": [file, ...]}\n')
        answer: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.state.resolve_requests.put_nowait(ResolveRequest(take, tuple(paths), answer))
        self.state.sync_now.set()
        log.info("resolve_requested", take=take, paths=paths[:20], peer=request.peer)
        try:
            result = await asyncio.wait_for(asyncio.shield(answer), RESOLVE_WAIT)
        except TimeoutError:
            answer.cancel()
            return _text(504, "the scripts component did not get to it in time; nothing was changed\n")
        return _json(200 if result.get("ok") else 409, result)

    async def _authorized(self, request: Request, token_file: Path | None, hmac_file: Path | None) -> bool:
        auth = request.headers.get("authorization", "")
        if token_file is not None and auth.lower().startswith("bearer "):
            token = await read_secret(token_file)
            given = auth[7:].strip().encode()
            if token and hmac.compare_digest(given, token):
                return True
        signature = request.headers.get("x-hub-signature-256", "")
        if hmac_file is not None and signature.startswith("sha256="):
            secret = await read_secret(hmac_file)
            expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
            if secret and hmac.compare_digest(signature.encode(), expected.encode()):
                return True
        return False
