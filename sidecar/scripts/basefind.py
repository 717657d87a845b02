"""The upstream commit a copied tree came from, for a tree adopted without its ``.git``.

The old shell recipe cloned into a temporary folder, then ran ``mv tmp/* deployment-scripts``:
the files arrived, ``.git`` (and every other top-level dotfile) stayed behind. Without a base,
every file would count as a local edit. The base is the commit, on the configured ref's
first-parent history, whose files match the tree best (same paths, same blob ids).

The search fetches a bounded stretch of history (``MAX_COMMITS``) into a ref of its own, then
walks it with one ``git log --raw``: each commit's tree is the next newer one with that commit's
changes undone, so the score of every commit costs only the files that commit changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.config import is_sha
from sidecar.scripts.git import Git, GitError
from sidecar.scripts.workspace import Workspace, log

HISTORY_REF = "refs/sidecar/history"
MAX_COMMITS = 1000
BUDGET = 60.0  # seconds for the fetch and the walk together; past it, adoption goes on without a base
MIN_SHARE = 0.5  # identical files over every path either side has; below it, no commit is a base
GITLINK = "160000"


@dataclass(frozen=True)
class Match:
    """The chosen base (or none) and how the tree compares with it."""

    commit: str | None
    reason: str
    searched: int = 0
    identical: int = 0
    edited: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    not_moved: list[str] = field(default_factory=list)  # top-level dotfiles ``mv *`` left behind

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` and Event view (lists shortened)."""
        return {
            "base": self.commit, "reason": self.reason, "commits_searched": self.searched,
            "identical": self.identical, "edited": len(self.edited), "added": len(self.added),
            "missing": len(self.missing), "not_moved": len(self.not_moved),
            "edited_files": self.edited[:50], "added_files": self.added[:50], "missing_files": self.missing[:50],
        }


async def listing(git: Git, repo: Path, treeish: str) -> dict[str, str]:
    """``path -> blob id`` of every file and symlink of a tree or commit (submodules left out)."""
    out = await git.run(["ls-tree", "-r", "-z", "--full-tree", treeish], git_dir=repo)
    files: dict[str, str] = {}
    for entry in out.stdout.split(b"\0"):
        meta, tab, raw = entry.partition(b"\t")
        if not tab:
            continue
        mode, _, oid = meta.decode().split(" ")
        if mode != GITLINK:
            files[raw.decode(errors="surrogateescape")] = oid
    return files


def _not_moved(path: str) -> bool:
    """What ``mv tmp/* dest`` leaves behind: entries at the top level whose name starts with a dot."""
    return path.startswith(".")


def compare(tree: Mapping[str, str], base: Mapping[str, str], commit: str, reason: str, searched: int) -> Match:
    """Classify every path of ``tree`` against ``base``."""
    identical = sum(1 for p, oid in tree.items() if base.get(p) == oid)
    return Match(
        commit, reason, searched, identical,
        edited=sorted(p for p, oid in tree.items() if p in base and base[p] != oid),
        added=sorted(p for p in tree if p not in base),
        missing=sorted(p for p in base if p not in tree and not _not_moved(p)),
        not_moved=sorted(p for p in base if p not in tree and _not_moved(p)),
    )


def _history(raw: bytes) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """``(commit, [(path, blob in the first parent or None)])`` from ``git log --raw -z``, newest first."""
    commit: str | None = None
    changes: list[tuple[str, str | None]] = []
    tokens = iter(raw.split(b"\0"))
    for token in tokens:
        text = token.lstrip(b"\n")
        if text.startswith(b"C "):
            if commit is not None:
                yield commit, changes
            commit, changes = text[2:].decode().strip(), []
        elif text.startswith(b":"):
            old_mode, new_mode, old_oid, _, _ = text[1:].decode().split(" ")
            path = next(tokens).decode(errors="surrogateescape")
            if GITLINK in (old_mode, new_mode):
                continue
            changes.append((path, None if old_mode == "000000" else old_oid))
    if commit is not None:
        yield commit, changes


def best(tree: Mapping[str, str], tip: Mapping[str, str], log_raw: bytes) -> tuple[str | None, int, int, int]:
    """Walk history from the tip; return (best commit, its score, its path count, commits walked).

    Best: the most identical files, then the fewest paths either side has (a later commit that only
    added files is not the one copied), then the oldest: when commits differ only in files the
    person edited, the oldest makes upstream's later changes to those files a conflict the person
    settles, instead of dropping them silently. Dotfiles at the top level that the tree lacks
    count neither way (``mv *`` never moved them).
    """
    files = {p: oid for p, oid in tip.items()}
    score = sum(1 for p, oid in files.items() if tree.get(p) == oid)
    paths = len(tree) + sum(1 for p in files if p not in tree and not _not_moved(p))
    chosen: tuple[str | None, int, int] = (None, -1, 0)
    walked = 0
    for commit, changes in _history(log_raw):
        walked += 1
        if score > chosen[1] or (score == chosen[1] and paths <= chosen[2]):
            chosen = (commit, score, paths)
        for path, parent_oid in changes:  # undo this commit: the files become its parent's
            before = files.get(path)
            if before is not None:
                score -= tree.get(path) == before
                paths -= path not in tree and not _not_moved(path)
            if parent_oid is None:
                files.pop(path, None)
            else:
                files[path] = parent_oid
                score += tree.get(path) == parent_oid
                paths += path not in tree and not _not_moved(path)
    return chosen[0], chosen[1], chosen[2], walked


async def _fetch_history(ws: Workspace) -> str:
    """Fetch up to MAX_COMMITS of the configured ref's history; return its tip."""
    settings = ws.settings
    assert settings.repo is not None
    ref = settings.ref or "HEAD"
    depth = [] if settings.depth == 0 else [f"--depth={MAX_COMMITS}"]
    await ws.git.run(["fetch", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", *depth, "--",
                      settings.repo, f"+{ref}:{HISTORY_REF}"], git_dir=ws.repo, remote=True)
    return await ws.git.out(["rev-parse", f"{HISTORY_REF}^{{commit}}"], git_dir=ws.repo)


def _walk(folder: Path) -> tuple[list[str], dict[str, str]]:
    """The regular files of ``folder`` (``.git`` left out), and its symlinks with their blob ids.

    Blocking: run in a thread. A symlink's blob is its target, hashed here as git hashes it.
    """
    files: list[str] = []
    links: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if os.path.islink(full):
                target = os.fsencode(os.readlink(full))
                links[rel] = hashlib.sha1(b"blob %d\0" % len(target) + target, usedforsecurity=False).hexdigest()
            elif os.path.isfile(full) and "\n" not in rel:
                files.append(rel)
    return files, links


async def hash_folder(git: Git, repo: Path, folder: Path) -> dict[str, str]:
    """``path -> blob id`` of a plain folder's files, as ``git add`` would store them, writing nothing."""
    files, ids = await asyncio.to_thread(_walk, folder)
    if files:
        out = await git.run(["hash-object", "--stdin-paths"], git_dir=repo, cwd=folder,
                            env={"GIT_WORK_TREE": str(folder)},
                            stdin=b"".join(os.fsencode(f) + b"\n" for f in files))
        ids.update(zip(files, out.stdout.decode().split(), strict=True))
    return ids


async def _search(ws: Workspace, folder: Path) -> Match:
    # Hash the folder while the history arrives: both take a while, neither needs the other.
    tree, tip = await asyncio.gather(hash_folder(ws.git, ws.repo, folder), _fetch_history(ws))
    log_raw = (await ws.git.run(
        ["log", "--first-parent", "--diff-merges=first-parent", "--raw", "--no-renames", "--no-abbrev", "-r", "-z",
         f"--max-count={MAX_COMMITS}", "--format=C %H", tip], git_dir=ws.repo)).stdout
    tip_files = await listing(ws.git, ws.repo, tip)
    commit, score, paths, walked = await asyncio.to_thread(best, tree, tip_files, log_raw)
    ref = ws.settings.ref or "the default branch"
    if commit is None or paths == 0 or score < MIN_SHARE * paths:
        share = f"{score}/{paths}" if commit is not None else "no commits"
        return Match(None, f"no commit among the last {walked} of {ref} has half of the files identical "
                           f"(best: {share})", walked)
    base = await listing(ws.git, ws.repo, commit)
    return compare(tree, base, commit, f"best match among the last {walked} commits of {ref}: "
                                       f"{score} of {paths} files identical", walked)


async def find_base(ws: Workspace, folder: Path) -> Match:
    """The base for the tree in ``folder``, or a Match without commit saying why not."""
    if ws.settings.repo is None:
        return Match(None, "no repository configured to search")
    if ws.settings.ref is not None and is_sha(ws.settings.ref) and len(ws.settings.ref) < 40:
        return Match(None, "an abbreviated commit SHA names no history to search")
    try:
        async with asyncio.timeout(BUDGET):
            return await _search(ws, folder)
    except TimeoutError:
        return Match(None, f"the history search ran out of its {BUDGET:g} s budget")
    except GitError as exc:
        log.warning("base_search_failed", error=str(exc))
        return Match(None, f"history could not be read: {exc}")
    finally:
        await ws.git.run(["update-ref", "-d", HISTORY_REF], git_dir=ws.repo, check=False)


async def restore(git: Git, repo: Path, tree: str, base: str, paths: list[str], index_file: Path) -> str:
    """``tree`` with ``paths`` added as ``base`` has them: the dotfiles ``mv *`` left behind are not deletions."""
    if not paths:
        return tree
    env = {"GIT_INDEX_FILE": str(index_file)}
    try:
        await git.run(["read-tree", tree], git_dir=repo, env=env)
        entries = await git.run(["ls-tree", "-r", "-z", "--full-tree", base, "--",
                                 *(f":(literal){p}" for p in paths)], git_dir=repo)
        await git.run(["update-index", "-z", "--index-info"], git_dir=repo, env=env, stdin=entries.stdout)
        return await git.out(["write-tree"], git_dir=repo, env=env)
    finally:
        index_file.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata unlink
