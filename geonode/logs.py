"""Logging set-up: one line per event on stderr.

``2026-11-25T15:00:00.123Z INFO geonode.web: message`` — UTC, millisecond precision, so lines
from several nodes (or a node and its tests) sort together.
"""

from __future__ import annotations

import logging
import sys
import time

LEVELS = ("debug", "info", "warning", "error")


class LineFormatter(logging.Formatter):
    """One line per event; a traceback follows its event line, indented, so lines that start
    with a timestamp are still exactly the events (grep/sort friendly)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        first, *more = record.getMessage().rstrip().splitlines() or [""]
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {first}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            more += record.exc_text.splitlines()
        # Continuation lines (multi-line messages, tracebacks) are indented, never events.
        more = [x for x in more if x.strip()]
        if more:
            line += "\n" + "\n".join("    " + x for x in more)
        return line


def setup(level: str | int = "info") -> None:
    """Route every logger to stderr, one line per event, at ``level``."""
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings (deprecations in an app, gevent's monkey-patch notices) become events too.
    logging.captureWarnings(True)
