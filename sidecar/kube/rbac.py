"""The API calls the sidecar makes, as RBAC rules. The chart's Role must grant exactly these.

tests/test_kube_*.py assert every request the code sends is covered here; tests/test_chart.py
asserts the rendered Role equals these rules.
"""

from __future__ import annotations

# (apiGroup, resource, verbs) for the namespaced Role.
ROLE_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("get", "patch")),
    ("", "services", ("get",)),
    ("", "events", ("create", "patch")),
)

# Only with --node-external-ip: reading the Kubernetes node's addresses needs a ClusterRole.
CLUSTER_ROLE_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "nodes", ("get",)),
)
