"""The metrics collector in process: families from state, hostile label values, histograms, stuck components."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import config, progress
from sidecar.config import Settings
from sidecar.metrics import Exposition
from sidecar.state import CheckState, ComponentHealth, Histogram, HookState, State
from tests.helpers import promtool_check


def settings(tmp_path: Path, *args: str) -> Settings:
    return config.load(["run", "--fallback-dir", str(tmp_path), "--link", str(tmp_path / "s" / "l"), "--kube", "off",
                        *args], environ={})


def samples(state: State, s: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by name and sorted labels, from the text a scrape returns (checked by promtool)."""
    text = Exposition(s, state).render().decode()
    promtool_check(text)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_fresh_state_exposes_every_family_without_optional_ones(tmp_path: Path) -> None:
    got = samples(State(), settings(tmp_path))
    names = {name for name, _ in got}
    assert ("edgelake_sidecar_scripts_published", ()) in got and got[("edgelake_sidecar_scripts_published", ())] == 0
    assert got[("edgelake_sidecar_probe_passing", (("probe", "livez"),))] == 1
    assert got[("edgelake_sidecar_probe_passing", (("probe", "startupz"),))] == 0
    # Timestamps that never happened are left out, not exported as 0 (1970).
    assert "edgelake_sidecar_scripts_last_success_timestamp_seconds" not in names
    assert "edgelake_sidecar_watch_last_change_timestamp_seconds" not in names


def test_components_up_restarts_and_stuck(tmp_path: Path) -> None:
    state = State()
    state.components["watchdog"] = ComponentHealth(5.0, alive=True)
    stuck = state.components["scripts"] = ComponentHealth(0.5, alive=True, restarts=2)
    progress.Progress(stuck).working("sync")
    stuck.activities[""].due = time.monotonic() - 1  # its deadline passed
    got = samples(state, settings(tmp_path))
    assert got[("edgelake_sidecar_component_up", (("component", "scripts"),))] == 1
    assert got[("edgelake_sidecar_component_restarts_total", (("component", "scripts"),))] == 2
    assert got[("edgelake_sidecar_component_stuck", (("component", "scripts"),))] == 1
    assert got[("edgelake_sidecar_component_stuck", (("component", "watchdog"),))] == 0
    assert got[("edgelake_sidecar_probe_passing", (("probe", "livez"),))] == 0


def test_hostile_label_values_are_escaped_and_read_back_unchanged(tmp_path: Path) -> None:
    """The node names itself in its REST answer, and a ref is whatever was configured: neither may break
    the exposition or forge a sample."""
    state = State()
    odd = 'el"probes\\\n} edgelake_sidecar_check_up{check="forged"} 1\u00e9'
    check = state.checks["rest"] = CheckState("rest", up=True)
    check.node_name = odd
    sc = state.scripts
    sc.published, sc.revision, sc.source, sc.ref = True, "abc123", "git", 'main"\n'
    got = samples(state, settings(tmp_path))
    assert got[("edgelake_sidecar_node_info", (("node", odd),))] == 1
    assert ("edgelake_sidecar_check_up", (("check", "forged"),)) not in got
    assert got[("edgelake_sidecar_scripts_revision_info",
                (("ref", 'main"\n'), ("revision", "abc123"), ("source", "git")))] == 1


def test_histograms_are_cumulative_with_their_sum_and_count(tmp_path: Path) -> None:
    state = State()
    hook = state.hooks["change-exec"] = HookState("change-exec")
    for value in (0.0005, 0.3, 0.3, 100.0):  # below the first bucket, twice in one, above the last
        hook.duration.observe(value)
    got = samples(state, settings(tmp_path))

    def bucket(le: str) -> float:
        return got[("edgelake_sidecar_hook_duration_seconds_bucket", (("hook", "change-exec"), ("le", le)))]

    assert bucket("0.001") == 1 and bucket("0.25") == 1 and bucket("0.5") == 3 and bucket("60.0") == 3
    assert bucket("+Inf") == 4
    assert got[("edgelake_sidecar_hook_duration_seconds_count", (("hook", "change-exec"),))] == 4
    assert got[("edgelake_sidecar_hook_duration_seconds_sum", (("hook", "change-exec"),))] == pytest.approx(100.6005)


def test_histogram_edges() -> None:
    h = Histogram()
    h.observe(0.001)  # on a bound: counted in that bucket (le means <=)
    h.observe(float("inf"))
    assert h.cumulative()[0] == ("0.001", 1)
    assert h.cumulative()[-2] == ("60.0", 1) and h.cumulative()[-1] == ("+Inf", 2)
