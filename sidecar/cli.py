"""Entry point: ``edgelake-sidecar run | seed | check | status | version``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from sidecar import __version__
from sidecar.config import Settings, SettingsError, UsageError, load

EXIT_OK, EXIT_FAILED, EXIT_SETTINGS = 0, 1, 2


def _status(settings: Settings) -> int:
    """Print the /status of a running sidecar on this host: a summary, or all of it as JSON or YAML."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    url = f"http://{host}:{settings.http_port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edgelake-sidecar: cannot read {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if settings.output == "json":
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
    elif settings.output == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(status, sort_keys=False))
    else:
        sys.stdout.write(summary(status))
    return EXIT_OK


def summary(status: dict[str, Any]) -> str:
    """A few lines a person reads at a glance: the scripts, the checks, what is wrong."""
    scripts = status.get("scripts") or {}
    revision = scripts.get("revision") or "-"
    lines = [f"edgelake-sidecar {status.get('version', '?')}, up {_age(status.get('uptime_seconds'))}"]
    if scripts.get("published"):
        source = scripts.get("source") or "?"
        ref = f" (ref {scripts.get('ref') or 'default'})" if source == "git" else ""
        lines.append(f"scripts:  {source} {revision[:12]}{ref}, published {scripts.get('published_time') or '?'}")
    elif scripts.get("problem"):
        lines.append(f"scripts:  NOT PUBLISHED: {scripts['problem']}")
    else:
        lines.append("scripts:  not published yet")
    result = scripts.get("last_sync_result") or "none yet"
    sync_line = f"sync:     last {result}"
    if scripts.get("last_sync_error"):
        sync_line += f": {scripts['last_sync_error']}"
    if scripts.get("next_sync_time"):
        sync_line += f"; next {scripts['next_sync_time']}"
    lines.append(sync_line)
    edits = scripts.get("local_edit_files") or []
    conflicts = scripts.get("conflict_files") or []
    if edits or conflicts:
        line = f"edits:    {len(edits)} local, {len(conflicts)} in conflict"
        if scripts.get("held_upstream"):
            line += f", holding back upstream {scripts['held_upstream'][:12]}"
        lines.append(line)
    if conflicts:
        lines.append("          settle with: edgelake-sidecar resolve --take upstream|mine [PATH...]")
    checks = status.get("checks") or {}
    if checks:
        lines.append("checks:   " + ", ".join(
            f"{name} {'up' if c.get('up') else 'down' if c.get('up') is False else 'unknown'}"
            for name, c in checks.items()))
    else:
        lines.append("checks:   none enabled")
    policy = (status.get("node") or {}).get("policy") or {}
    if policy.get("enabled"):
        verdict = policy.get("verdict") or "not read yet"
        detail = policy.get("summary") if verdict != "match" else None
        lines.append(f"policy:   {verdict}" + (f": {detail}" if detail else ""))
    components = (status.get("components") or {}).items()
    down = [name for name, c in components if not c.get("alive")]
    if down:
        lines.append(f"stopped:  {', '.join(down)}")
    stuck = [f"{name} ({_doing(c.get('doing'))})" for name, c in components
             if c.get("alive") and c.get("overdue_seconds") is not None]
    if stuck:
        lines.append(f"stuck:    {', '.join(stuck)}")
    problem = (status.get("kube") or {}).get("problem")
    if problem:
        lines.append(f"kube:     {problem}")
    lines.append("(edgelake-sidecar status -o yaml for everything)")
    return "\n".join(lines) + "\n"


def _doing(parts: object) -> str:
    """What a component's parts are doing, from its ``/status`` ``doing`` map."""
    if not isinstance(parts, dict) or not parts:
        return "?"
    return "; ".join(str(p.get("doing", "?")) if isinstance(p, dict) else "?" for p in parts.values())


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 1 failed, 2 invalid settings)."""
    try:
        settings = load(argv)
    except UsageError as exc:
        print(f"edgelake-sidecar: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"edgelake-sidecar: invalid setting: {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    except SystemExit as exc:  # argparse: --help and --version print and exit 0
        return EXIT_SETTINGS if exc.code not in (0, None) else EXIT_OK

    if settings.command == "version":
        print(f"edgelake-sidecar {__version__}")
        return EXIT_OK

    from sidecar import logs

    logs.setup(settings.log_level, settings.log_format)
    if settings.command in ("run", "seed"):
        # Published files group-writable: the node container shares the pod's fsGroup, so a user
        # editing scripts from there (kubectl exec -c node) can, without extra capabilities.
        os.umask(0o002)
    if settings.command == "status":
        return _status(settings)
    if settings.command == "seed":
        from sidecar.scripts.commands import seed_command

        return asyncio.run(seed_command(settings))
    if settings.command == "resolve":
        from sidecar.scripts.commands import resolve_command

        return asyncio.run(resolve_command(settings))
    if settings.command == "check":
        from sidecar.checks.runner import check_command

        return asyncio.run(check_command(settings))
    from sidecar import app

    return asyncio.run(app.run(settings))
