"""The exec action: run a command without a shell; the trigger is in its environment and on its stdin."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sidecar import procs
from sidecar.hooks.trigger import HookError, Trigger

ENV_PATHS_MAX = 32 * 1024  # bytes of SIDECAR_CHANGED_PATHS; Linux refuses one variable over 128 KiB


class ExecAction:
    """Run a command without a shell; the trigger is in its environment and, as JSON, on its stdin."""

    kind = "exec"

    def __init__(self, argv: list[str], link: Path) -> None:
        self.argv = argv
        self.link = link

    def env(self, hook: str, trigger: Trigger) -> dict[str, str]:
        """The child's environment: ours without SIDECAR_* settings, plus the trigger."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        paths, size = [], 0
        for path in trigger.changes:
            size += len(os.fsencode(path)) + 1
            if size > ENV_PATHS_MAX:
                break  # the full list is on stdin; SIDECAR_CHANGED_COUNT tells the list was cut
            paths.append(path)
        env.update({
            "SIDECAR_HOOK": hook,
            "SIDECAR_TRIGGER": trigger.trigger,
            "SIDECAR_EVENT": trigger.event,
            "SIDECAR_REVISION": trigger.revision or "",
            "SIDECAR_SOURCE": trigger.source or "",
            "SIDECAR_SCRIPTS": str(self.link),
            "SIDECAR_CHANGED_PATHS": "\n".join(paths),
            "SIDECAR_CHANGED_COUNT": str(len(trigger.changes)),
        })
        return env

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Run the command; a non-zero exit is a failure. Output is capped and drained by procs.run."""
        stdin = json.dumps(trigger.payload(hook)).encode()
        try:
            result = await procs.run(self.argv, timeout=timeout, env=self.env(hook, trigger), stdin=stdin)
        except OSError as exc:
            raise HookError(f"{self.argv[0]} could not start: {exc.strerror or exc}") from None
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise HookError(f"exit {result.returncode}" + (f": {lines[-1]}" if lines else ""))
