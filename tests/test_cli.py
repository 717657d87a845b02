"""`edgelake-sidecar status` against a real running sidecar: a summary for people, everything as JSON or YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, cli

FALLBACK = str(ROOT / "examples" / "deployment-scripts")


def test_status_prints_a_summary_and_everything_on_request(tmp_path: Path, sidecar_factory: Any) -> None:
    sc = sidecar_factory(["--fallback-dir", FALLBACK, "--link", str(tmp_path / "vol" / "scripts"),
                          "--tcp-port", "1", "--node-host", "127.0.0.1"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    port = ["--http-port", str(sc.port)]
    summary = cli(["status", *port])
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert len(lines) < 12, summary.stdout
    assert any(line.startswith("scripts:  fallback") for line in lines), summary.stdout
    assert any(line.startswith("checks:   tcp ") for line in lines), summary.stdout
    assert "config" not in summary.stdout  # the settings are in -o json|yaml, not in the summary
    as_json = cli(["status", "-o", "json", *port])
    as_yaml = cli(["status", "--output=yaml", *port])
    full_json, full_yaml = json.loads(as_json.stdout), yaml.safe_load(as_yaml.stdout)
    assert full_json["config"]["link"] == full_yaml["config"]["link"] == str(tmp_path / "vol" / "scripts")
    assert full_json["scripts"]["revision"] == full_yaml["scripts"]["revision"]


def test_status_of_no_sidecar_is_one_line_and_exit_1() -> None:
    result = cli(["status", "--http-port", "1"])
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "cannot read http://127.0.0.1:1/status" in result.stderr
