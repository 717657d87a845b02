"""structlog setup: JSON off a TTY, readable on one, and secret redaction on every event."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Registered secrets (tokens, passwords read from files) are replaced wherever they appear.
_secrets: set[str] = set()
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*(?:bearer|basic)\s+)\S+")


def add_secret(value: str) -> None:
    """Never print ``value`` in a log line (min. 4 characters, shorter ones would mask noise)."""
    if len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Remove registered secrets, URL user info and auth headers from ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    text = _USERINFO.sub(r"\1<redacted>@", text)
    return _AUTH_HEADER.sub(r"\1<redacted>", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def _redactor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = _redact_value(value)
    return event


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once for the process; ``fmt`` is auto, json or console."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> Any:
    """A logger bound to a component name.

    A lazy proxy: modules create their loggers at import time, before :func:`setup` has run,
    and must still log with the configuration chosen later.
    """
    return structlog.get_logger(component=name)
