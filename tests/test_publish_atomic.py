"""Readers through the link always see one whole revision, never a mix and never nothing."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from sidecar.config import load
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.gitrepos import Upstream


def revision_files(n: int) -> dict[str, str]:
    return {f"dir{i % 4}/file{i}.al": f"revision {n}\n" for i in range(40)}


def test_readers_never_see_a_mixed_or_missing_tree(tmp_path: Path) -> None:
    up = Upstream(tmp_path, revision_files(0))
    link = tmp_path / "vol" / "scripts"
    settings = load(["run", "--link", str(link), "--repo", up.url], {})
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                # What a process does when it opens the scripts folder: resolve once, read within.
                root = os.path.realpath(link)
                seen = set()
                count = 0
                for dirpath, dirnames, filenames in os.walk(root):
                    if ".git" in dirnames:
                        dirnames.remove(".git")
                    for name in filenames:
                        if name.endswith(".al"):
                            seen.add(Path(dirpath, name).read_text())
                            count += 1
            except OSError as exc:
                problems.append(f"read failed: {exc}")
                continue
            if count != 40 or len(seen) != 1:
                problems.append(f"mixed or partial tree: {count} files, versions {sorted(seen)}")
            reads[0] += 1

    async def main() -> None:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for n in range(1, 16):
                up.commit(revision_files(n))
                assert await sync_once(ws) == "ok"
        finally:
            stop.set()
            for t in threads:
                t.join()

    asyncio.run(main())
    assert not problems, problems[:5]
    assert reads[0] > 15
