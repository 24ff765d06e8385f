"""Cookie tracking and WAMP cookie authentication (Crossbar's transport ``cookie`` option).

A WebSocket path (or stand-alone websocket transport) with ``cookie`` hands every client
without a known tracking cookie a new one in the 101 response (``Set-Cookie: cbtid=…;
max-age=…``). When a session on that connection joins by another method (ticket, wampcra…),
the cookie remembers who it is (authid, role, realm, method, authextra). The next connection
carrying the cookie, whose HELLO lists ``cookie`` among its authmethods, joins as that
principal at once (WELCOME ``authmethod``: the original method, ``authprovider: "cookie"``, as
Crossbar). GOODBYE ``wamp.close.logout`` forgets the cookie's login and closes the other
connections that carry it.

Stores (``cookie.store``): ``memory`` (gone with the process) or ``file`` (``filename``,
relative to the node's folder): Crossbar's own format, one JSON record per line
(``cbtid``, ``status`` created/modified/deleted, ``created``, ``max_age``, ``authid``,
``authrole``, ``authmethod``, ``authrealm``, ``authextra``), appended on every login and
logout, read back at start (the last record of a cookie wins), so a Crossbar cookie file
carries over. Unlike Crossbar, geonode writes no record for a cookie nobody logged in with
(a connection flood cannot grow the file), rewrites the file without its dead records at start
and whenever they outnumber the live ones, and honours ``max_age`` on the server side too.
Both stores are bounded (``max_cookies``): unauthenticated cookies are forgotten oldest first,
then logins. docs/auth.md has the rest (the cookie value never appears in session details).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autobahn.util import newid
from werkzeug.http import parse_cookie

from geonode.router.auth import Accept, PendingAuth
from geonode.router.errors import CLOSE_LOGOUT

log = logging.getLogger("geonode.router")

DEFAULT_NAME = "cbtid"
DEFAULT_LENGTH = 24
DEFAULT_MAX_AGE = 86400   # Crossbar's documented default (one day)
DEFAULT_MAX_COOKIES = 100_000
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_AUTH_KEYS = ("authid", "authrole", "authmethod", "authrealm", "authextra")


def _utcstr(t: float) -> str:
    """Crossbar's timestamp spelling (autobahn.util.utcstr)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _parse_utc(s: Any) -> float | None:
    try:
        return calendar.timegm(time.strptime(str(s)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


@dataclass
class Login:
    """Who a cookie's sessions join as."""

    authid: str
    authrole: str
    authmethod: str
    authrealm: str
    authextra: dict | None
    created: float
    max_age: int

    def record(self, cbtid: str, status: str) -> dict:
        return {"cbtid": cbtid, "status": status, "created": _utcstr(self.created),
                "modified": _utcstr(time.time()) if status == "modified" else None,
                "deleted": None, "max_age": self.max_age, "authid": self.authid,
                "authrole": self.authrole, "authmethod": self.authmethod,
                "authrealm": self.authrealm, "authextra": self.authextra}


class CookieStore:
    """In memory: issued cookies (value -> created) and logins (value -> Login), bounded."""

    def __init__(self, max_age: int = DEFAULT_MAX_AGE, max_cookies: int = DEFAULT_MAX_COOKIES):
        self.max_age = max_age
        self.max_cookies = max_cookies
        self.issued: OrderedDict[str, float] = OrderedDict()
        self.logins: OrderedDict[str, Login] = OrderedDict()

    def create(self, length: int) -> str:
        cbtid = newid(length)
        self.issued[cbtid] = time.time()
        self._bound()
        return cbtid

    def exists(self, cbtid: str) -> bool:
        now = time.time()
        created = self.issued.get(cbtid)
        if created is not None:
            if now - created < self.max_age:
                return True
            del self.issued[cbtid]
        return self.get_auth(cbtid) is not None

    def get_auth(self, cbtid: str) -> Login | None:
        login = self.logins.get(cbtid)
        if login is not None and time.time() - login.created >= login.max_age:
            self._forget(cbtid, login)
            return None
        return login

    def set_auth(self, cbtid: str, authid: str, authrole: str, authmethod: str,
                 authextra: dict | None, authrealm: str) -> None:
        old = self.logins.get(cbtid)
        created = old.created if old is not None else self.issued.get(cbtid, time.time())
        new = Login(authid, authrole, authmethod, authrealm, authextra, created,
                    old.max_age if old is not None else self.max_age)
        if old == new:
            return
        self.issued.pop(cbtid, None)
        self.logins[cbtid] = new
        self.logins.move_to_end(cbtid)
        self._written(cbtid, new, "modified")
        self._bound()

    def del_auth(self, cbtid: str) -> bool:
        login = self.logins.get(cbtid)
        self.issued.pop(cbtid, None)
        if login is None:
            return False
        self._forget(cbtid, login)
        return True

    def _forget(self, cbtid: str, login: Login) -> None:
        del self.logins[cbtid]
        self._written(cbtid, login, "deleted")

    def _written(self, cbtid: str, login: Login, status: str) -> None:
        """Persist a change (the file store)."""

    def _bound(self) -> None:
        while len(self.issued) + len(self.logins) > self.max_cookies:
            if self.issued:
                self.issued.popitem(last=False)
            else:
                cbtid, login = next(iter(self.logins.items()))
                log.warning("cookie store full (%d cookies): forgetting the oldest login",
                            self.max_cookies)
                self._forget(cbtid, login)


class FileCookieStore(CookieStore):
    """Logins also appended to a file (Crossbar's "file" format), read back at start."""

    def __init__(self, path: Path, max_age: int = DEFAULT_MAX_AGE,
                 max_cookies: int = DEFAULT_MAX_COOKIES):
        super().__init__(max_age, max_cookies)
        self.path = path
        self.dead = 0   # records in the file that no longer count
        self._load()
        self._compact()

    def _load(self) -> None:
        if not self.path.exists():
            return
        bad = 0
        now = time.time()
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    cbtid = rec["cbtid"]
                    if not isinstance(cbtid, str):
                        raise TypeError("cbtid")
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                self.logins.pop(cbtid, None)
                created = _parse_utc(rec.get("created"))
                max_age = rec.get("max_age")
                if (rec.get("deleted") or rec.get("status") == "deleted" or created is None
                        or not isinstance(max_age, int) or now - created >= max_age
                        or not all(isinstance(rec.get(k), str) for k in _AUTH_KEYS[:4])):
                    continue   # logged out, expired, or never logged in
                extra = rec.get("authextra")
                self.logins[cbtid] = Login(rec["authid"], rec["authrole"], rec["authmethod"],
                                           rec["authrealm"],
                                           extra if isinstance(extra, dict) else None,
                                           created, max_age)
        if bad:
            log.warning("cookie store %s: %d unreadable lines skipped", self.path, bad)
        log.info("cookie store %s: %d logins loaded", self.path, len(self.logins))

    def _compact(self) -> None:
        """Rewrite the file with the live logins only (atomically: a crash leaves the old)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for cbtid, login in self.logins.items():
                f.write(json.dumps(login.record(cbtid, "created")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.dead = 0
        self._file = open(self.path, "a", encoding="utf-8")   # noqa: SIM115 (kept open)

    def _written(self, cbtid: str, login: Login, status: str) -> None:
        # flushed, not fsynced per record: survives the node's restart (the point), and a
        # login lost to a machine crash costs one login, not a stalled hub per login
        try:
            self._file.write(json.dumps(login.record(cbtid, status)) + "\n")
            self._file.flush()
        except (OSError, TypeError, ValueError) as e:
            log.error("cookie store %s: cannot write: %s", self.path, e)
            return
        if status != "created":
            self.dead += 1
        if self.dead > max(1000, len(self.logins)):
            self._file.close()
            self._compact()


# One store per file: transports naming the same file share it (two appenders would not).
_FILE_STORES: dict[Path, FileCookieStore] = {}


@dataclass
class CookieTracker:
    """One transport's (or path's) ``cookie`` config: issues and reads its tracking cookie."""

    store: CookieStore
    name: str = DEFAULT_NAME
    length: int = DEFAULT_LENGTH
    max_age: int = DEFAULT_MAX_AGE
    attributes: str = ""
    # live connections per cookie: a logout closes the others
    connections: dict[str, set] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict, config_dir: Path) -> CookieTracker:
        max_age = int(cfg.get("max_age", DEFAULT_MAX_AGE))
        store_cfg = cfg.get("store") or {"type": "memory"}
        max_cookies = int(store_cfg.get("max_cookies", DEFAULT_MAX_COOKIES))
        store: CookieStore
        if store_cfg.get("type") == "file":
            path = (config_dir / store_cfg["filename"]).resolve()
            store = _FILE_STORES.get(path) or FileCookieStore(path, max_age, max_cookies)
            _FILE_STORES[path] = store
        else:
            store = CookieStore(max_age, max_cookies)
        attrs = ""
        if cfg.get("secure") is True:
            attrs += ";Secure"
        if cfg.get("http_strict") is True:
            attrs += ";HttpOnly"
        if cfg.get("same_site"):
            attrs += f";SameSite={cfg['same_site']}"
        return cls(store, cfg.get("name", DEFAULT_NAME), int(cfg.get("length", DEFAULT_LENGTH)),
                   max_age, attrs)

    def parse(self, header: str | None) -> str | None:
        """The tracking cookie's value in a Cookie header, if well-formed."""
        if not header or self.name not in header:
            return None
        value = parse_cookie(header).get(self.name)
        if value is None or len(value) != self.length or not _ALPHABET.issuperset(value):
            return None
        return value

    def track(self, environ: dict) -> tuple[CookieRef, str | None]:
        """The connection's cookie, and the Set-Cookie value when a new one is issued."""
        presented = self.parse(environ.get("HTTP_COOKIE"))
        if presented is not None and self.store.exists(presented):
            return CookieRef(self, presented, presented_unknown=False), None
        if presented is not None:
            # a value we never issued, or that expired: one line, then a fresh cookie
            log.info("cookie %s from %s is unknown or expired: issuing a new one", self.name,
                     environ.get("REMOTE_ADDR", "?"))
        cbtid = self.store.create(self.length)
        header = f"{self.name}={cbtid};max-age={self.max_age}{self.attributes}"
        return CookieRef(self, cbtid, presented_unknown=presented is not None), header

    def redact(self, headers: dict) -> None:
        """Hide the cookie's value in ``http_headers_received`` (session details other sessions
        may read; the value is a login)."""
        value = headers.get("cookie")
        if isinstance(value, str) and self.name in value:
            parts = [p.strip() for p in value.split(";")]
            headers["cookie"] = "; ".join(
                f"{self.name}=(redacted)" if p.split("=", 1)[0].strip() == self.name else p
                for p in parts)


@dataclass(eq=False)
class CookieRef:
    """A connection's tracking cookie (``peer.cookie``): what the session reads and updates."""

    tracker: CookieTracker
    cbtid: str
    presented_unknown: bool = False

    def attach(self, peer: Any) -> None:
        self.tracker.connections.setdefault(self.cbtid, set()).add(peer)

    def detach(self, peer: Any) -> None:
        peers = self.tracker.connections.get(self.cbtid)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.tracker.connections[self.cbtid]

    def login(self) -> Login | None:
        return self.tracker.store.get_auth(self.cbtid)

    def remember(self, realm: str, authid: str, authrole: str, authmethod: str,
                 authextra: dict | None) -> None:
        self.tracker.store.set_auth(self.cbtid, authid, authrole, authmethod, authextra, realm)

    def logout(self, peer: Any) -> int:
        """Forget the login; close the cookie's other connections. Returns how many."""
        self.tracker.store.del_auth(self.cbtid)
        others = [p for p in self.tracker.connections.get(self.cbtid, ()) if p is not peer]
        for p in others:
            session = getattr(p, "session", None)
            if session is not None:
                session.kill(CLOSE_LOGOUT, "logged out on another connection")
        return len(others)

    def anonymous_authid(self) -> str:
        """A stable authid for an anonymous session of this cookie that does not give away the
        cookie (Crossbar uses the cookie's value itself)."""
        return "cookie-" + hashlib.sha256(self.cbtid.encode("ascii")).hexdigest()[:24]


def cookie_of(session: Any) -> CookieRef | None:
    return getattr(session.peer, "cookie", None)


class StaticAuth(PendingAuth):
    """Joins with the login the connection's cookie remembers (there is nothing to configure:
    ``"cookie": {}``, Crossbar's shape)."""

    method = "cookie"
    checks_credentials = False   # the cookie was checked when the connection was accepted

    def usable(self, msg) -> bool:
        ref = cookie_of(self.session)
        login = ref.login() if ref is not None else None
        return login is not None and msg.realm in (None, login.authrealm)

    def hello(self, realm, msg):
        ref = cookie_of(self.session)
        login = ref.login() if ref is not None else None
        assert login is not None   # usable() said so, and nothing ran in between
        return Accept(login.authrealm, login.authid, login.authrole, login.authmethod,
                      "cookie", login.authextra)


DynamicAuth = StaticAuth
