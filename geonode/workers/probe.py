"""``geonode check``'s look at component classes, in a child process (never in the checking
process: user modules run code on import, and a Twisted one picks txaio's flavour).

Input (stdin, one JSON line): ``{"pythonpath": [...], "items": [{"path", "expect",
"classname" | "callbacks"}]}``, ``expect`` one of ``session`` (an autobahn ApplicationSession,
as a container runs), ``router`` (a router worker's component: looked at only when it is an
autobahn one, decided as the node decides at start, geonode.config.imports) and ``callbacks``
(a ``function`` component). Output (stdout, one JSON line): ``{"errors": [...], "twisted":
bool}``, each error worded exactly as the worker logs it at start (geonode.workers.kinds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from geonode.config.imports import is_autobahn_component
from geonode.workers.kinds import (
    LoadError,
    load_callbacks,
    load_session_class,
    twisted_available,
)

#: Bound on one probe (imports of user modules).
PROBE_TIMEOUT = 120.0


def main() -> None:
    req = json.loads(sys.stdin.readline())
    sys.path[:0] = [p for p in req.get("pythonpath") or [] if p not in sys.path]
    errors: list[str] = []
    for item in req.get("items") or []:
        try:
            if item["expect"] == "callbacks":
                load_callbacks(item.get("callbacks") or {}, item["path"])
            elif item["expect"] == "router" and not is_autobahn_component(item["classname"]):
                # decided as the node decides at start; a plain class is imported by
                # geonode.config.verify in the checking process, as start imports it
                continue
            else:
                load_session_class(item["classname"], item["path"])
        except LoadError as e:
            errors.append(str(e))
        except BaseException as e:  # SystemExit from a module, ...
            errors.append(f"{item['path']}: {type(e).__name__}: {e}")
    sys.stdout.write(json.dumps({"errors": errors, "twisted": twisted_available()}) + "\n")
    sys.stdout.flush()


def run(items: list[dict], pythonpath: list[str], env: dict[str, str], cwd: str,
        json_path: str) -> dict[str, Any]:
    """Run the probe (plain subprocess: ``geonode check`` is not monkey-patched)."""
    from geonode.workers.runner import boot_argv

    req = json.dumps({"pythonpath": pythonpath, "items": items}) + "\n"
    try:
        done = subprocess.run(boot_argv("probe"), input=req.encode(), capture_output=True,
                              env=env, cwd=cwd, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"errors": [f"{json_path}: importing its components took more than "
                           f"{PROBE_TIMEOUT:.0f} s"], "twisted": True}
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"errors": [f"{json_path}: importing its components failed: {tail[0]}"],
                "twisted": True}
