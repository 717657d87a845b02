"""One validated settings object, built from flags, ``SIDECAR_*`` variables and the node's own names.

Every setting is declared once, as a dataclass field whose metadata carries its flag, its
environment names, its kind and its help text. The parser, the validation and docs/configuration.md's
configuration table (``python -m sidecar.docs``) are all driven from that one declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

COMMANDS = ("run", "seed", "check", "status", "resolve", "version")

# Default (TCP, REST) ports by NODE_TYPE, as the node's set_params.al picks them; any other type
# gets the generic ports, as on the node.
NODE_DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "master": (32048, 32049),
    "operator": (32148, 32149),
    "master-operator": (32148, 32149),
    "publisher": (32248, 32249),
    "master-publisher": (32248, 32249),
    "query": (32348, 32349),
}
GENERIC_PORTS = (32548, 32549)

Env = Mapping[str, str]
Default = Callable[[Env], Any] | Any


class SettingsError(Exception):
    """Invalid settings: one message per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def opt(
    flag: str,
    kind: str,
    default: Default,
    help: str,
    env: Sequence[str] = (),
    *,
    choices: Sequence[str] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
    group: str = "general",
) -> Any:
    """Declare one setting. ``env`` lists extra variable names after ``SIDECAR_<NAME>``."""
    meta = {
        "flag": flag,
        "kind": kind,
        "default": default,
        "help": help,
        "env": tuple(env),
        "choices": tuple(choices),
        "minimum": minimum,
        "maximum": maximum,
        "secret": secret,
        "group": group,
    }
    return field(default=None, metadata=meta)


def _node_ports(env: Env) -> tuple[int, int]:
    return NODE_DEFAULT_PORTS.get(env.get("NODE_TYPE", "").strip().lower(), GENERIC_PORTS)


def _default_tcp_port(env: Env) -> int | None:
    return _node_ports(env)[0] if env.get("NODE_TYPE") else None


def _default_rest_port(env: Env) -> int | None:
    return _node_ports(env)[1] if env.get("NODE_TYPE") else None


def _node_home(env: Env) -> Path:
    return Path(env.get("EDGELAKE_PATH") or env.get("ANYLOG_PATH") or "/app")


def _default_link(env: Env) -> Path:
    return _node_home(env) / "deployment-scripts"


def node_type_warning(env: Env) -> str | None:
    """A warning about ``NODE_TYPE`` the node itself would refuse, or None."""
    if env.get("NODE_TYPE", "").strip().lower() == "publisher":
        return ("NODE_TYPE=publisher: an EdgeLake node refuses this type and stops at start (only AnyLog "
                "runs it); use master-publisher or operator")
    return None


CHECK_NAMES = ("tcp", "rest", "broker")
READY_NAMES = (*CHECK_NAMES, "policy")  # what --ready-checks may name
HOOK_TRIGGERS = ("change", "publish")
HOOK_ACTIONS = ("rest", "exec", "webhook")


@dataclass(frozen=True)
class CheckSettings:
    """The settings of one node check, gathered from its flat ``--<name>-*`` declarations."""

    name: str
    host: str
    port: int | None  # None: the check is not enabled
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    initial_delay: float
    jitter: float


_PER_CHECK = ("port", "interval", "timeout", "failure_threshold", "success_threshold", "initial_delay")


@dataclass(frozen=True)
class Settings:
    """Every setting of the sidecar. Build it with :func:`load`."""

    command: str = "run"
    output: str = "summary"  # status only: summary, json or yaml
    take: str | None = None  # resolve only: upstream or mine
    paths: tuple[str, ...] = ()  # resolve only: the files to settle (none: every conflicting file)

    # --- general -------------------------------------------------------------------------------
    log_level: str = opt("--log-level", "choice", "info", "Lowest log level printed.",
                         choices=("debug", "info", "warning", "error"))
    log_format: str = opt("--log-format", "choice", "auto",
                          "`json`, `console`, or `auto` (console on a TTY, JSON otherwise).",
                          choices=("auto", "json", "console"))
    http_host: str = opt("--http-host", "host", "0.0.0.0", "Address the endpoints listen on.")
    http_port: int = opt("--http-port", "int", 8088, "Port of every endpoint (probes, metrics, status, sync).",
                         minimum=0, maximum=65535)
    http_max_connections: int = opt("--http-max-connections", "int", 64,
                                    "Open connections the endpoint server accepts at once; more are closed.",
                                    minimum=1, maximum=10000)
    http_header_timeout: float = opt("--http-header-timeout", "duration", 5.0,
                                     "Seconds a client has to send a complete request head.",
                                     minimum=0.1, maximum=300)
    loop_lag_max: float = opt("--loop-lag-max", "duration", 5.0,
                              "Event-loop lag in seconds above which `/livez` fails.", minimum=0.1, maximum=600)

    # --- scripts -------------------------------------------------------------------------------
    repo: str | None = opt("--repo", "optstr", None, "Git URL or local path of the scripts repository.",
                           group="scripts")
    ref: str | None = opt("--ref", "optstr", None,
                          "Branch, tag or commit SHA (default: the remote's default branch).", group="scripts")
    link: Path = opt("--link", "path", _default_link,
                     "The published symlink the node reads (default `$EDGELAKE_PATH/deployment-scripts`, else "
                     "`$ANYLOG_PATH/deployment-scripts`, else `/app/deployment-scripts`: where the node image "
                     "reads its scripts).",
                     env=("LOCAL_SCRIPTS",), group="scripts")
    root: Path | None = opt("--root", "optpath", None,
                            "Folder for history and revisions, a subfolder of the volume "
                            "(default: `.sidecar` beside the link).", group="scripts")
    fallback_dir: Path | None = opt("--fallback-dir", "optpath", None,
                                    "Folder published when git cannot be reached at first seed.", group="scripts")
    period: float = opt("--period", "duration", 60.0, "Seconds between syncs.", minimum=0.05, maximum=86400,
                        group="scripts")
    jitter: float = opt("--jitter", "float", 0.1, "Random spread of the sync period, as a fraction (0.1 = +-10 %).",
                        minimum=0, maximum=0.5, group="scripts")
    local_edits: str = opt("--local-edits", "choice", "carry",
                           "What a sync does with local edits: `carry` them onto the new revision, `hold` the "
                           "update until they are gone, or `discard` them.",
                           choices=("carry", "hold", "discard"), group="scripts")
    depth: int = opt("--depth", "int", 1, "History depth fetched; 0 fetches all history.", minimum=0,
                     maximum=1_000_000, group="scripts")
    submodules: bool = opt("--submodules", "bool", False, "Check out submodules too.", group="scripts")
    git_timeout: float = opt("--git-timeout", "duration", 60.0,
                             "Seconds any one git command may run before its process group is killed.",
                             minimum=1, maximum=3600, group="scripts")
    sync_timeout: float = opt("--sync-timeout", "duration", 600.0,
                              "Seconds a whole sync (every git call and file operation in it) may run before it "
                              "is cancelled and reported as failed.", minimum=1, maximum=86400, group="scripts")
    first_seed_timeout: float = opt("--first-seed-timeout", "duration", 30.0,
                                    "Seconds the first seed retries git before publishing the fallback folder.",
                                    minimum=0, maximum=86400, group="scripts")
    backoff_max: float = opt("--backoff-max", "duration", 300.0, "Longest wait between failed syncs, in seconds.",
                             minimum=1, maximum=86400, group="scripts")
    git_username: str | None = opt("--git-username", "optstr", None,
                                   "User name for HTTPS git (the password or token comes from a file).",
                                   group="scripts")
    git_password_file: Path | None = opt("--git-password-file", "optpath", None,
                                         "File holding the HTTPS password or token; re-read at every sync.",
                                         secret=True, group="scripts")
    ssh_key_file: Path | None = opt("--ssh-key-file", "optpath", None,
                                    "Private SSH key for git over SSH; re-read at every sync.", secret=True,
                                    group="scripts")
    ssh_known_hosts_file: Path | None = opt("--ssh-known-hosts-file", "optpath", None,
                                            "known_hosts for git over SSH (without it host keys are not "
                                            "checked).", group="scripts")
    sync_token_file: Path | None = opt("--sync-token-file", "optpath", None,
                                       "File with the bearer token that authorizes `POST /sync`.", secret=True,
                                       group="scripts")
    sync_hmac_secret_file: Path | None = opt("--sync-hmac-secret-file", "optpath", None,
                                             "File with the secret for `X-Hub-Signature-256` on `POST /sync`.",
                                             secret=True, group="scripts")

    # --- node checks ---------------------------------------------------------------------------
    node_host: str = opt("--node-host", "host", "127.0.0.1",
                         "Address of the node's ports. When it is this host's own (the pod's), the tcp check "
                         "reads the port's LISTEN state instead of connecting.", group="checks")
    tcp_port: int | None = opt("--tcp-port", "port", _default_tcp_port,
                               "Node TCP port; enables the tcp check (default from `NODE_TYPE`).",
                               env=("ANYLOG_SERVER_PORT",), group="checks")
    rest_port: int | None = opt("--rest-port", "port", _default_rest_port,
                                "Node REST port; enables the rest check (default from `NODE_TYPE`).",
                                env=("ANYLOG_REST_PORT",), group="checks")
    broker_port: int | None = opt("--broker-port", "port", None,
                                  "Node message-broker port; enables the broker check.",
                                  env=("ANYLOG_BROKER_PORT",), group="checks")
    tcp_interval: float = opt("--tcp-interval", "duration", 5.0, "Seconds between tcp checks.", minimum=0.05,
                              maximum=86400, group="checks")
    tcp_timeout: float = opt("--tcp-timeout", "duration", 3.0, "Connect timeout of the tcp check.", minimum=0.05,
                             maximum=600, group="checks")
    tcp_failure_threshold: int = opt("--tcp-failure-threshold", "int", 3,
                                     "Consecutive failures before tcp is down.", minimum=1, maximum=1000,
                                     group="checks")
    tcp_success_threshold: int = opt("--tcp-success-threshold", "int", 1,
                                     "Consecutive successes before tcp is up again.", minimum=1, maximum=1000,
                                     group="checks")
    tcp_initial_delay: float = opt("--tcp-initial-delay", "duration", 0.0, "Seconds before the first tcp check.",
                                   minimum=0, maximum=86400, group="checks")
    rest_interval: float = opt("--rest-interval", "duration", 5.0, "Seconds between rest checks.", minimum=0.05,
                               maximum=86400, group="checks")
    rest_timeout: float = opt("--rest-timeout", "duration", 3.0, "Timeout of one rest check.", minimum=0.05,
                              maximum=600, group="checks")
    rest_failure_threshold: int = opt("--rest-failure-threshold", "int", 3,
                                      "Consecutive failures before rest is down.", minimum=1, maximum=1000,
                                      group="checks")
    rest_success_threshold: int = opt("--rest-success-threshold", "int", 1,
                                      "Consecutive successes before rest is up again.", minimum=1, maximum=1000,
                                      group="checks")
    rest_initial_delay: float = opt("--rest-initial-delay", "duration", 0.0, "Seconds before the first rest check.",
                                    minimum=0, maximum=86400, group="checks")
    broker_interval: float = opt("--broker-interval", "duration", 5.0, "Seconds between broker checks.",
                                 minimum=0.05, maximum=86400, group="checks")
    broker_timeout: float = opt("--broker-timeout", "duration", 3.0, "Timeout of one broker check.", minimum=0.05,
                                maximum=600, group="checks")
    broker_failure_threshold: int = opt("--broker-failure-threshold", "int", 3,
                                        "Consecutive failures before broker is down.", minimum=1, maximum=1000,
                                        group="checks")
    broker_success_threshold: int = opt("--broker-success-threshold", "int", 1,
                                        "Consecutive successes before broker is up again.", minimum=1,
                                        maximum=1000, group="checks")
    broker_initial_delay: float = opt("--broker-initial-delay", "duration", 0.0,
                                      "Seconds before the first broker check.", minimum=0, maximum=86400,
                                      group="checks")
    check_jitter: float = opt("--check-jitter", "float", 0.1, "Random spread of check intervals, as a fraction.",
                              minimum=0, maximum=0.5, group="checks")
    ready_checks: tuple[str, ...] | None = opt("--ready-checks", "checklist", None,
                                               "Comma-separated checks that gate `/readyz` (default: every "
                                               "enabled check; empty: none; `policy` only when named).",
                                               group="checks")
    node_livez_after: float = opt("--node-livez-after", "duration", 120.0,
                                  "Seconds the rest check must fail before `/node/livez` fails.", minimum=1,
                                  maximum=86400, group="checks")

    # --- watch and hooks -----------------------------------------------------------------------
    watch: bool = opt("--watch", "bool", True, "Watch the published tree for changes.", group="hooks")
    watch_debounce: float = opt("--watch-debounce", "duration", 0.05, "Seconds changes are gathered into one batch.",
                                minimum=0.001, maximum=60, group="hooks")
    on_change_rest: str | None = opt("--on-change-rest", "optstr", None,
                                     "REST command sent to the node when local files change; `{path}` is the "
                                     "changed file's absolute path as the node sees it (e.g. `process {path}`).",
                                     group="hooks")
    node_scripts_path: str | None = opt("--node-scripts-path", "optstr", None,
                                        "The published link's path as the node's container sees it, for "
                                        "`{path}` in REST hooks (default: `--link`; the chart sets the node's "
                                        "`LOCAL_SCRIPTS`).", group="hooks")
    on_change_exec: str | None = opt("--on-change-exec", "optstr", None,
                                     "Command run (no shell) when local files change.", group="hooks")
    on_change_webhook: str | None = opt("--on-change-webhook", "optstr", None,
                                        "URL that gets a JSON POST when local files change.", group="hooks")
    on_change_glob: str = opt("--on-change-glob", "str", "*",
                              "Only changes to paths matching this glob trigger the change hooks.", group="hooks")
    on_publish_rest: str | None = opt("--on-publish-rest", "optstr", None,
                                      "REST command sent to the node when a new revision is published.",
                                      group="hooks")
    on_publish_exec: str | None = opt("--on-publish-exec", "optstr", None,
                                      "Command run (no shell) when a new revision is published.", group="hooks")
    on_publish_webhook: str | None = opt("--on-publish-webhook", "optstr", None,
                                         "URL that gets a JSON POST when a new revision is published.",
                                         group="hooks")
    hook_timeout: float = opt("--hook-timeout", "duration", 30.0, "Seconds one hook run may take.", minimum=0.1,
                              maximum=3600, group="hooks")
    hook_backoff_max: float = opt("--hook-backoff-max", "duration", 60.0,
                                  "Longest wait before retrying a failed hook, in seconds.", minimum=0.1,
                                  maximum=86400, group="hooks")

    # --- kubernetes ----------------------------------------------------------------------------
    kube: str = opt("--kube", "choice", "auto",
                    "Kubernetes API use: `auto` (when in a cluster or `KUBECONFIG` is set), `on`, `off`.",
                    choices=("auto", "on", "off"), group="kube")
    service_name: str | None = opt("--service-name", "optstr", None,
                                   "Service whose addresses give the node its network identity.", group="kube")
    network_env_file: Path | None = opt("--network-env-file", "optpath", None,
                                        "Env file written with the node's stable addresses (none: off; needs "
                                        "--service-name).",
                                        group="kube")
    node_external_ip: bool = opt("--node-external-ip", "bool", False,
                                 "Also read the Kubernetes node's external IP (needs a ClusterRole to get nodes).",
                                 group="kube")
    pod_name: str | None = opt("--pod-name", "optstr", None, "This pod's name (downward API).",
                               env=("POD_NAME",), group="kube")
    pod_namespace: str | None = opt("--pod-namespace", "optstr", None, "This pod's namespace (downward API).",
                                    env=("POD_NAMESPACE",), group="kube")
    kube_events: bool = opt("--kube-events", "bool", True, "Record Events on the pod.", group="kube")
    kube_annotations: bool = opt("--kube-annotations", "bool", True,
                                 "Annotate the pod with the scripts revision and source.", group="kube")
    kube_timeout: float = opt("--kube-timeout", "duration", 10.0,
                              "Seconds one Kubernetes API request may take (connect and answer).",
                              minimum=0.1, maximum=300, group="kube")
    kube_period: float = opt("--kube-period", "duration", 60.0,
                             "Seconds between reads of the Service once the network identity is complete.",
                             minimum=1, maximum=86400, group="kube")

    # --- the node's policy ---------------------------------------------------------------------
    policy: bool = opt("--policy", "bool", True,
                       "Read the node's own policy in the network's metadata and compare its addresses with the "
                       "stable ones (needs `NODE_TYPE` and the rest port).", group="policy")
    policy_interval: float = opt("--policy-interval", "duration", 600.0,
                                 "Seconds between reads of the node's policy; each read adds one line to the "
                                 "node's event log.", minimum=60, maximum=86400, group="policy")
    policy_delay: float = opt("--policy-delay", "duration", 30.0,
                              "Seconds after the node comes up, or its addresses change, before the policy is "
                              "read (the node declares its policy while it starts).", minimum=0, maximum=3600,
                              group="policy")
    node_type: str | None = opt("--node-type", "optstr", None,
                                "The node's type, as the node's `NODE_TYPE`: the kind of policy it declares.",
                                env=("NODE_TYPE",), group="policy")
    node_name: str | None = opt("--node-name", "optstr", None,
                                "The node's name in its policy, as the node's `NODE_NAME` (default: the name "
                                "the node reports).", env=("NODE_NAME",), group="policy")
    company_name: str = opt("--company-name", "str", "New Company",
                            "The company in the node's policy, as the node's `COMPANY_NAME`.",
                            env=("COMPANY_NAME",), group="policy")
    overlay_ip: str | None = opt("--overlay-ip", "optstr", None,
                                 "The node's stable address, as the node's `OVERLAY_IP`; compared with its policy "
                                 "when Kubernetes gives no network identity.", env=("OVERLAY_IP",), group="policy")
    tcp_bind: bool = opt("--tcp-bind", "bool", False,
                         "As the node's `TCP_BIND`: true puts the stable address in the policy's `ip` instead "
                         "of `local_ip`.", env=("TCP_BIND",), group="policy")

    @property
    def revisions_root(self) -> Path:
        """The folder that holds revisions: ``--root`` or ``.sidecar`` beside the link."""
        return self.root if self.root is not None else self.link.parent / ".sidecar"

    @property
    def node_scripts(self) -> PurePosixPath:
        """The published link as the node sees it: ``--node-scripts-path``, else ``--link``."""
        return PurePosixPath(self.node_scripts_path if self.node_scripts_path is not None else self.link)

    def check(self, name: str) -> CheckSettings:
        """The settings of check ``name`` (one of ``CHECK_NAMES``) as one object."""
        per_check = {key: getattr(self, f"{name}_{key}") for key in _PER_CHECK}
        return CheckSettings(name=name, host=self.node_host, jitter=self.check_jitter, **per_check)

    @property
    def checks(self) -> dict[str, CheckSettings]:
        """Every check's settings, enabled or not, in a fixed order."""
        return {name: self.check(name) for name in CHECK_NAMES}

    def enabled_checks(self) -> tuple[str, ...]:
        """Checks whose port is known, in a fixed order."""
        return tuple(name for name, check in self.checks.items() if check.port is not None)

    def policy_enabled(self) -> bool:
        """The node's policy is read: asked for, and the node's type and REST port are known."""
        return self.policy and bool(self.node_type) and self.rest_port is not None

    def gating_checks(self) -> tuple[str, ...]:
        """Checks that gate readiness; ``policy`` only when asked for by name."""
        if self.ready_checks is None:
            return self.enabled_checks()
        gating = (*self.enabled_checks(), *(("policy",) if self.policy_enabled() else ()))
        return tuple(c for c in self.ready_checks if c in gating)

    def hooks(self) -> dict[tuple[str, str], str]:
        """Configured hooks: ``(trigger, action)`` -> template, command or URL."""
        found = {(t, a): getattr(self, f"on_{t}_{a}") for t in HOOK_TRIGGERS for a in HOOK_ACTIONS}
        return {key: value for key, value in found.items() if value is not None}

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-ready values; secret files show only whether they are set."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("output", "take", "paths"):  # how a command prints or what it settles, not settings
                continue
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "<set>" if value is not None else None
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            if f.name == "repo" and isinstance(value, str):
                value = redact_url(value)
            if f.name.endswith("_webhook") and isinstance(value, str):
                value = redact_url(value)
            out[f.name] = value
        return out


_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_URL_QUERY = re.compile(r"\?.*$")


def redact_url(url: str) -> str:
    """Remove user info and query strings from a URL (they may carry credentials)."""
    url = _URL_USERINFO.sub(lambda m: m.group("scheme") + "<redacted>@", url)
    return _URL_QUERY.sub("?<redacted>", url)


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The declared settings, in declaration order (``command`` excluded)."""
    return [f for f in dataclasses.fields(Settings) if "flag" in f.metadata]


def env_names(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """Environment names of a setting, ``SIDECAR_*`` first."""
    return (f"SIDECAR_{f.name.upper()}", *f.metadata["env"])


_SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(raw: str) -> float:
    """Seconds from ``30``, ``2.5``, ``30s``, ``500ms``, ``5m`` or ``1h30m`` (Go's notation, as git-sync takes)."""
    text = raw.strip()
    try:
        return float(text)  # a plain number is seconds, as it always was
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise ValueError(f"not a duration: {raw!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return total
_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _convert(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    """Turn a raw string into the setting's type, or raise ValueError with a clear message."""
    meta = f.metadata
    kind = meta["kind"]
    name = f"{source}"
    if kind in ("str", "optstr", "host"):
        if kind == "optstr" and raw == "":
            return None
        if kind in ("str", "host") and not raw.strip():
            raise ValueError(f"{name}: must not be empty")
        if _CONTROL.search(raw):
            raise ValueError(f"{name}: must not contain control characters")
        return raw
    if kind in ("path", "optpath"):
        if raw == "":
            if kind == "optpath":
                return None
            raise ValueError(f"{name}: must not be empty")
        if "\x00" in raw:
            raise ValueError(f"{name}: must not contain NUL")
        # Folders and files are used from subprocesses with other working directories (git runs
        # in the revision folder): a relative one is taken from where the sidecar was started.
        # The link stays as given: it must be absolute, the node reads it at that path.
        return Path(os.path.abspath(raw)) if kind == "optpath" else Path(raw)
    if kind == "bool":
        low = raw.strip().lower()
        if low in _BOOL_TRUE:
            return True
        if low in _BOOL_FALSE:
            return False
        raise ValueError(f"{name}: expected true or false, got {raw!r}")
    if kind == "choice":
        low = raw.strip().lower()
        if low not in meta["choices"]:
            raise ValueError(f"{name}: expected one of {', '.join(meta['choices'])}, got {raw!r}")
        return low
    if kind == "checklist":
        items = tuple(x.strip().lower() for x in raw.split(",") if x.strip())
        bad = [x for x in items if x not in READY_NAMES]
        if bad:
            raise ValueError(f"{name}: unknown check {', '.join(bad)} (known: {', '.join(READY_NAMES)})")
        return items
    if kind in ("int", "port"):
        if kind == "port" and raw.strip() == "":
            return None
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"{name}: expected a whole number, got {raw!r}") from None
        lo, hi = (1, 65535) if kind == "port" else (meta["minimum"], meta["maximum"])
        _check_range(name, value, lo, hi)
        return value
    if kind in ("float", "duration"):
        try:
            number = parse_duration(raw) if kind == "duration" else float(raw.strip())
        except ValueError:
            expected = "a duration (30s, 5m, 1h30m) or seconds" if kind == "duration" else "a number"
            raise ValueError(f"{name}: expected {expected}, got {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: expected a finite number, got {raw!r}")
        _check_range(name, number, meta["minimum"], meta["maximum"])
        return number
    raise AssertionError(f"unknown kind {kind}")


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"{name}: must be at least {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}: must be at most {hi:g}, got {value:g}")


class UsageError(SettingsError):
    """A command line that cannot be parsed: an unknown flag, a missing value, no command."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as one line instead of printed after the whole usage."""

    def error(self, message: str) -> NoReturn:
        missing = re.fullmatch(r"argument (--[\w-]+)(?:/[\w-]+)?: expected one argument", message)
        if missing:
            flag = missing.group(1)
            message = f"{flag}: expected a value (write {flag}=VALUE for a value that starts with '-')"
        raise UsageError([message])


class _BoolAction(argparse.Action):
    """``--x``, ``--x true|false`` (as the environment variable takes) and ``--no-x``."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        flag = option_strings[0]
        super().__init__([flag, f"--no-{flag[2:]}"], dest, nargs="?", metavar="BOOL", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if option_string is not None and option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string}: takes no value")
            values = "false"
        setattr(namespace, self.dest, "true" if values is None else values)


COMMAND_HELP = {
    "run": "run the sidecar (seed, sync, watch, check, serve)",
    "seed": "publish the scripts once (or sync once if published) and exit",
    "check": "run every enabled node check once and print a table",
    "status": "print a summary of a running sidecar (-o json|yaml: everything)",
    "resolve": "settle a held conflict (--take upstream|mine [PATH...]) and publish at once",
    "version": "print the version",
}
OUTPUTS = ("summary", "json", "yaml")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser: one subcommand per mode, each taking every setting."""
    from sidecar import __version__

    common = _Parser(add_help=False, allow_abbrev=False)
    for group_name in ("general", "scripts", "checks", "hooks", "kube", "policy"):
        group = common.add_argument_group(group_name)
        for f in setting_fields():
            if f.metadata["group"] != group_name:
                continue
            # argparse formats help with %: a literal one ("10 %") must be doubled.
            text = f"{f.metadata['help']} [env: {', '.join(env_names(f))}]".replace("%", "%%")
            if f.metadata["kind"] == "bool":
                group.add_argument(f.metadata["flag"], dest=f.name, default=None, action=_BoolAction, help=text)
            else:
                group.add_argument(f.metadata["flag"], dest=f.name, default=None, metavar="VALUE", help=text)
    parser = _Parser(
        prog="edgelake-sidecar",
        description="Sidecar for EdgeLake nodes: scripts seed and sync, node checks, probes and metrics.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"edgelake-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        command = sub.add_parser(name, parents=[common], help=COMMAND_HELP.get(name),
                                 description=COMMAND_HELP.get(name), allow_abbrev=False,
                                 epilog="Seconds also take durations: 30s, 5m, 1h30m, 500ms. A true/false flag "
                                        "takes a value too: --watch false.")
        if name == "status":
            command.add_argument("-o", "--output", choices=OUTPUTS, default="summary",
                                 help="`summary` (default), or everything as `json` or `yaml`")
        if name == "resolve":
            command.add_argument("--take", choices=("upstream", "mine"), required=True,
                                 help="upstream: take upstream's file (yours is kept under the root); "
                                      "mine: keep your whole file")
            command.add_argument("paths", nargs="*", metavar="PATH", help="files to settle (default: all in conflict)")
    return parser


def _unknown_arguments(parser: argparse.ArgumentParser, command: str, extras: Sequence[str]) -> str:
    """One line for arguments no flag takes, with the closest flag for a mistyped one."""
    import difflib

    word = extras[0]
    if not word.startswith("-"):
        return f"unexpected argument {word!r} (a value that starts with '-' needs --flag=VALUE)"
    name = word.split("=", 1)[0]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [o for a in sub.choices[command]._actions for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(name, flags, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{name}: no such flag{hint}"


def load(argv: Sequence[str] | None = None, environ: Env | None = None) -> Settings:
    """Parse flags and environment into Settings; raise SettingsError listing every problem."""
    env = dict(os.environ if environ is None else environ)
    parser = build_parser()
    args, extras = parser.parse_known_args(list(argv) if argv is not None else None)
    if args.command is None:
        raise UsageError([f"a command is required: {', '.join(COMMANDS)} (see --help)"])
    if extras:
        raise UsageError([_unknown_arguments(parser, args.command, extras)])
    values: dict[str, Any] = {"command": args.command, "output": getattr(args, "output", "summary"),
                              "take": getattr(args, "take", None), "paths": tuple(getattr(args, "paths", ()))}
    problems: list[str] = []
    for f in setting_fields():
        cli_value = getattr(args, f.name)
        try:
            if cli_value is not None:
                values[f.name] = _convert(f, cli_value, f.metadata["flag"])
                continue
            for name in env_names(f):
                if name in env:
                    values[f.name] = _convert(f, env[name], name)
                    break
            else:
                default = f.metadata["default"]
                values[f.name] = default(env) if callable(default) else default
        except ValueError as exc:
            problems.append(str(exc))
    if values["command"] in ("run", "seed"):
        problems.extend(_unknown_env(env))
    if not problems:
        problems.extend(_cross_checks(values))
    if not problems and values["command"] in ("run", "seed"):
        problems.extend(_file_checks(values))
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _unknown_env(env: Env) -> list[str]:
    """A ``SIDECAR_*`` variable that names no setting is a typo that would silently do nothing."""
    import difflib

    known = {name for f in setting_fields() for name in env_names(f) if name.startswith("SIDECAR_")}
    problems = []
    for name in sorted(n for n in env if n.startswith("SIDECAR_") and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name}: no such setting{hint}")
    return problems


def _cross_checks(v: dict[str, Any]) -> list[str]:
    """Checks that involve more than one setting."""
    problems: list[str] = []
    link: Path = v["link"]
    root: Path | None = v["root"]
    if v["command"] in ("run", "seed") and not v["repo"] and not v["fallback_dir"]:
        problems.append("--repo or --fallback-dir: at least one scripts source is required")
    if not link.is_absolute():
        problems.append(f"--link: must be an absolute path, got {str(link)!r}")
    if root is not None:
        if not root.is_absolute():
            problems.append(f"--root: must be an absolute path, got {str(root)!r}")
        elif root == link or _is_within(link, root):
            problems.append("--root: must not contain the link or be the link itself")
        elif _is_within(root, link):
            problems.append("--root: must not be inside the published link")
    repo = v["repo"]
    if repo is not None and repo.startswith("-"):
        problems.append(f"--repo: must not start with '-', got {repo!r}")
    ref = v["ref"]
    if ref is not None and (ref.startswith("-") or ".." in ref or any(c in ref for c in " ~^:?*[\\")):
        problems.append(f"--ref: not a valid branch, tag or commit name: {ref!r}")
    if v["git_username"] and not v["git_password_file"]:
        problems.append("--git-username: needs --git-password-file")
    for name in CHECK_NAMES:
        if v[f"{name}_timeout"] > v[f"{name}_interval"] * 10:
            problems.append(f"--{name}-timeout: must not exceed ten times --{name}-interval")
    for name in ("on_change_webhook", "on_publish_webhook"):
        url = v[name]
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            problems.append(f"--{name.replace('_', '-')}: expected an http(s) URL, got {redact_url(url)!r}")
    problems.extend(_hook_checks(v))
    node_scripts = v["node_scripts_path"]
    if node_scripts is not None and not node_scripts.startswith("/"):
        problems.append(f"--node-scripts-path: must be an absolute path, got {node_scripts!r}")
    if v["kube"] != "off" and v["network_env_file"] is not None and not v["service_name"]:
        problems.append("--network-env-file: needs --service-name")
    return problems


SECRET_FILES = ("git_password_file", "ssh_key_file", "ssh_known_hosts_file", "sync_token_file",
                "sync_hmac_secret_file")


def _file_checks(v: dict[str, Any]) -> list[str]:
    """Files and folders the sidecar will read must be there before it writes anything.

    A secret mounted late would only delay the first sync, but a missing one at start is almost
    always a typo in the path: failing at once beats retrying for ever with ``.sidecar/`` created.
    """
    problems = [f"{_flag(name)}: {why}" for name in SECRET_FILES
                if v[name] is not None and (why := _unreadable_file(v[name]))]
    fallback: Path | None = v["fallback_dir"]
    if fallback is not None and not v["repo"] and not fallback.is_dir():
        why = "is not a folder" if fallback.exists() else "no such folder"
        problems.append(f"--fallback-dir: {why}: {str(fallback)!r} (it is the only scripts source)")
    if v["command"] == "run" and _is_local(v["node_host"]):
        for name in CHECK_NAMES:
            if v[f"{name}_port"] is not None and v[f"{name}_port"] == v["http_port"]:
                problems.append(f"--{name}-port: {v['http_port']} is the sidecar's own --http-port; the {name} "
                                "check would probe the sidecar, not the node")
    return problems


def _unreadable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (a symlink to one is fine: Secrets are mounted so)."""
    import stat

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return f"is a folder, not a file: {str(path)!r}"
        if not stat.S_ISREG(mode):
            return f"is not a regular file: {str(path)!r}"
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return f"no such file: {str(path)!r}"
    except OSError as exc:
        return f"cannot be read: {str(path)!r} ({exc.strerror})"
    return None


def _is_local(host: str) -> bool:
    """True when ``host`` names this pod's own network namespace."""
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _hook_checks(v: dict[str, Any]) -> list[str]:
    """Hooks that could never run, or could not run as written."""
    problems: list[str] = []
    for trigger in HOOK_TRIGGERS:
        flag = f"--on-{trigger}"
        if v[f"on_{trigger}_rest"] is not None and v["rest_port"] is None:
            problems.append(f"{flag}-rest: needs the node's REST port (--rest-port, ANYLOG_REST_PORT or NODE_TYPE)")
        command = v[f"on_{trigger}_exec"]
        if command is not None:
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                argv, why = [], f"cannot be split into words ({exc})"
            else:
                why = "is empty"
            if not argv:
                problems.append(f"{flag}-exec: {why}")
    rest = v["on_publish_rest"]
    if rest is not None and ("{path}" in rest or "{abspath}" in rest):
        problems.append("--on-publish-rest: {path} and {abspath} exist only for --on-change-rest")
    if not v["watch"]:
        for kind in HOOK_ACTIONS:
            if v[f"on_change_{kind}"] is not None:
                problems.append(f"--on-change-{kind}: needs --watch (changes are seen by the watcher)")
    return problems


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


def is_sha(ref: str | None) -> bool:
    """True when ``ref`` looks like a commit id rather than a branch or tag."""
    return ref is not None and bool(_SHA_RE.match(ref))


def pinned(settings: Settings) -> bool:
    """A full commit SHA never moves, so it is never polled once published."""
    return settings.ref is not None and is_sha(settings.ref) and len(settings.ref) == 40
