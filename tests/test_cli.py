"""`edgelake-sidecar status` against a real running sidecar: a summary for people, everything as JSON or YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sidecar.cli import summary
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


def test_the_summary_names_what_is_wrong() -> None:
    status = {
        "version": "1.2.3", "uptime_seconds": 7384.2,
        "scripts": {"published": True, "source": "git", "ref": "main", "revision": "a" * 40,
                    "published_time": "2026-01-01T00:00:00Z", "last_sync_result": "error",
                    "last_sync_error": "git fetch timed out", "next_sync_time": "2026-01-01T00:01:00Z",
                    "local_edit_files": ["x.al", "y.al"], "conflict_files": ["x.al"], "held_upstream": "b" * 40},
        "checks": {"tcp": {"up": True}, "rest": {"up": False}, "broker": {"up": None}},
        "components": {"sync": {"alive": True, "overdue_seconds": 12.5,
                                "doing": {"main": {"doing": "git fetch", "since": "2026-01-01T00:00:00Z"}}},
                       "watch": {"alive": False}, "hooks": {"alive": True, "overdue_seconds": None}},
        "kube": {"problem": "events: 403 Forbidden"},
    }
    assert summary(status).splitlines() == [
        "edgelake-sidecar 1.2.3, up 2h03m",
        f"scripts:  git {'a' * 12} (ref main), published 2026-01-01T00:00:00Z",
        "sync:     last error: git fetch timed out; next 2026-01-01T00:01:00Z",
        f"edits:    2 local, 1 in conflict, holding back upstream {'b' * 12}",
        "          settle with: edgelake-sidecar resolve --take upstream|mine [PATH...]",
        "checks:   tcp up, rest down, broker unknown",
        "stopped:  watch",
        "stuck:    sync (git fetch)",
        "kube:     events: 403 Forbidden",
        "(edgelake-sidecar status -o yaml for everything)",
    ]
    assert summary({}).startswith("edgelake-sidecar ?, up ?\nscripts:  not published yet\n")  # any /status shape
    lost = summary({"scripts": {"published": False, "problem": "the link is missing"}})
    assert "scripts:  NOT PUBLISHED: the link is missing" in lost.splitlines()
