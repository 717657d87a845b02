"""Entry point: ``edgelake-sidecar run | seed | check | status | version``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.config import Settings, SettingsError, load

EXIT_OK, EXIT_FAILED, EXIT_SETTINGS = 0, 1, 2


def _status(settings: Settings) -> int:
    """Print the /status of a running sidecar on this host."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    url = f"http://{host}:{settings.http_port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            sys.stdout.write(response.read().decode())
    except (urllib.error.URLError, OSError) as exc:
        print(f"edgelake-sidecar: cannot read {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 1 failed, 2 invalid settings)."""
    try:
        settings = load(argv)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"edgelake-sidecar: invalid setting: {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    except SystemExit as exc:  # argparse: unknown flag or --help
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
