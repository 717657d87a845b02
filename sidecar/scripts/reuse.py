"""Carry local files onto a new revision by hard link instead of writing them again.

A new revision gets every file it takes unchanged from the current one (added scripts, data a
user keeps beside them, ignored files) as a hard link to the same file. Creating a link costs no
data copy, so carrying 20,000 added files is about as fast as carrying 20. Both trees then share
those files: an edit made through either link shows in both, which is what carrying means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

from sidecar.scripts.git import Git
from sidecar.scripts.trees import changed_paths

REGULAR = ("100644", "100755")


def _link_all(old: Path, new: Path, paths: list[str]) -> list[str]:
    """Hard-link ``old/p`` to ``new/p`` for each path; return those linked. Blocking: run in a thread.

    A path is skipped (git writes it instead) when its source is no longer a plain file or any
    folder on its way in the new tree is not a real folder (a link there could lead elsewhere).
    Paths are plain strings: for 20,000 files, pathlib's objects cost more than the links.
    """
    old_root, new_root = os.fspath(old), os.fspath(new)
    real_dirs: set[str] = {""}
    linked = []
    for rel in paths:
        if not _real_parents(new_root, os.path.dirname(rel), real_dirs):
            continue
        src, dest = f"{old_root}/{rel}", f"{new_root}/{rel}"
        try:
            if not stat.S_ISREG(os.lstat(src).st_mode):
                continue
            os.link(src, dest, follow_symlinks=False)
        except FileExistsError:  # the new revision's own version of the file: replace it
            head, name = os.path.split(dest)
            tmp = f"{head}/.{name}.sidecar-link"
            try:
                os.link(src, tmp, follow_symlinks=False)
                os.replace(tmp, dest)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                continue
        except OSError:
            continue
        linked.append(rel)
    return linked


def _real_parents(root: str, folder: str, real_dirs: set[str]) -> bool:
    """Make sure ``root/folder`` and its parents below ``root`` are real folders, creating missing ones."""
    if folder in real_dirs:
        return True
    if not _real_parents(root, os.path.dirname(folder), real_dirs):
        return False
    path = f"{root}/{folder}"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        try:
            os.mkdir(path)
        except OSError:
            return False
        mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        return False
    real_dirs.add(folder)
    return True


async def link_unchanged(git: Git, repo: Path, old: Path, new: Path, theirs: str, ours: str, merged: str,
                         index_file: Path) -> int:
    """Link into ``new`` (checked out at ``theirs``) the files ``merged`` takes as they are in ``old``
    (whose files are ``ours``), and record them in ``index_file`` with their stat data, so
    applying ``merged`` then leaves them alone. Returns how many files were linked.
    """
    from_ours = {path for _, _, path in await changed_paths(git, repo, ours, merged)}
    wanted = [path for mode, _, path in await changed_paths(git, repo, theirs, merged)
              if mode in REGULAR and path not in from_ours]
    if not wanted:
        return 0
    linked = await asyncio.to_thread(_link_all, old, new, wanted)
    if linked:
        await git.run(["update-index", "--add", "-z", "--stdin"], cwd=new, env={"GIT_INDEX_FILE": str(index_file)},
                      stdin=b"".join(path.encode(errors="surrogateescape") + b"\0" for path in linked))
    return len(linked)
