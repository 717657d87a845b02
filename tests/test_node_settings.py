"""The node-facing settings: ports by NODE_TYPE as the node picks them, the default link, the node's view."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from sidecar.config import SettingsError, load, node_type_warning
from tests.conftest import ROOT

BASE = ["run", "--fallback-dir", str(ROOT / "examples" / "deployment-scripts")]


@pytest.mark.parametrize(("node_type", "ports"), [
    ("master", (32048, 32049)),
    ("operator", (32148, 32149)),
    ("master-operator", (32148, 32149)),
    ("publisher", (32248, 32249)),
    ("master-publisher", (32248, 32249)),
    ("query", (32348, 32349)),
    ("Master-Operator ", (32148, 32149)),
    ("generic", (32548, 32549)),
    ("some-new-type", (32548, 32549)),  # unknown: the node's generic ports, never "no checks"
])
def test_ports_follow_the_node_type(node_type: str, ports: tuple[int, int]) -> None:
    s = load(BASE, {"NODE_TYPE": node_type})
    assert (s.tcp_port, s.rest_port) == ports
    assert s.broker_port is None  # the broker only runs when ANYLOG_BROKER_PORT is set
    assert s.enabled_checks() == ("tcp", "rest")


def test_no_node_type_no_ports() -> None:
    assert load(BASE, {}).enabled_checks() == ()


@pytest.mark.parametrize(("env", "link"), [
    ({}, "/app/deployment-scripts"),
    ({"ANYLOG_PATH": "/opt/anylog"}, "/opt/anylog/deployment-scripts"),
    ({"EDGELAKE_PATH": "/opt/el", "ANYLOG_PATH": "/opt/anylog"}, "/opt/el/deployment-scripts"),
    ({"LOCAL_SCRIPTS": "/data/scripts"}, "/data/scripts"),
])
def test_default_link_is_where_the_node_image_reads_its_scripts(env: dict[str, str], link: str) -> None:
    assert load(BASE, env).link == Path(link)


def test_publisher_gets_one_clear_warning() -> None:
    warning = node_type_warning({"NODE_TYPE": "publisher"})
    assert warning is not None and "EdgeLake" in warning and "master-publisher" in warning
    for other in ("master-publisher", "operator", "", "generic"):
        assert node_type_warning({"NODE_TYPE": other}) is None


def test_the_nodes_view_of_the_scripts() -> None:
    assert load(BASE, {}).node_scripts == PurePosixPath("/app/deployment-scripts")
    s = load([*BASE, "--node-scripts-path", "/opt/el/deployment-scripts"], {})
    assert s.node_scripts == PurePosixPath("/opt/el/deployment-scripts")
    with pytest.raises(SettingsError) as err:
        load([*BASE, "--node-scripts-path", "deployment-scripts"], {})
    assert err.value.problems == ["--node-scripts-path: must be an absolute path, got 'deployment-scripts'"]
