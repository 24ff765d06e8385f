"""``${VAR}`` / ``$VAR`` substitution from the environment, as Crossbar does it.

Crossbar reads ``"$VAR"`` (a whole string) for endpoint ports and ``"${VAR}"`` inside any string
(tickets, secrets). geonode accepts both forms in any string value. A variable that is not set is
an error naming the key's JSON path and the variable, never a silent empty string.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")

# Keys whose value is a number in the schema: a whole "$VAR" there becomes an int when the
# variable holds digits (Crossbar does this for endpoint ports).
INT_KEYS = frozenset({"port", "backlog", "forwarded_port", "external_port", "minthreads",
                      "maxthreads", "user_timeout", "client_timeout", "hsts_max_age",
                      "max_body_size", "max_connections", "request_head_timeout",
                      "keepalive_timeout"})


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-$]+$")


def join_path(parent: str, key: str | int) -> str:
    """``workers[0]`` + ``transports`` → ``workers[0].transports``; ints become ``[i]``;
    keys that are not plain words are quoted: ``paths["/"]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not _PLAIN_KEY.match(str(key)):
        return f"{parent}[{json.dumps(str(key))}]"
    return f"{parent}.{key}" if parent else str(key)


# Free-form user data (a json service's value, a component's extra): a string that merely
# starts with "$" is data there, so only the explicit "${VAR}" form is substituted.
USER_DATA_KEYS = frozenset({"value", "extra"})


def _substitute_str(value: str, path: str, env: Mapping[str, str], errors: list[str],
                    braced_only: bool = False) -> Any:
    whole = None if braced_only else _WHOLE.match(value)
    if whole:
        name = whole.group(1)
        if name not in env:
            errors.append(f"{path}: environment variable '{name}' is not set")
            return value
        found = env[name]
        key = path.rsplit(".", 1)[-1]
        if key in INT_KEYS and found.strip().isdigit():
            return int(found)
        return found

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name not in env:
            errors.append(f"{path}: environment variable '{name}' is not set")
            return m.group(0)
        return env[name]

    return _BRACED.sub(repl, value)


def substitute(data: Any, env: Mapping[str, str] | None = None, path: str = "",
               errors: list[str] | None = None) -> tuple[Any, list[str]]:
    """Return ``(data with variables replaced, errors)``; ``data`` itself is not modified."""
    env = os.environ if env is None else env
    errors = [] if errors is None else errors

    def walk(obj: Any, p: str, data: bool) -> Any:
        if isinstance(obj, str):
            return _substitute_str(obj, p, env, errors, data) if "$" in obj else obj
        if isinstance(obj, list):
            return [walk(x, join_path(p, i), data) for i, x in enumerate(obj)]
        if isinstance(obj, dict):
            return {k: walk(v, join_path(p, k), data or k in USER_DATA_KEYS)
                    for k, v in obj.items()}
        return obj

    return walk(data, path, False), errors
