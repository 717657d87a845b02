"""A virtual environment with the sidecar installed from its wheel, as the Dockerfile does.

Benchmarks run the product as it ships: the development venv's editable install adds an import
hook that costs ~16 ms per start. Dependencies are shared with the development venv through a
plain path entry (no copy, no download).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One venv per checkout: several checkouts on one machine (worktrees) would otherwise reinstall
# each other's wheel under each other's running benches.
VENV = Path(f"/tmp/edgelake-sidecar-bench-venv-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}")


def python() -> str:
    """Path of the bench venv's interpreter, building the venv (and the wheel) on first use."""
    exe = VENV / "bin" / "python"
    wheel_dir = VENV / "dist"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True, timeout=120)
        purelib = Path(sysconfig.get_paths()["purelib"])
        target = next((VENV / "lib").glob("python3*/site-packages"))
        (target / "dev-deps.pth").write_text(f"{purelib}\n")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    wheel = max(wheel_dir.glob("edgelake_sidecar-*.whl"), key=lambda p: p.stat().st_mtime)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(exe), "install", "-q", "--no-deps",
                    "--force-reinstall", str(wheel)], check=True, timeout=300, capture_output=True)
    return str(exe)
