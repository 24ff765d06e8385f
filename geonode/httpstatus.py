"""HTTP status lines: every reason phrase geonode sends comes from ``http.HTTPStatus``, here.

``status_line(404)`` is ``"404 Not Found"`` (the form ``start_response`` takes); statuses
``http.HTTPStatus`` does not know get the phrase ``"Unknown"``. A module sending a fixed status
on a hot path keeps its line in a module constant.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["phrase", "status_line"]

_PHRASES: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_LINES: dict[int, str] = {code: f"{code} {text}" for code, text in _PHRASES.items()}


def phrase(status: int) -> str:
    """The reason phrase of an HTTP status code ("Unknown" for unregistered ones)."""
    return _PHRASES.get(status, "Unknown")


def status_line(status: int) -> str:
    """``"<status> <reason phrase>"``, e.g. ``"200 OK"``."""
    line = _LINES.get(status)
    return line if line is not None else f"{status} {phrase(status)}"
