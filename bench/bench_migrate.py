"""Migration bench (issue 14): adopting a copy made by the old recipe, base 200 commits back.

    python bench/bench_migrate.py [--runs N] [--files 300] [--behind 200]

A 300-file repository with 20 commits before the copied one and 200 after it. The copy is the
recipe's (``git clone``, checkout of the older commit, ``mv tmp/* scripts``: no ``.git``, no
top-level dotfiles) with one edited file. Each run times ``edgelake-sidecar seed`` (the wheel as it
ships) from process start to exit, when the tip of upstream is published with the edit carried,
and checks that the base found is the copied commit. Prints the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_scripts import SHIPPED, exe  # noqa: E402
from tests.conftest import sidecar_env  # noqa: E402
from tests.gitrepos import Upstream, git, many_files  # noqa: E402

EDITED = "node-deployment/local_script.al"


def build(base: Path, files: int, behind: int) -> tuple[Upstream, str, Path]:
    """The repository, the copied commit and the recipe's copy (with one person's edit)."""
    up = Upstream(base, many_files(files))
    names = sorted(p for p in many_files(files) if p.startswith("dir"))
    for i in range(20 + behind):
        if i == 20:
            copied = up.head()
        path = up.work / names[(i * 7) % len(names)]
        path.write_text(path.read_text() + f"# change {i}\n")
        git("commit", "-qam", f"change {i}", cwd=up.work)
    git("push", "-q", "--force", "origin", "HEAD:refs/heads/main", cwd=up.work)
    tmp = base / "deployment-scripts-tmp"
    git("clone", "-q", up.url, str(tmp))
    git("checkout", "-q", copied, cwd=tmp)
    copy = base / "copy"
    copy.mkdir()
    subprocess.run(f"mv {tmp}/* {copy}/", shell=True, check=True)
    with (copy / EDITED).open("a") as f:
        f.write("set my_setting = 1\n")
    return up, copied, copy


def one_run(up: Upstream, copied: str, copy: Path, work: Path) -> float:
    link = work / "vol" / "deployment-scripts"
    link.parent.mkdir(parents=True)
    shutil.copytree(copy, link, symlinks=True)
    env = sidecar_env({**SHIPPED, "SIDECAR_LOG_LEVEL": "info"})
    started = time.perf_counter()
    result = subprocess.run([exe(), "seed", "--link", str(link), "--repo", up.url, "--ref", "main"], env=env,
                            capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"seed failed: {result.stderr[-2000:]}")
    bases = [json.loads(line).get("base") for line in result.stderr.splitlines()
             if '"adoption_base"' in line]
    if bases != [copied]:
        raise SystemExit(f"wrong base {bases} (expected {copied})")
    if git("rev-parse", "HEAD", cwd=link) != up.head():
        raise SystemExit("the tip is not published")
    if not (link / EDITED).read_text().endswith("set my_setting = 1\n"):
        raise SystemExit("the edit was not carried")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--behind", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        base = Path(tmp)
        up, copied, copy = build(base, args.files, args.behind)
        exe()  # build the shipped wheel's venv before timing
        times = [one_run(up, copied, copy, base / f"run-{i}") for i in range(args.runs)]
    print(f"adopt a {args.files}-file copy whose base is {args.behind} commits back, start to published: "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={len(times)}; "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
