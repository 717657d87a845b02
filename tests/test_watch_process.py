"""The real sidecar process with real git: change hooks fire for a person's edits, never for publications."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepos import Upstream, many_files

pytestmark = pytest.mark.timeout(240)


def path_logger(tmp: Path) -> tuple[str, Path]:
    """A change-hook command that appends the changed paths of each run as one JSON line."""
    log = tmp / "changes.log"
    script = tmp / "hook.py"
    script.write_text("import json, os, sys\n"
                      "paths = os.environ['SIDECAR_CHANGED_PATHS'].splitlines()\n"
                      "open(sys.argv[1], 'a').write(json.dumps(paths) + '\\n')\n")
    return f"{sys.executable} {script} {log}", log


def runs(log: Path) -> list[list[str]]:
    """The paths of every hook run so far."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def edit(path: Path) -> None:
    """A person's edit, from a shell."""
    subprocess.run(["sh", "-c", f"echo '# edited' >> '{path}'"], check=True, timeout=10)


def settle(sc: Any, log: Path, quiet: float = 2.0) -> dict[str, Any]:
    """Wait until the change hook has nothing pending, every run is logged, and nothing moved for
    ``quiet`` seconds; return its ``/status`` entry."""
    def now() -> tuple[Any, ...]:
        hook = sc.status()["hooks"]["change-exec"]
        return hook["triggers"], sum(hook["runs"].values()), hook["pending"], len(runs(log))

    last, since = now(), time.monotonic()
    def quiet_for() -> bool:
        nonlocal last, since
        current = now()
        if current != last:
            last, since = current, time.monotonic()
        return not current[2] and current[1] == current[3] and time.monotonic() - since >= quiet

    sc.wait_for(quiet_for, what="the change hook settling")
    hook: dict[str, Any] = sc.status()["hooks"]["change-exec"]
    return hook


def test_publications_and_pruning_never_fire_the_change_hook(tmp_path: Path, sidecar_factory: Any) -> None:
    upstream = Upstream(tmp_path, many_files(150))
    link = tmp_path / "vol" / "deployment-scripts"
    command, log = path_logger(tmp_path)
    sc = sidecar_factory(["--repo", upstream.url, "--ref", "main", "--link", str(link), "--period", "0.2",
                          "--on-change-exec", command])
    sc.wait_for(lambda: sc.status()["watch"]["running"], what="watch running")
    edit(link / "node-deployment/local_script.al")
    sc.wait_for(lambda: len(runs(log)) >= 1, what="the hook for the first edit")
    # One edit is usually one run; a shell paused between its write and its close on a busy machine
    # gives two batches, and so two runs of the same file.
    triggers = settle(sc, log)["triggers"]
    first = runs(log)
    assert first and all(r == ["node-deployment/local_script.al"] for r in first), first
    # Upstream moves on twelve times: each is a new revision (the edit carried), a link swap and
    # the pruning of a revision before it.
    for n in range(12):
        head = upstream.commit({f"sample-code/new_{n}.al": f"# {n}\n"})
        sc.wait_for(lambda head=head: sc.status()["scripts"]["revision"] == head,  # type: ignore[misc]
                    what=f"revision {n} published")
    status = sc.status()
    assert status["scripts"]["local_edits"] == 1
    assert settle(sc, log)["triggers"] == triggers, "a publication triggered the change hook"
    assert runs(log) == first
    edit(link / "node-deployment/set_params.al")
    sc.wait_for(lambda: len(runs(log)) > len(first), what="the hook for the second edit")
    hook = settle(sc, log)
    second = runs(log)[len(first):]
    assert second and all(r == ["node-deployment/set_params.al"] for r in second), second
    # Each batch of the two edits is counted once and triggered the hook once; nothing else was.
    assert sc.status()["watch"]["changes"] == {"modified": hook["triggers"]}


def test_an_edit_right_after_startup_fires_its_hook(tmp_path: Path, sidecar_factory: Any) -> None:
    upstream = Upstream(tmp_path, many_files(3000))  # arming takes a moment: the edit may come first
    link = tmp_path / "vol" / "deployment-scripts"
    command, log = path_logger(tmp_path)
    sc = sidecar_factory(["--repo", upstream.url, "--ref", "main", "--link", str(link), "--on-change-exec",
                          command], wait_live=False)
    sc.wait_for(lambda: sc.get("/startupz")[0] == 200, what="startupz")
    edit(link / "node-deployment/main.al")
    sc.wait_for(lambda: len(runs(log)) == 1, what="the hook for the edit")
    assert runs(log) == [["node-deployment/main.al"]]
    sc.wait_for(lambda: sc.status()["scripts"]["local_edits"] == 1, what="the edit counted")
