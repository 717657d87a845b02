"""The rest action: send a command to the node through the sidecar's one REST client."""

from __future__ import annotations

from pathlib import PurePosixPath

from sidecar.hooks.trigger import HookError, HookRefused, HookSkipped, Trigger
from sidecar.noderest import NodeRest, NodeRestError

MAX_FILES = 20  # beyond this many files one batch is a bulk change, not edits to process one by one
PLACEHOLDERS = ("{path}", "{abspath}")


class RestAction:
    """Send a node command, with the method the node expects for it.

    With ``{path}`` in the template (``{abspath}`` is the same), one command per changed file that
    still exists, naming the file by its absolute path as the node sees it (the node refuses a path
    relative to its scripts folder); otherwise one command per run.
    """

    kind = "rest"

    def __init__(self, template: str, client: NodeRest, node_scripts: PurePosixPath) -> None:
        self.template = template
        self.client = client
        self.node_scripts = node_scripts

    def commands(self, trigger: Trigger) -> list[str]:
        """The commands one run sends, in order; raises HookSkipped when there is nothing sensible to send."""
        if not any(p in self.template for p in PLACEHOLDERS):
            return [self.template]
        # A name with a line break cannot travel in a header; a name that is not UTF-8 could not be
        # told to the node either: such files are left out, never retried for ever.
        files = [p for p, kind in trigger.changes.items() if kind != "deleted" and _sendable(p)]
        if not files:
            raise HookSkipped("only deletions or unsendable file names: no file to process")
        if len(files) > MAX_FILES:
            raise HookSkipped(f"{len(files)} files changed at once (more than {MAX_FILES}): a bulk change "
                              "is not replayed file by file")
        # Plain replacement, not str.format: node commands often hold braces (JSON policies).
        out = []
        for path in files:
            absolute = str(self.node_scripts / path)
            out.append(self.template.replace("{path}", absolute).replace("{abspath}", absolute))
        return out

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Send each command; stop at the first the node refuses or does not answer."""
        for command in self.commands(trigger):
            try:
                answer = await self.client.command(command, timeout=timeout)
            except NodeRestError as exc:
                raise HookError(f"node {exc.reason}: {exc}") from None
            refusal = answer.error()
            if refusal is not None:
                raise HookRefused(f"node refused {command!r}: {refusal}")
            if not 200 <= answer.status < 300:
                raise HookError(f"node answered {answer.status} to {command!r}: {answer.text[:120].strip()}")


def _sendable(path: str) -> bool:
    """A file name the node can be sent in a header: no line break or NUL, and valid UTF-8."""
    if any(c in path for c in "\r\n\0"):
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gives undecodable bytes as surrogates
        return False
    return True
