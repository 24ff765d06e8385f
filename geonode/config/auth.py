"""What ``geonode check`` (and start) says about auth configs beyond the schema: methods that
need something of their transport. ``errors(data)`` walks every WAMP place of the config.

- ``tls`` needs a TLS endpoint that asks for client certificates (``tls.ca_certificates``):
  otherwise no session could ever have a certificate to show.
- ``cookie`` needs cookie tracking (the ``cookie`` option) on the same WebSocket transport or
  path; RawSocket has no cookies at all (Crossbar: "activate cookie-tracking").
"""

from __future__ import annotations

from typing import Any

from geonode.config.environ import join_path


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _auth(cfg: dict, path: str, endpoint: dict, epath: str, websocket: bool,
          out: list[str]) -> None:
    auth = _dict(cfg.get("auth"))
    if "tls" in auth and not _dict(endpoint.get("tls")).get("ca_certificates"):
        out.append(f"{path}.auth.tls: TLS client-certificate authentication needs a TLS "
                   f"endpoint that asks for client certificates ({epath}.tls.ca_certificates)")
    if "cookie" in auth:
        if not websocket:
            out.append(f"{path}.auth.cookie: cookie authentication needs a WebSocket "
                       "transport or path (RawSocket has no cookies)")
        elif "cookie" not in cfg:
            out.append(f"{path}.auth.cookie: cookie authentication needs cookie tracking: "
                       f"add a 'cookie' option ({path}.cookie)")


def _paths(paths: dict, ppath: str, endpoint: dict, epath: str, out: list[str]) -> None:
    for key, svc in paths.items():
        svc = _dict(svc)
        spath = join_path(ppath, key)
        if svc.get("type") == "websocket":
            _auth(svc, spath, endpoint, epath, True, out)
        elif svc.get("type") == "path":
            _paths(_dict(svc.get("paths")), f"{spath}.paths", endpoint, epath, out)


def errors(data: dict) -> list[str]:
    out: list[str] = []
    workers = data.get("workers")
    for wi, worker in enumerate(workers if isinstance(workers, list) else []):
        transports = _dict(worker).get("transports")
        for ti, t in enumerate(transports if isinstance(transports, list) else []):
            t = _dict(t)
            tpath = f"workers[{wi}].transports[{ti}]"
            ep, epath = _dict(t.get("endpoint")), f"{tpath}.endpoint"
            kind = t.get("type")
            if kind in ("websocket", "rawsocket"):
                _auth(t, tpath, ep, epath, kind == "websocket", out)
            elif kind == "web":
                _paths(_dict(t.get("paths")), f"{tpath}.paths", ep, epath, out)
            elif kind == "universal":
                if "rawsocket" in t:
                    _auth(_dict(t["rawsocket"]), f"{tpath}.rawsocket", ep, epath, False, out)
                for key, svc in _dict(t.get("websocket")).items():
                    _auth(_dict(svc), join_path(f"{tpath}.websocket", key), ep, epath, True,
                          out)
                _paths(_dict(_dict(t.get("web")).get("paths")), f"{tpath}.web.paths", ep,
                       epath, out)
    return out
