"""Migration from the old recipe (``git clone`` to a temp folder, ``mv tmp/* scripts``), with real git.

The copy has no ``.git`` and lacks the top-level dotfiles; the person edited a few files. Adoption
must find the commit the copy came from and count only the person's changes as edits.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sidecar.scripts.basefind import best, compare
from tests.conftest import seed
from tests.gitrepos import Upstream, default_files, git, read_tree

EDITED = "node-deployment/local_script.al"
ADDED = "mine.al"
DELETED = "README.md"


def log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event."""
    out = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            out.append(entry)
    return out


def recipe(upstream: Upstream, tmp_path: Path, link: Path, *, at: str | None = None, branch: str = "main") -> None:
    """The old shell recipe, literally: clone into a temp folder, then ``mv tmp/* link``."""
    tmp = tmp_path / "deployment-scripts-tmp"
    git("clone", "-q", "-b", branch, upstream.url, str(tmp))
    if at is not None:
        git("checkout", "-q", at, cwd=tmp)
    link.mkdir(parents=True)
    subprocess.run(f"mv {tmp}/* {link}/", shell=True, check=True)
    assert not (link / ".git").exists() and not (link / ".gitignore").exists(), "mv * leaves dotfiles behind"


def person_edits(link: Path) -> None:
    """A changed, an added and a deleted file, as made through kubectl exec."""
    with (link / EDITED).open("a") as f:
        f.write("set my_setting = 1\n")
    (link / ADDED).write_text("my own script\n")
    (link / DELETED).unlink()


def history(tmp_path: Path) -> tuple[Upstream, str]:
    """A repository with a few commits; returns it and the commit the recipe copies."""
    up = Upstream(tmp_path)
    up.commit({"sample-code/sample_0.al": "# sample 0, v2\n"})
    up.commit({"sample-code/extra.al": "extra\n", "sample-code/gone.al": "removed upstream later\n"})
    copied = up.commit({"node-deployment/set_params.al": "set node_name = v3\n"})
    return up, copied


def move_upstream(up: Upstream, *, touch_edited: bool) -> str:
    """Several upstream commits after the copy; one touches the edited file when asked."""
    up.commit({"sample-code/sample_1.al": "# sample 1, later\n"})
    up.commit({"sample-code/gone.al": None})  # upstream's deletion: the copy still has the file
    if touch_edited:
        up.commit({EDITED: "# user script, rewritten upstream\n"})
    up.commit({".gitignore": "*.log\n*.tmp\n"})
    return up.commit({"sample-code/sample_3.al": "# sample 3, later\n"})


def status_paths(link: Path) -> list[str]:
    out = git("status", "--porcelain", "--untracked-files=all", cwd=link)
    return sorted(line.split()[-1] for line in out.splitlines())  # the test's paths hold no spaces


def migrate(tmp_path: Path, *, touch_edited: bool) -> tuple[str, str, Path, str]:
    """The whole story: history, the recipe's copy, the person's edits, upstream moving on, ``seed``.

    Returns the copied commit, the tip, the link and seed's log.
    """
    up, copied = history(tmp_path)
    link = tmp_path / "vol" / "deployment-scripts"
    recipe(up, tmp_path, link, at=copied)
    person_edits(link)
    tip = move_upstream(up, touch_edited=touch_edited)
    result = seed(link, "--repo", up.url, "--ref", "main")
    assert result.returncode == 0, result.stderr
    return copied, tip, link, result.stderr


def test_recipe_copy_gets_its_commit_as_base_and_only_the_persons_edits_are_carried(
        tmp_path: Path, sidecar_factory: Any) -> None:
    copied, tip, link, stderr = migrate(tmp_path, touch_edited=False)
    [found] = log_events(stderr, "adoption_base")
    assert found["base"] == copied
    assert (found["edited"], found["added"], found["missing"]) == ([EDITED], [ADDED], [DELETED])
    assert found["not_moved"] == [".gitignore"], "dotfiles mv * left behind are not deletions"

    # Carried onto the tip: the three edits, and upstream's own changes, deletion included.
    assert git("rev-parse", "HEAD", cwd=link) == tip
    assert status_paths(link) == sorted([EDITED, ADDED, DELETED])
    tree = read_tree(link)
    assert tree[EDITED].endswith("set my_setting = 1\n")
    assert tree[ADDED] == "my own script\n"
    assert DELETED not in tree
    assert "sample-code/gone.al" not in tree, "upstream's deletion after the base is not a local addition"
    assert tree[".gitignore"] == "*.log\n*.tmp\n"
    assert tree["sample-code/sample_3.al"] == "# sample 3, later\n"
    assert not log_events(stderr, "sync_conflict")

    # The sidecar that runs after the init container's seed shows the adoption in /status.
    sc = sidecar_factory(["--link", str(link), "--repo", f"file://{tmp_path}/upstream.git", "--period", "3600"])
    sc.wait_for(lambda: sc.status()["scripts"]["adoption"] is not None, 20, "adoption in /status")
    adoption = sc.status()["scripts"]["adoption"]
    assert (adoption["base"], adoption["edited_files"], adoption["identical"]) == (copied, [EDITED], found["identical"])
    assert not (link.parent / ".sidecar" / "adoption.json").exists(), "announced once"


def test_upstream_change_to_an_edited_file_conflicts_for_that_file_only(tmp_path: Path) -> None:
    copied, tip, link, stderr = migrate(tmp_path, touch_edited=True)
    assert log_events(stderr, "adoption_base")[0]["base"] == copied
    [conflict] = log_events(stderr, "sync_conflict")
    assert conflict["files"] == [EDITED]
    assert conflict["upstream"] == tip, "the held conflict names the upstream commit it holds back"
    # Held: the adopted tree stays, on its base, with exactly the person's edits.
    assert git("rev-parse", "HEAD", cwd=link) == copied
    assert status_paths(link) == sorted([EDITED, ADDED, DELETED])
    assert read_tree(link)[EDITED].endswith("set my_setting = 1\n")


def test_tree_cloned_from_another_branch_gets_the_fork_point_and_the_branch_changes_as_edits(
        tmp_path: Path) -> None:
    up, fork = history(tmp_path)
    git("checkout", "-q", "-b", "os-dev", cwd=up.work)
    up.branch = "os-dev"
    up.commit({"node-deployment/main.al": "process os-dev main\n"})
    up.commit({"os-dev-only.al": "os-dev\n"})
    git("checkout", "-q", "main", cwd=up.work)
    up.branch = "main"
    tip = move_upstream(up, touch_edited=False)

    link = tmp_path / "vol" / "deployment-scripts"
    recipe(up, tmp_path, link, branch="os-dev")
    result = seed(link, "--repo", up.url, "--ref", "main")
    assert result.returncode == 0, result.stderr
    [found] = log_events(result.stderr, "adoption_base")
    assert found["base"] == fork
    assert (found["edited"], found["added"], found["missing"]) == (["node-deployment/main.al"], ["os-dev-only.al"], [])
    assert git("rev-parse", "HEAD", cwd=link) == tip
    assert status_paths(link) == ["node-deployment/main.al", "os-dev-only.al"]


def test_tree_matching_nothing_falls_back_to_every_file_an_edit_and_says_so(tmp_path: Path) -> None:
    up, _ = history(tmp_path)
    link = tmp_path / "vol" / "deployment-scripts"
    link.mkdir(parents=True)
    for i in range(5):
        (link / f"unrelated_{i}.al").write_text(f"nothing upstream has {i}\n")
    (link / "README.md").write_text(default_files()["README.md"])  # one file in common is not enough
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    [missed] = log_events(result.stderr, "adoption_base_not_found")
    assert "half of the files" in missed["reason"] and "empty base" in missed["reason"]
    assert not log_events(result.stderr, "adoption_base")
    # Today's behaviour: on the empty base every file is the person's, so nothing of theirs is lost.
    tree = read_tree(link)
    assert all(tree[f"unrelated_{i}.al"] == f"nothing upstream has {i}\n" for i in range(5))
    assert status_paths(link) == [f"unrelated_{i}.al" for i in range(5)]


def test_walk_scores_each_commit_from_the_changes_alone() -> None:
    """The history walk, in process: parent trees rebuilt from ``--raw`` changes, ties to the oldest."""
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    zero = "0" * 40
    tip = {"x": a, "y": b}
    # newest first: c3 changed y (b <- a), c2 added y, c1 added x
    raw = (f"C c3\0\n:100644 100644 {a} {b} M\0y\0"
           f"C c2\0\n:000000 100644 {zero} {a} A\0y\0"
           f"C c1\0\n:000000 100644 {zero} {a} A\0x\0").encode()
    assert best({"x": a, "y": a}, tip, raw)[:3] == ("c2", 2, 2)
    assert best({"x": a, "y": c}, tip, raw)[:3] == ("c1", 1, 2), "a tie goes to the oldest commit"
    assert best({"x": a}, tip, raw)[:3] == ("c1", 1, 1)
    match = compare({"x": a, "z": c, ".env": a}, {"x": b, "y": a, ".gitignore": a}, "c1", "why", 3)
    assert (match.edited, match.added, match.missing, match.not_moved) == (["x"], [".env", "z"], ["y"], [".gitignore"])
