"""Settings: precedence, the node's own variable names, and invalid values (exit 2, one line each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar import docs
from sidecar.cli import main as cli_main
from sidecar.config import SettingsError, load
from tests.conftest import ROOT, cli

BASE = ["--fallback-dir", "/tmp/fallback", "--link", "/vol/scripts/deployment-scripts"]


def test_flags_win_over_env_and_env_over_defaults() -> None:
    s = load(["run", *BASE, "--period", "5"], {"SIDECAR_PERIOD": "7", "SIDECAR_JITTER": "0.2"})
    assert s.period == 5.0
    assert s.jitter == 0.2
    assert s.local_edits == "carry"
    assert s.revisions_root == Path("/vol/scripts/.sidecar")


def test_node_variable_names_are_accepted() -> None:
    env = {"ANYLOG_SERVER_PORT": "32148", "ANYLOG_REST_PORT": "32149", "ANYLOG_BROKER_PORT": "32150",
           "LOCAL_SCRIPTS": "/app/scripts/current"}
    s = load(["run", "--fallback-dir", "/f"], env)
    assert (s.tcp_port, s.rest_port, s.broker_port) == (32148, 32149, 32150)
    assert s.link == Path("/app/scripts/current")
    assert s.enabled_checks() == ("tcp", "rest", "broker")


def test_node_type_gives_default_ports_and_sidecar_names_win() -> None:
    s = load(["run", *BASE], {"NODE_TYPE": "operator", "SIDECAR_REST_PORT": "40000"})
    assert s.tcp_port == 32148
    assert s.rest_port == 40000
    assert s.broker_port is None
    generic = load(["run", *BASE], {"NODE_TYPE": "generic"})
    assert (generic.tcp_port, generic.rest_port) == (32548, 32549)


def test_relative_folders_are_taken_from_the_working_directory() -> None:
    s = load(["run", "--link", "/v/s", "--fallback-dir", "examples/deployment-scripts"], {})
    assert s.fallback_dir == Path.cwd() / "examples" / "deployment-scripts"


def test_edgelake_path_sets_default_link() -> None:
    s = load(["run", "--fallback-dir", "/f"], {"EDGELAKE_PATH": "/opt/el"})
    assert s.link == Path("/opt/el/scripts/deployment-scripts")


def test_secrets_are_redacted_in_the_status_view() -> None:
    s = load(["run", *BASE, "--repo", "https://user:hunter2@example.com/x.git?token=abc",
              "--sync-token-file", "/secrets/token"], {})
    view = s.redacted()
    assert "hunter2" not in str(view) and "abc" not in str(view)
    assert view["sync_token_file"] == "<set>"


INVALID = [
    (["--period", "abc"], "--period: expected a number"),
    (["--period", "0"], "--period: must be at least"),
    (["--period", "nan"], "--period: expected a finite number"),
    (["--jitter", "0.9"], "--jitter: must be at most 0.5"),
    (["--local-edits", "merge"], "--local-edits: expected one of carry, hold, discard"),
    (["--http-port", "70000"], "--http-port: must be at most 65535"),
    (["--http-port", "-1"], "--http-port: must be at least 0"),
    (["--tcp-port", "0"], "--tcp-port: must be at least 1"),
    (["--rest-port", "http"], "--rest-port: expected a whole number"),
    (["--depth", "1.5"], "--depth: expected a whole number"),
    (["--submodules"], None),  # valid: a control case inside the table
    (["--log-level", "loud"], "--log-level: expected one of"),
    (["--kube", "maybe"], "--kube: expected one of auto, on, off"),
    (["--ready-checks", "tcp,http"], "--ready-checks: unknown check http"),
    (["--link", "relative/path"], "--link: must be an absolute path"),
    (["--root", "/vol/scripts/deployment-scripts/x"], "--root: must not be inside the published link"),
    (["--root", "/vol"], "--root: must not contain the link"),
    (["--repo=--upload-pack=evil"], "--repo: must not start with '-'"),
    (["--ref", "main..dev"], "--ref: not a valid branch, tag or commit name"),
    (["--ref=-x"], "--ref: not a valid branch, tag or commit name"),
    (["--git-username", "bob"], "--git-username: needs --git-password-file"),
    (["--rest-timeout", "200", "--rest-interval", "1"], "--rest-timeout: must not exceed ten times"),
    (["--on-change-webhook", "ftp://x"], "--on-change-webhook: expected an http(s) URL"),
    (["--git-timeout", "0"], "--git-timeout: must be at least 1"),
    (["--http-host", ""], "--http-host: must not be empty"),
    (["--node-livez-after", "-5"], "--node-livez-after: must be at least 1"),
    (["--first-seed-timeout", "1e9"], "--first-seed-timeout: must be at most"),
]


@pytest.mark.parametrize(("args", "message"), INVALID, ids=[" ".join(a) for a, _ in INVALID])
def test_invalid_flags(args: list[str], message: str | None, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    for name in list(os.environ):
        if name.startswith(("SIDECAR_", "ANYLOG_")) or name in ("NODE_TYPE", "LOCAL_SCRIPTS", "EDGELAKE_PATH"):
            monkeypatch.delenv(name)
    if message is None:
        load(["run", *BASE, *args], {})
        return
    # The entry point itself: exit code 2 and the message, before anything is touched.
    assert cli_main(["run", *BASE, *args]) == 2
    err = capsys.readouterr().err
    assert f"edgelake-sidecar: invalid setting: {message}" in err, err


def test_invalid_env_names_the_variable() -> None:
    with pytest.raises(SettingsError) as err:
        load(["run", *BASE], {"SIDECAR_PERIOD": "soon", "ANYLOG_REST_PORT": "99999", "SIDECAR_WATCH": "perhaps"})
    problems = "\n".join(err.value.problems)
    assert "SIDECAR_PERIOD: expected a number" in problems
    assert "ANYLOG_REST_PORT: must be at most 65535" in problems
    assert "SIDECAR_WATCH: expected true or false" in problems


def test_a_misspelt_sidecar_variable_is_an_error_not_ignored() -> None:
    with pytest.raises(SettingsError) as err:
        load(["run", *BASE], {"SIDECAR_PERIDO": "30"})
    assert err.value.problems == ["SIDECAR_PERIDO: no such setting (did you mean SIDECAR_PERIOD?)"]
    load(["status"], {"SIDECAR_PERIDO": "30"})  # a one-shot command run from a hook's environment


def test_no_source_is_an_error_for_run_and_seed_only() -> None:
    with pytest.raises(SettingsError, match="--repo or --fallback-dir"):
        load(["seed", "--link", "/v/s"], {})
    load(["check", "--link", "/v/s"], {})


def test_cli_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"
    result = cli(["seed", "--link", str(link), "--fallback-dir", str(tmp_path), "--period", "x", "--jitter", "2"])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 2, result.stderr
    assert all(line.startswith("edgelake-sidecar: invalid setting: ") for line in lines)
    assert not link.parent.exists(), "nothing may be touched before the settings are valid"


def test_cli_unknown_flag_exits_2() -> None:
    assert cli(["run", "--no-such-flag"]).returncode == 2


def test_version_command() -> None:
    result = cli(["version"])
    assert result.returncode == 0
    assert result.stdout.startswith("edgelake-sidecar ")


def test_settings_table_is_current() -> None:
    text = (ROOT / docs.DOC).read_text()
    assert docs.render(text) == text, "run `python -m sidecar.docs` to regenerate docs/configuration.md's table"
