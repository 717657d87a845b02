"""Crash safety: SIGKILL the sidecar at many points across seeding, syncing and carrying edits;
after every kill the volume must hold one complete revision and every local edit, and the restart
must leave no stray state behind.

The kills spread over the whole operation, and the test goes on until they have landed in every
phase of a publication (before a revision is built, while it is built, after the link is swapped)
and at least ``KILLS`` times. ``SIDECAR_TEST_KILLS`` raises the count for a long soak run
(docs/testing.md).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli, sidecar_env
from tests.gitrepos import Upstream, git, many_files, read_tree

KILLS = int(os.environ.get("SIDECAR_TEST_KILLS", "40"))  # kills that must land while the process works
# On a loaded machine some kills come after the work is done, and a short phase may be missed for
# a while: allow more rounds. Every round ends in a checked restart, so extra rounds only cost time.
MAX_ROUNDS = max(4 * KILLS, 160)
# A soak run with a larger count needs more than the suite's per-test timeout.
pytestmark = pytest.mark.timeout(max(600, 15 * KILLS))
PHASES = {"before building", "building", "after the swap"}
LOCAL = "node-deployment/local_script.al"
MAIN = "node-deployment/main.al"


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sidecar", *args], env=sidecar_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the process group; True when it was still running (a real mid-operation crash)."""
    alive = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return alive


def _check_consistent(link: Path, upstream: Upstream, commits: dict[str, dict[str, str]],
                      edits: dict[str, str | None], *, may_be_missing: bool) -> None:
    """The link is missing (first seed only) or names one complete revision holding every edit."""
    if not link.is_symlink():
        assert may_be_missing, "a published link must never disappear"
        assert not link.exists()
        return
    target = link.resolve()
    assert target.is_dir(), "the link must resolve to a folder"
    marker = target.parent / f"{target.name}.ok"
    assert marker.exists(), f"the link names an incomplete revision {target.name}"
    head = git("rev-parse", "HEAD", cwd=link)
    assert head in commits, "the revision must be one upstream commit"
    expected = dict(commits[head])
    for rel, content in edits.items():
        if content is None:
            expected.pop(rel, None)
        else:
            expected[rel] = content
    assert read_tree(link) == expected


def _phase(link: Path, head: str) -> str:
    """Which phase of a publication a kill interrupted, read from what it left on the volume.

    The restart before each round leaves no incomplete revision, so one found now is this round's.
    """
    revs = link.parent / ".sidecar" / "revs"
    if link.is_symlink() and link.exists() and git("rev-parse", "HEAD", cwd=link) == head:
        return "after the swap"
    if revs.is_dir() and any(p.is_dir() and not (revs / f"{p.name}.ok").exists() for p in revs.iterdir()):
        return "building"
    if revs.is_dir() and any((revs / f"{p.name}.ok").exists() and p.name.split("-")[1] == head[:12]
                             for p in revs.iterdir() if p.is_dir()):
        return "complete, not yet live"
    return "before building"


def _check_clean(link: Path) -> None:
    root = link.parent / ".sidecar"
    revs = [p for p in (root / "revs").iterdir() if p.is_dir()]
    scratch = sorted(p.name for p in (root / "tmp").iterdir())
    assert set(scratch) <= {f"index-{r.name}" for r in revs}, f"only snapshot indexes may stay: {scratch}"
    assert len(revs) <= 2, f"only the current and previous revisions may remain: {revs}"
    markers = list((root / "revs").glob("*.ok"))
    assert {m.name[:-3] for m in markers} == {r.name for r in revs}
    assert not list(link.parent.glob(f".{link.name}.tmp-*")), "no temp links may remain"
    assert not list(root.glob("repo.git.broken-*")), "a crash must never look like corruption"
    worktrees = git("worktree", "list", "--porcelain", cwd=root / "repo.git").count("worktree ")
    assert worktrees == len(revs) + 1


def test_sigkill_at_many_points_never_loses_the_tree_or_an_edit(tmp_path: Path) -> None:
    base_files = many_files(300)
    up = Upstream(tmp_path, base_files)
    commits = {up.head(): dict(base_files)}
    link = tmp_path / "vol" / "scripts"
    edits: dict[str, str | None] = {}
    common = ["--link", str(link), "--repo", up.url]

    # Calibrate: how long one sync takes here, so the kills spread over the whole operation.
    durations = []
    for n in range(3):
        files = {MAIN: f"calibrate {n}\n"}
        base_files.update(files)
        commits[up.commit(files)] = dict(base_files)
        started = time.monotonic()
        assert cli(["seed", *common]).returncode == 0
        durations.append(time.monotonic() - started)
    span = statistics.median(durations) * 1.2

    mid_operation = 0
    phases: set[str] = set()
    for i in range(MAX_ROUNDS):
        if mid_operation >= KILLS and phases >= PHASES:
            break
        fresh_volume = i % 10 == 0
        if fresh_volume:
            link = tmp_path / f"vol{i}" / "scripts"
            common = ["--link", str(link), "--repo", up.url]
            edits = {}
        else:
            # A user edits the live tree: a change, a new file, sometimes a deletion.
            edits[LOCAL] = f"# edit before kill {i}\n"
            edits[f"user/edit-{i}.al"] = f"user file {i}\n"
            if i % 7 == 3:
                edits[f"sample-code/sample_{i % 6}.al"] = None
            for rel, content in edits.items():
                path = link / rel
                if content is None:
                    path.unlink(missing_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(content)
        # Upstream moves (a file nobody edits locally, so the edits always carry).
        files = {MAIN: f"upstream {i}\n", f"upstream/new-{i}.al": f"new {i}\n"}
        base_files.update(files)
        commits[up.commit(files)] = dict(base_files)

        run_mode = i % 5 == 4
        args = ["run", "--http-port", "0", "--period", "0.05", *common] if run_mode else ["seed", *common]
        proc = _start(args)
        # The first ~0.1 s is interpreter start-up; spread the rest across the operation.
        delay = 0.08 + span * ((i * 37) % 120) / 120
        try:
            time.sleep(delay * (2.5 if run_mode else 1.0))  # not a wait: this picks the kill's moment
        finally:  # a timeout or an interrupt here must not leave a sidecar running on its own
            killed_alive = _kill(proc)
        if killed_alive:
            mid_operation += 1
            phases.add(_phase(link, up.head()))

        _check_consistent(link, up, commits, edits, may_be_missing=fresh_volume)
        result = cli(["seed", *common])
        assert result.returncode == 0, result.stderr
        _check_consistent(link, up, commits, edits, may_be_missing=False)
        assert git("rev-parse", "HEAD", cwd=link) == up.head(), "the restart completes the sync"
        _check_clean(link)

    assert mid_operation >= KILLS, f"only {mid_operation} kills landed while the process was working"
    assert phases >= PHASES, f"the kills never landed {PHASES - phases} (they landed {phases})"
