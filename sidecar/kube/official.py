"""The parts of the official ``kubernetes`` client the kubeconfig mode uses, imported without the rest.

In a pod the sidecar reads the service account's files itself (``transport.py``) and loads nothing
of the official client. With ``KUBECONFIG`` it needs the client's kubeconfig loader (contexts, exec
and token-refresh plugins, client certificates) and the ``Configuration`` it fills in. But
``import kubernetes`` runs the package's ``__init__``, which imports every API and model class of the
client (kubernetes 37: pydantic models, about 20 MB of RSS). So this module registers the client's
packages as bare namespaces and imports those two modules alone: the code that runs is the official
client's; only its package ``__init__`` files are skipped.

That depends on the package's layout, so ``pyproject.toml`` bounds the version to the majors this
was checked against, and ``tests/test_kube_client.py`` fails when the installed layout differs.

When ``kubernetes`` was already imported in full (by a test or a user's plugin), the full modules are
used as they are; an import of the full package after ours works too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

_PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.config", "kubernetes.utils")


def _bare_packages() -> dict[str, types.ModuleType]:
    """Register the client's packages as namespaces whose ``__init__`` never runs; return those registered."""
    if "kubernetes" in sys.modules:
        return {}
    spec = importlib.util.find_spec("kubernetes")
    if spec is None or spec.origin is None:
        raise ImportError("the kubernetes package is not installed")
    root = Path(spec.origin).parent
    bare = {}
    for name in _PACKAGES:
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        bare[name] = sys.modules[name] = package
    return bare


def module(name: str) -> Any:
    """Import ``kubernetes.<name>`` (e.g. ``config.kube_config``) without the package-wide imports."""
    bare = _bare_packages()
    try:
        client: Any = sys.modules["kubernetes.client"]
        if not hasattr(client, "Configuration"):
            # The config loaders do ``from kubernetes.client import Configuration, ApiClient``;
            # ApiClient (which imports every model) is only used by helpers the sidecar never calls.
            client.Configuration = importlib.import_module("kubernetes.client.configuration").Configuration
            client.ApiClient = None
        return importlib.import_module(f"kubernetes.{name}")
    finally:
        # The bare packages go again: a later ``import kubernetes`` (a plugin, a test) gets the real
        # package, which reuses the modules already loaded here.
        for package_name, package in bare.items():
            if sys.modules.get(package_name) is package:
                del sys.modules[package_name]
