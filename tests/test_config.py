"""Settings: precedence, the node's own variable names, and invalid values (exit 2, one line each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar import docs
from sidecar.cli import main as cli_main
from sidecar.config import SettingsError, load
from tests.conftest import ROOT, cli

FALLBACK = str(ROOT / "examples" / "deployment-scripts")
BASE = ["--fallback-dir", FALLBACK, "--link", "/vol/scripts/deployment-scripts"]


def test_flags_win_over_env_and_env_over_defaults() -> None:
    s = load(["run", *BASE, "--period", "5"], {"SIDECAR_PERIOD": "7", "SIDECAR_JITTER": "0.2"})
    assert s.period == 5.0
    assert s.jitter == 0.2
    assert s.local_edits == "carry"
    assert s.revisions_root == Path("/vol/scripts/.sidecar")


def test_node_variable_names_are_accepted() -> None:
    env = {"ANYLOG_SERVER_PORT": "32148", "ANYLOG_REST_PORT": "32149", "ANYLOG_BROKER_PORT": "32150",
           "LOCAL_SCRIPTS": "/app/scripts/current"}
    s = load(["run", "--fallback-dir", FALLBACK], env)
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
    s = load(["run", "--fallback-dir", FALLBACK], {"EDGELAKE_PATH": "/opt/el"})
    assert s.link == Path("/opt/el/deployment-scripts")


def test_secrets_are_redacted_in_the_status_view(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    s = load(["run", *BASE, "--repo", "https://user:hunter2@example.com/x.git?token=abc",
              "--sync-token-file", str(tmp_path / "token")], {})
    view = s.redacted()
    assert "hunter2" not in str(view) and "abc" not in str(view)
    assert view["sync_token_file"] == "<set>"


INVALID = [
    (["--period", "abc"], "--period: expected a duration"),
    (["--jitter", "abc"], "--jitter: expected a number"),
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
    (["--period", "5y"], "--period: expected a duration (30s, 5m, 1h30m) or seconds, got '5y'"),
    (["--period", "1h 30m"], "--period: expected a duration"),
    (["--period", "25h"], "--period: must be at most 86400"),
    (["--period", "1h30m"], None),
    (["--watch", "perhaps"], "--watch: expected true or false, got 'perhaps'"),
    (["--watch", "false"], None),
    (["--repo", "https://h/x.git\r\nHost: evil"], "--repo: must not contain control characters"),
    (["--repo", "https://h/x\x1b[2J.git"], "--repo: must not contain control characters"),
    (["--sync-token-file", "/no/such/token"], "--sync-token-file: no such file: '/no/such/token'"),
    (["--git-password-file", "/"], "--git-password-file: is a folder, not a file: '/'"),
    (["--ssh-key-file", "/dev/null"], "--ssh-key-file: is not a regular file: '/dev/null'"),
    (["--rest-port", "8088"], "--rest-port: 8088 is the sidecar's own --http-port"),
    (["--tcp-port", "9000", "--http-port", "9000", "--node-host", "::1"], "--tcp-port: 9000 is the sidecar's own"),
    (["--tcp-port", "9000", "--http-port", "9000", "--node-host", "node.example"], None),  # another host
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


def test_settings_are_grouped_per_check() -> None:
    s = load(["run", *BASE, "--rest-port", "32149", "--rest-interval", "2m", "--rest-failure-threshold", "4",
              "--node-host", "10.0.0.7", "--check-jitter", "0"], {})
    rest = s.check("rest")
    assert (rest.name, rest.host, rest.port, rest.interval, rest.failure_threshold, rest.jitter) == \
        ("rest", "10.0.0.7", 32149, 120.0, 4, 0.0)
    assert s.checks["tcp"].port is None
    assert s.enabled_checks() == ("rest",)


def test_durations_are_accepted_wherever_seconds_are() -> None:
    s = load(["run", *BASE, "--period", "1h30m", "--git-timeout", "90s", "--watch-debounce", "250ms",
              "--tcp-interval", "45"], {"SIDECAR_BACKOFF_MAX": "5m"})
    assert (s.period, s.git_timeout, s.watch_debounce, s.tcp_interval, s.backoff_max) == (5400, 90, 0.25, 45, 300)
    assert load(["run", *BASE, "--jitter", "0.2"], {}).jitter == 0.2  # a fraction stays a plain number


@pytest.mark.parametrize(("args", "watch"), [
    ([], True), (["--watch"], True), (["--watch", "false"], False), (["--watch=no"], False),
    (["--no-watch"], False), (["--watch", "off", "--watch", "on"], True),
])
def test_bool_flags_take_a_value_as_their_variable_does(args: list[str], watch: bool) -> None:
    assert load(["run", *BASE, *args], {}).watch is watch


def test_a_folder_is_refused_as_a_secret_file_and_a_link_loop_as_unreadable(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    token = tmp_path / "token"
    token.write_text("t\n")
    alias = tmp_path / "alias"  # a Secret volume mounts files as symlinks: those are fine
    alias.symlink_to(token)
    with pytest.raises(SettingsError) as err:
        load(["run", *BASE, "--sync-token-file", str(loop), "--sync-hmac-secret-file", str(tmp_path)], {})
    assert err.value.problems == [
        f"--sync-token-file: cannot be read: {str(loop)!r} (Too many levels of symbolic links)",
        f"--sync-hmac-secret-file: is a folder, not a file: {str(tmp_path)!r}"]
    assert load(["run", *BASE, "--sync-token-file", str(alias)], {}).sync_token_file == alias
    # Only the commands that read them check them: `status` from a shell without the Secret works.
    load(["status", "--sync-token-file", str(loop)], {})


def test_a_missing_fallback_folder_is_an_error_only_when_it_is_the_only_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--fallback-dir: no such folder"):
        load(["seed", "--link", "/v/s", "--fallback-dir", str(tmp_path / "nope")], {})
    load(["seed", "--link", "/v/s", "--fallback-dir", str(tmp_path / "nope"), "--repo", "https://h/x.git"], {})


def test_an_unknown_node_type_is_not_an_error() -> None:
    load(["run", *BASE], {"NODE_TYPE": "something-new"})


def test_invalid_env_names_the_variable() -> None:
    with pytest.raises(SettingsError) as err:
        load(["run", *BASE], {"SIDECAR_PERIOD": "soon", "ANYLOG_REST_PORT": "99999", "SIDECAR_WATCH": "perhaps"})
    problems = "\n".join(err.value.problems)
    assert "SIDECAR_PERIOD: expected a duration" in problems
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


@pytest.mark.parametrize(("args", "line"), [
    (["run", "--perido", "5"], "edgelake-sidecar: --perido: no such flag (did you mean --period?)"),
    (["run", "--no-wacth"], "edgelake-sidecar: --no-wacth: no such flag (did you mean --no-watch?)"),
    (["run", "--repo", "-x"], "edgelake-sidecar: --repo: expected a value (write --repo=VALUE for a value that "
                              "starts with '-')"),
    (["run", "--repo=-x"], "edgelake-sidecar: invalid setting: --repo: must not start with '-', got '-x'"),
    (["run", "stray"], "edgelake-sidecar: unexpected argument 'stray' (a value that starts with '-' needs "
                       "--flag=VALUE)"),
    (["status", "-o", "xml"], "edgelake-sidecar: argument -o/--output: invalid choice: 'xml' (choose from "
                              "'summary', 'json', 'yaml')"),
    (["deploy"], "edgelake-sidecar: argument COMMAND: invalid choice: 'deploy' (choose from 'run', 'seed', "
                 "'check', 'status', 'resolve', 'version')"),
    ([], "edgelake-sidecar: a command is required: run, seed, check, status, resolve, version (see --help)"),
    (["resolve", "--take", "theirs"], "edgelake-sidecar: argument --take: invalid choice: 'theirs' (choose from "
                                      "'upstream', 'mine')"),
])
def test_a_bad_command_line_gets_one_line_and_exit_2(args: list[str], line: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(args) == 2
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize("args", [[], ["--help"], ["--version"], ["run", "--help"], ["seed", "--help"],
                                  ["check", "--help"], ["status", "--help"], ["resolve", "--help"],
                                  ["version", "--help"]])
def test_help_and_the_bare_command_never_show_a_traceback(args: list[str]) -> None:
    result = cli(args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == (2 if not args else 0), result.stderr
    if "--help" in args:
        assert "usage: edgelake-sidecar" in result.stdout
    if args[1:] == ["--help"] and args[0] in ("run", "seed"):
        assert "+-10 %" in result.stdout and "--watch [BOOL], --no-watch [BOOL]" in result.stdout
    if args == ["--version"]:
        assert result.stdout.startswith("edgelake-sidecar ")


@pytest.mark.parametrize(("args", "message"), [
    (["--sync-token-file", "{tmp}/missing"], "--sync-token-file: no such file"),
    (["--git-password-file", "{tmp}", "--git-username", "u"], "--git-password-file: is a folder, not a file"),
    (["--repo", "https://h/x.git\x07"], "--repo: must not contain control characters"),
    (["--rest-port", "8088"], "--rest-port: 8088 is the sidecar's own --http-port"),
    (["--fallback-dir", "{tmp}/missing"], "--fallback-dir: no such folder"),
], ids=["token", "password-folder", "repo-control", "port-clash", "fallback-missing"])
def test_settings_are_checked_before_the_volume_is_touched(tmp_path: Path, args: list[str], message: str) -> None:
    link = tmp_path / "vol" / "scripts"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = cli(["run", "--link", str(link), "--fallback-dir", FALLBACK, *argv])  # the last --fallback-dir wins
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"edgelake-sidecar: invalid setting: {message}"
                                          + result.stderr.split(message, 1)[1].rstrip("\n")], result.stderr
    assert not link.parent.exists(), "nothing may be written before the settings are valid"


def test_version_command() -> None:
    result = cli(["version"])
    assert result.returncode == 0
    assert result.stdout.startswith("edgelake-sidecar ")


def test_settings_table_is_current() -> None:
    text = (ROOT / docs.DOC).read_text()
    assert docs.render(text) == text, "run `python -m sidecar.docs` to regenerate docs/configuration.md's table"
