"""Short text/plain answers (errors, 405s, redirects' bodies) shared by the path services."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus


def phrase(status: int) -> str:
    """The reason phrase of an HTTP status code ("Unknown" for unregistered ones)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def text_response(start_response: Callable, status: int, text: str,
                  headers: Iterable[tuple[str, str]] = (), head: bool = False) -> list[bytes]:
    """Answer ``status`` with ``text`` and a newline as UTF-8 plain text (no body for HEAD)."""
    body = (text + "\n").encode()
    start_response(f"{status} {phrase(status)}",
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))), *headers])
    return [] if head else [body]
