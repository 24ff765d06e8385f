"""Logging set-up: one event per line on stderr, in one of two formats.

``standard`` (the default): ``2026-11-25T15:00:00.123Z INFO geonode.web: message`` — UTC,
millisecond precision, so lines from several nodes (or a node and its tests) sort together.

``json``: one JSON object per line, ``{"time", "level", "logger", "message"}`` plus, for an
access-log line, its fields as keys (``remote_addr``, ``method``, ``path``, ``status``,
``duration`` ...: ``geonode.web.options``), plus ``exception`` with the formatted traceback when
there is one. Log shippers (Loki, Elasticsearch, CloudWatch) take it as it is.

Level names are case-insensitive (``--loglevel DEBUG``), as in Crossbar.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("standard", "json")

#: the ``extra=`` key under which a log call passes structured fields (the access log's)
FIELDS = "geonode_fields"


#: Crossbar's level names that Python's logging spells differently
_CROSSBAR_LEVELS = {"warn": "warning", "trace": "debug", "critical": "error"}


def level_name(value: str) -> str:
    """``--loglevel``'s argparse type: any case, Crossbar's names too (``warn``, ``trace``);
    argparse checks the result against LEVELS."""
    name = value.strip().lower()
    return _CROSSBAR_LEVELS.get(name, name)


def _utc(record: logging.LogRecord) -> str:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{t}.{int(record.msecs):03d}Z"


class LineFormatter(logging.Formatter):
    """One line per event; a traceback follows its event line, indented, so lines that start
    with a timestamp are still exactly the events (grep/sort friendly)."""

    def __init__(self, process: int | None = None) -> None:
        super().__init__()
        # Under --processes: which child wrote the line, as "geonode.node[2]".
        self.tag = f"[{process}]" if process else ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)

    def format(self, record: logging.LogRecord) -> str:
        first, *more = record.getMessage().rstrip().splitlines() or [""]
        line = f"{self.formatTime(record)} {record.levelname} {record.name}{self.tag}: {first}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            more += record.exc_text.splitlines()
        # Continuation lines (multi-line messages, tracebacks) are indented, never events.
        more = [x for x in more if x.strip()]
        if more:
            line += "\n" + "\n".join("    " + x for x in more)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per event, newlines inside it escaped: always exactly one line."""

    def __init__(self, process: int | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict = {"time": _utc(record), "level": record.levelname, "logger": record.name,
                     "message": record.getMessage()}
        if self.process:
            out["process"] = self.process
        fields = getattr(record, FIELDS, None)
        if fields:
            for k, v in fields.items():
                out.setdefault(k, v)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str | int = "info", fmt: str = "standard", process: int | None = None) -> None:
    """Route every logger to stderr, one line per event, at ``level``, in format ``fmt``;
    ``process``: the child's number under ``--processes`` (shown with every line)."""
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else LineFormatter(process))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings (deprecations in an app, gevent's monkey-patch notices) become events too.
    logging.captureWarnings(True)


def origin(exc: BaseException) -> str:
    """Where ``exc`` was raised, as `` (FILE, line N)``; for a SyntaxError the offending line of
    the file it could not compile. Empty when unknown. Error messages that name only the
    exception (an app module that fails to import) append it."""
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}, line {exc.lineno})"
    import importlib
    import os

    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    # The innermost frame not of the import machinery (frozen, or importlib's import_module)
    # below the one that caught it: the user's line; none when the module itself is not
    # found (not importlib's line, nor the catcher's).
    machinery = os.path.dirname(importlib.__file__) + os.sep
    for frame in reversed(frames[1:] or frames):
        if not frame.filename.startswith(("<frozen ", machinery)):
            return f" ({frame.filename}, line {frame.lineno})"
    return ""
