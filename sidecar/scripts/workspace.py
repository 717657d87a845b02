"""What every scripts operation needs: settings, the layout, a git runner, the state, scratch names."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar import logs
from sidecar.config import Settings
from sidecar.scripts.git import Credentials, Git, credential_scope, split_userinfo
from sidecar.scripts.layout import Layout, Spare
from sidecar.state import State


@dataclass
class Workspace:
    """Shared context of seed, publish and sync. One per process."""

    settings: Settings
    state: State
    layout: Layout
    git: Git
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    # Serializes publications: a sync, a seed and a recovery never interleave.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    publications_since_gc: int = 0
    _sweeper: asyncio.Task[None] | None = None
    _sweep_again: bool = False
    spare: Spare | None = None  # written by spare.py only
    spare_task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, settings: Settings, state: State) -> Workspace:
        """Build the workspace from settings."""
        layout = Layout(settings.revisions_root, settings.link)
        url_user, url_password = split_userinfo(settings.repo)[1:] if settings.repo else (None, None)
        if url_user and url_password is None:
            url_password = ""  # https://TOKEN@host: the token is the user name, the password empty
        creds = Credentials(
            username=settings.git_username or url_user,
            password_file=settings.git_password_file,
            password=url_password,
            scope=credential_scope(settings.repo) if settings.repo else None,
            ssh_key_file=settings.ssh_key_file,
            known_hosts_file=settings.ssh_known_hosts_file,
            ssh_connect_timeout=max(1, int(min(settings.git_timeout, 30))),
        )
        return cls(settings, state, layout, Git(settings.git_timeout, layout.home, creds))

    def sweep(self, on_failures: Callable[[Workspace, list[str]], None]) -> None:
        """Delete retired revisions in the background (one sweep at a time); report failures."""
        if self._sweeper is not None and not self._sweeper.done():
            self._sweep_again = True
            return
        self._sweeper = asyncio.create_task(self._sweep(on_failures), name="scripts-sweep")

    async def _sweep(self, on_failures: Callable[[Workspace, list[str]], None]) -> None:
        stop = threading.Event()
        try:
            while True:
                self._sweep_again = False
                on_failures(self, await asyncio.to_thread(self.layout.empty_trash, stop))
                if not self._sweep_again:
                    return
        except asyncio.CancelledError:
            stop.set()  # the thread stops between folders; the next start empties the rest
            raise
        except OSError as exc:
            on_failures(self, [str(exc)])

    async def settle(self) -> None:
        """Wait for the background work: the sweep, the spare (a one-shot command does before it exits)."""
        for task in (self._sweeper, self.spare_task):
            if task is not None:
                await task

    def scratch(self, what: str) -> Path:
        """A unique path in the scratch folder (for temporary index files)."""
        return self.layout.tmp / f"{what}-{next(self._counter)}"

    @property
    def repo(self) -> Path:
        """The bare repository."""
        return self.layout.repo


log = logs.get("scripts")
