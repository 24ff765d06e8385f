"""Short text/plain answers (errors, 405s, redirects' bodies) shared by the path services."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from geonode.httpstatus import phrase, status_line

# phrase: also importable from here, where the services used to take it
__all__ = ["phrase", "text_response"]


def text_response(start_response: Callable, status: int, text: str,
                  headers: Iterable[tuple[str, str]] = (), head: bool = False) -> list[bytes]:
    """Answer ``status`` with ``text`` and a newline as UTF-8 plain text (no body for HEAD)."""
    body = (text + "\n").encode()
    start_response(status_line(status),
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))), *headers])
    return [] if head else [body]
