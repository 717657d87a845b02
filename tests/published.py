"""A published scripts layout built the way the publisher builds it, for the watch and hook tests.

A history repository, one git worktree per revision under ``<root>/revs/``, and a relative symlink
swapped with a temporary link plus ``rename()``. Built with the real git CLI, independent of the
scripts package (the tests must not lean on the code they are not about).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
}


def git(*args: str, cwd: Path) -> str:
    """Run git, fail loudly, return stdout."""
    done = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


class Published:
    """``<base>/vol/deployment-scripts`` -> ``.sidecar/revs/<revision>``, like the publisher's layout."""

    def __init__(self, base: Path) -> None:
        self.volume = base / "vol"
        self.root = self.volume / ".sidecar"
        self.history = self.root / "history"
        self.link = self.volume / "deployment-scripts"
        self.history.mkdir(parents=True)
        git("init", "-q", cwd=self.history)

    def commit(self, files: dict[str, str]) -> str:
        """Write ``files`` into the history's work tree, commit everything, return the revision."""
        for rel, text in files.items():
            path = self.history / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.history)
        git("commit", "-q", "-m", "rev", cwd=self.history)
        return git("rev-parse", "HEAD", cwd=self.history)

    def revision_dir(self, revision: str) -> Path:
        """Where a revision is checked out."""
        return self.root / "revs" / revision[:12]

    def publish(self, revision: str) -> Path:
        """Check ``revision`` out into its own worktree and swap the link onto it atomically."""
        target = self.revision_dir(revision)
        git("worktree", "prune", cwd=self.history)
        git("worktree", "add", "-q", "--force", "--detach", str(target), revision, cwd=self.history)
        tmp = self.volume / ".deployment-scripts.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, self.volume))
        tmp.replace(self.link)  # rename(): the link is the old target or the new one, never absent
        return target


async def eventually(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Wait until ``predicate()`` holds; a bound on an outcome, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def in_other_process(code: str, *args: str) -> None:
    """Run Python ``code`` in a separate process (as a user's `kubectl exec` would edit files)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
