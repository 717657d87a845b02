"""What every scripts operation needs: settings, the layout, a git runner, the state, scratch names."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from sidecar import logs
from sidecar.config import Settings
from sidecar.scripts.git import Credentials, Git
from sidecar.scripts.layout import Layout
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

    @classmethod
    def create(cls, settings: Settings, state: State) -> Workspace:
        """Build the workspace from settings."""
        layout = Layout(settings.revisions_root, settings.link)
        creds = Credentials(
            username=settings.git_username,
            password_file=settings.git_password_file,
            ssh_key_file=settings.ssh_key_file,
            known_hosts_file=settings.ssh_known_hosts_file,
            ssh_connect_timeout=max(1, int(min(settings.git_timeout, 30))),
        )
        return cls(settings, state, layout, Git(settings.git_timeout, layout.home, creds))

    def scratch(self, what: str) -> Path:
        """A unique path in the scratch folder (for temporary index files)."""
        return self.layout.tmp / f"{what}-{next(self._counter)}"

    @property
    def repo(self) -> Path:
        """The bare repository."""
        return self.layout.repo


log = logs.get("scripts")
