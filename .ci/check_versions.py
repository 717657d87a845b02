#!/usr/bin/env python3
"""Check that every place carrying the release's version says the same: exit 1 naming each that differs.

    python3 .ci/check_versions.py [TAG]

The package (pyproject.toml and sidecar/__init__.py, which `edgelake-sidecar version` prints), the
Dockerfile's default VERSION label, the chart's version and its appVersion (the sidecar image tag the
chart pulls by default) are one number. With a release tag (v1.2.3), the tag must be that number too,
so the image pushed under the tag is the one the chart of that release pulls.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACES = {
    "pyproject.toml version": ("pyproject.toml", r'^version = "([^"]+)"$'),
    "sidecar/__init__.py __version__": ("sidecar/__init__.py", r'^__version__ = "([^"]+)"$'),
    "Dockerfile ARG VERSION": ("Dockerfile", r"^ARG VERSION=(\S+)$"),
    "Chart.yaml version": ("charts/edgelake-node/Chart.yaml", r'^version: "?([^"\s]+)"?$'),
    "Chart.yaml appVersion": ("charts/edgelake-node/Chart.yaml", r'^appVersion: "?([^"\s]+)"?$'),
}


def main(argv: list[str]) -> int:
    found: dict[str, str] = {}
    for place, (path, pattern) in PLACES.items():
        match = re.search(pattern, (ROOT / path).read_text(), re.M)
        found[place] = match.group(1) if match else "(missing)"
    if argv:
        found["release tag"] = argv[0].removeprefix("refs/tags/").removeprefix("v")
    expected = found["pyproject.toml version"]
    wrong = {place: value for place, value in found.items() if value != expected}
    if wrong:
        for place, value in wrong.items():
            print(f"{place} is {value}, pyproject.toml version is {expected}", file=sys.stderr)
        return 1
    print(f"version {expected} everywhere: {', '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
