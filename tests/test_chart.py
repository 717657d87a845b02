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
import tempfile
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
NODE_TYPES = ["master", "operator", "query", "publisher", "generic"]
BROKER_PORTS = {"operator": 32150, "publisher": 32250, "generic": 32550}


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
                        "sshSecret": {"name": "git-ssh"}},
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
                "serviceMonitor": {"enabled": monitoring and node_type in ("master", "query", "generic")},
                "podMonitor": {"enabled": monitoring and node_type in ("operator", "publisher")},
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
    assert len(cases) == 120
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
def test_probes_point_at_the_sidecar(helm: str, native: bool, port: int) -> None:
    spec = pod_spec(render(helm, {"sidecar": {"native": native, "httpPort": port}}))
    node, sidecar = container(spec, "node"), container(spec, "sidecar")
    assert node["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert node["livenessProbe"]["httpGet"] == {"path": "/node/livez", "port": port}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/startupz", "port": port}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert sidecar["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert env_of(sidecar)["SIDECAR_HTTP_PORT"] == str(port)
    # The node's own ports are never probed directly: the sidecar checks them gently.
    for probe in ("readinessProbe", "livenessProbe"):
        assert node[probe]["httpGet"]["port"] not in [p["containerPort"] for p in node["ports"]]
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
    assert node["allowPrivilegeEscalation"] is False
    assert node["capabilities"]["drop"] == ["ALL"]


def test_resources_from_the_bench_figures(default_docs: list[dict[str, Any]]) -> None:
    resources = container(pod_spec(default_docs), "sidecar")["resources"]
    assert resources == {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_node_type_ports(helm: str, node_type: str) -> None:
    docs = render(helm, {"node": {"type": node_type}})
    tcp, rest = NODE_DEFAULT_PORTS.get(node_type, (32548, 32549))
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
    """The chart and the sidecar derive the same ports from NODE_TYPE."""
    for node_type, (tcp, rest) in NODE_DEFAULT_PORTS.items():
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


def test_prometheus_rule_passes_promtool(helm: str, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    docs = render(helm, {"monitoring": {"prometheusRule": {"enabled": True, "syncStaleSeconds": 900}}})
    rule = one(docs, "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"EdgeLakeNodePortDown", "EdgeLakeScriptsSyncFailing", "EdgeLakeScriptsLocalEditConflict"}
    names = metric_names(helm)
    assert alerts["EdgeLakeNodePortDown"]["expr"].startswith(names["checkUp"] + "{")
    assert names["syncLastSuccess"] in alerts["EdgeLakeScriptsSyncFailing"]["expr"]
    assert "> 900 or " in alerts["EdgeLakeScriptsSyncFailing"]["expr"]
    assert alerts["EdgeLakeScriptsSyncFailing"]["expr"].endswith(">= 3")
    assert names["syncFailures"] in alerts["EdgeLakeScriptsSyncFailing"]["expr"]
    assert alerts["EdgeLakeScriptsLocalEditConflict"]["expr"].startswith(names["conflicts"] + "{")
    # Alerts are about this release's pod only.
    for alert in alerts.values():
        assert f'namespace="{NAMESPACE}"' in alert["expr"] and f'pod=~"{FULLNAME}-[0-9]+"' in alert["expr"]
    # Without a repository there is nothing to sync, so no sync alert that could only ever fire.
    fallback_only = render(helm, {"monitoring": {"prometheusRule": {"enabled": True}},
                                  "sidecar": {"git": {"repo": ""}}})
    rules = [r["alert"] for g in one(fallback_only, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert "EdgeLakeScriptsSyncFailing" not in rules


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
    assert policy["policyTypes"] == ["Ingress"]
    node_rule, sidecar_rule = policy["ingress"]
    assert [p["port"] for p in node_rule["ports"]] == [32148, 32149, 32150]
    assert node_rule["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in sidecar_rule["ports"]] == [8088]
    assert sidecar_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"name": "monitoring"}
    assert "NetworkPolicy" not in kinds(render(helm))


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
def test_the_rendered_sidecar_configuration_is_valid_for_the_sidecar(helm: str, native: bool, kube: bool) -> None:
    """The chart and the sidecar agree: every setting the chart passes exists and has a valid value
    (a misspelt SIDECAR_* variable would be refused at start with exit code 2)."""
    from sidecar import config

    values = {"sidecar": {"native": native, "kube": {"enabled": kube},
                          "git": {"username": "edge", "passwordSecret": {"name": "git-creds"}},
                          "syncAuth": {"tokenSecret": {"name": "sync"}}}}
    for node_type in NODE_TYPES:
        values["node"] = {"type": node_type}
        docs = render(helm, values)
        spec = pod_spec(docs)
        roles = ["sidecar"] if native else ["seed-scripts", "sidecar"]
        for name in roles:
            c = container(spec, name)
            env = _sidecar_environment(docs, c)
            settings = config.load(c["args"], env)  # raises SettingsError listing any problem
            assert settings.command == ("seed" if name == "seed-scripts" else "run")
            assert settings.enabled_checks(), "the node's ports must reach the sidecar's checks"
            assert settings.git_password_file is not None and settings.sync_token_file is not None
            assert (settings.kube != "off") == kube
