"""Prune the image's virtual environment to what the sidecar imports, then prove it still imports it.

The official ``kubernetes`` client is about 126 MB installed, nearly all of it API and model classes
(sync and asyncio) that the sidecar never loads: ``sidecar/kube/official.py`` imports a handful of
the client's modules (configuration loaders, ``Configuration``, the REST transport) without the
package ``__init__`` files that pull in the rest. This script, run with the venv's Python in the
image's build stage:

1. finds the client modules the sidecar names, from its ``official.module("...")`` calls;
2. imports every sidecar module and those client modules, as the sidecar does;
3. keeps, in the ``kubernetes`` package, only the files of the modules that step 2 loaded (and the
   package's top ``__init__.py``, by which ``official.py`` finds the package);
4. removes the distributions that only the client requires and that step 2 never loaded
   (pydantic and its kin, websocket-client, ...); a distribution another requirement needs stays;
5. checks, in a fresh interpreter, that step 2 still succeeds (``--check`` alone does only this).

Anything the sidecar starts to use that the pruned tree lacks fails the build, not the pod.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

CLIENT = "kubernetes"


def client_modules() -> list[str]:
    """The client modules the sidecar loads: the literal arguments of its ``official.module`` calls."""
    import sidecar

    names: set[str] = set()
    for path in Path(sidecar.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "module"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "official"
                    and len(node.args) == 1 and isinstance(node.args[0], ast.Constant)):
                names.add(str(node.args[0].value))
    return sorted(names)


def load_everything() -> list[str]:
    """Import every sidecar module and the client modules it names; return those client modules."""
    import sidecar

    for info in pkgutil.walk_packages(sidecar.__path__, "sidecar."):
        if info.name != "sidecar.__main__":  # runs the CLI
            importlib.import_module(info.name)
    names = client_modules()
    if names:
        from sidecar.kube import official

        for name in names:
            official.module(name)
    return names


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: md.Distribution) -> set[str]:
    """The names a distribution requires unconditionally (extras left out)."""
    out = set()
    for req in dist.requires or []:
        if "extra ==" in req.replace(" ", " "):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            out.add(normalize(match.group(1)))
    return out


def closure(start: set[str], dists: dict[str, md.Distribution]) -> set[str]:
    seen: set[str] = set()
    todo = [n for n in start if n in dists]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [r for r in requirements(dists[name]) if r in dists and r not in seen]
    return seen


def top_names(dist: md.Distribution) -> set[str]:
    """The import names a distribution installs (its top-level packages and modules)."""
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__", "bin"):
            continue
        names.add(first.removesuffix(".py").split(".")[0])
    return names


def prune_client(site: Path) -> int:
    """Keep only the loaded client modules' files; return the bytes removed."""
    root = site / CLIENT
    keep = {root / "__init__.py", Path(importlib.util.cache_from_source(str(root / "__init__.py")))}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if name.startswith(CLIENT + ".") and path:
            keep |= {Path(path), Path(importlib.util.cache_from_source(path))}
    removed = 0
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file() and path not in keep:
            removed += path.stat().st_size
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def prune_dists(site: Path) -> tuple[int, list[str]]:
    """Remove distributions only the client requires and nothing loaded; return bytes and names."""
    dists = {normalize(d.metadata["Name"]): d for d in md.distributions(path=[str(site)])}
    ours = dists[normalize("edgelake-sidecar")]
    direct = requirements(ours) - {CLIENT}
    needed = closure(direct, dists) | {CLIENT, normalize("edgelake-sidecar")}
    loaded = {name.split(".")[0] for name in sys.modules}
    removed, names = 0, []
    for name in sorted(closure({CLIENT}, dists) - needed):
        dist = dists[name]
        if top_names(dist) & loaded:
            continue
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                removed += path.stat().st_size
                path.unlink()
        names.append(name)
    # The distributions' folders (packages, .dist-info), now holding no file.
    for path in sorted(site.iterdir()):
        if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
            shutil.rmtree(path)
    return removed, names


def check() -> None:
    """Step 2 in a fresh interpreter: the sidecar imports everything it uses."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import prune_venv; print(prune_venv.load_everything())"
    result = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"the pruned environment cannot import what the sidecar uses:\n{result.stderr}")
    print(f"check: every sidecar module and the client modules {result.stdout.strip()} import")


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        check()
        return
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    load_everything()
    removed = prune_client(site)
    dist_bytes, dists = prune_dists(site)
    print(f"pruned {(removed + dist_bytes) / 1e6:.1f} MB: unused {CLIENT} modules, and {', '.join(dists) or 'no'}"
          " distributions")
    check()


if __name__ == "__main__":
    main()
