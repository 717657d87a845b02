"""The webhook action: POST the trigger as JSON."""

from __future__ import annotations

from urllib.parse import urlsplit

from sidecar import __version__, logs
from sidecar.config import redact_url
from sidecar.hooks.trigger import HookError, HookRefused, Trigger

RETRYABLE_4XX = (408, 429)  # "too slow" and "too many": the receiver may take it later


class WebhookAction:
    """POST the trigger as JSON. The URL may carry a token: it is registered as a secret and never shown."""

    kind = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact_url(url)
        # Whatever the URL carries beyond its address may be a token: never print it anywhere.
        parts = urlsplit(url)
        query_values = [pair.partition("=")[2] for pair in parts.query.split("&")]
        for secret in (parts.query, parts.password or "", *query_values):
            logs.add_secret(secret)

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """One POST with a total timeout; a 4xx is a refusal, anything else outside 2xx a failure.

        Redirects are not followed.
        """
        import aiohttp  # only when a webhook is configured: it is the heaviest import here

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.post(self.url, json=trigger.payload(hook), allow_redirects=False,
                                 headers={"User-Agent": f"edgelake-sidecar/{__version__}"}) as resp:
                status = resp.status
        except aiohttp.ClientError as exc:
            raise HookError(logs.redact(f"{self.shown}: {type(exc).__name__}: {exc}")) from None
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            raise HookRefused(f"{self.shown} answered {status}")
        if not 200 <= status < 300:
            raise HookError(f"{self.shown} answered {status}")
