"""The git remote: a cheap ``ls-remote`` check, then a shallow fetch of exactly one commit."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sidecar.config import is_sha
from sidecar.scripts.git import UNFLUSHED, Git, GitError, split_userinfo

UPSTREAM_REF = "refs/sidecar/upstream"


def _parse_ls_remote(text: str) -> dict[str, str]:
    refs: dict[str, str] = {}
    for line in text.splitlines():
        sha, _, name = line.partition("\t")
        if sha.startswith("ref:"):
            continue
        if len(sha) >= 40 and name:
            refs[name] = sha
    return refs


async def resolve(git: Git, repo_url: str, ref: str | None) -> str:
    """The commit the remote's ``ref`` points at (branch, tag, full ref name, or the default branch).

    A pinned commit SHA resolves to itself without asking the remote.
    """
    if ref is not None and is_sha(ref) and len(ref) == 40:
        return ref
    if ref is None:
        patterns = ["HEAD"]
    elif ref.startswith("refs/"):
        patterns = [ref, f"{ref}^{{}}"]
    else:
        patterns = [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]
    # User info in the URL reaches git through the credential helper (see Workspace), never argv.
    out = await git.out(["ls-remote", "--", split_userinfo(repo_url)[0], *patterns], remote=True)
    refs = _parse_ls_remote(out)
    if ref is None:
        if "HEAD" in refs:
            return refs["HEAD"]
        raise GitError("the remote has no default branch (HEAD)", reason="ref-not-found")
    for name in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"{ref}^{{}}", ref):
        if name in refs:
            return refs[name]
    if is_sha(ref):  # an abbreviated SHA: fetch can't ask for it; only a full one works
        raise GitError(f"ref {ref!r} looks like an abbreviated commit SHA: give all 40 hex digits",
                       reason="ref-not-found")
    raise GitError(f"ref {ref!r} not found on the remote", reason="ref-not-found")


def _read_ref(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


async def has_commit(git: Git, repo: Path, sha: str) -> bool:
    """True when the commit is already in the local repository."""
    result = await git.run(["cat-file", "-e", f"{sha}^{{commit}}"], git_dir=repo, check=False)
    return result.returncode == 0


async def fetch(git: Git, repo: Path, repo_url: str, ref: str | None, sha: str | None, depth: int) -> str:
    """Fetch ``sha`` (or, when it is None or not served by id, what ``ref`` names now) into the
    bare repository under UPSTREAM_REF; return the commit.

    ``sha=None`` skips the ``ls-remote`` round trip: the first seed fetches the ref by name.
    A branch may have moved since ``resolve``: the newer commit wins. Nothing is flushed here
    (see ``UNFLUSHED``): the caller publishes, which flushes, or flushes itself.
    """
    if sha is not None and await has_commit(git, repo, sha):
        return sha
    depth_args = [f"--depth={depth}"] if depth > 0 else []
    if ref is not None and is_sha(ref) and len(ref) == 40:
        want = ref
    elif sha is not None:
        want = sha  # protocol v2 servers serve any reachable commit; by name below otherwise
    else:
        want = ref or "HEAD"
    args = ["fetch", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", *depth_args, "--",
            split_userinfo(repo_url)[0], f"+{want}:{UPSTREAM_REF}"]
    try:
        await git.run(args, git_dir=repo, remote=True, env=UNFLUSHED)
    except GitError as exc:
        if exc.reason == "ref-not-found" and want != sha:
            raise GitError(f"ref {ref or 'HEAD'!r} not found on the remote", reason="ref-not-found") from None
        if want != sha or ref is None or is_sha(ref):
            raise
        args[-1] = f"+{ref}:{UPSTREAM_REF}"  # a server that only serves advertised refs
        await git.run(args, git_dir=repo, remote=True, env=UNFLUSHED)
    # The fetch has just written the ref as a file of its own: reading it saves a git call on the way
    # to a visible push. git is asked when that file is not there or says something else.
    text = await asyncio.to_thread(_read_ref, repo / UPSTREAM_REF)
    if re.fullmatch(r"[0-9a-f]{40}", text):
        return text
    return await git.out(["rev-parse", f"{UPSTREAM_REF}^{{commit}}"], git_dir=repo)
