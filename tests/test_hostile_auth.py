"""Hostile authentication (issue 9 row 8): credential guessing is slowed per address and per
authid, and the answers do not tell which authids exist.

Real nodes, raw WAMP-over-WebSocket (JSON) clients on real sockets. Clients bind distinct
loopback source addresses (127.0.0.x all reach the node on 127.0.0.1), so "another address"
is a real other address, and each test keeps its own addresses and authids (the module's
nodes remember failures). Timing: penalties are configured small where a test measures them
(``auth_throttle``), bounds generous.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import websocket
from autobahn.wamp.auth import compute_wcs, derive_key
from nacl.signing import SigningKey
from support import scaled, wait_for, web_node
from support.wamp import SyncClient, wait_subscribed
from support.ws import RawWamp

from geonode.router.auth.throttle import THROTTLED, AuthThrottle, ThrottleConfig, address_key

pytestmark = pytest.mark.hostile

ALL = {"call": True, "register": True, "publish": True, "subscribe": True}
REALM = {"name": "realm1", "roles": [
    {"name": "anonymous", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]},
    {"name": "user", "permissions": [{"uri": "", "match": "prefix", "allow": ALL}]}]}
TICKETS = {name: {"ticket": f"{name}-secret", "role": "user"}
           for name in ("joe", "ann", "bob", "eve", "dist", "seq", "burst")}
CRA_USERS = {
    "peter": {"secret": "pw-peter", "role": "user", "salt": "9f3c1a7be2d04c55",
              "iterations": 100, "keylen": 32},
    "paul": {"secret": "pw-paul", "role": "user", "salt": "0c1d2e3f4a5b6c7d",
             "iterations": 100, "keylen": 32},
}
KEY = SigningKey(b"k" * 32)
PUB = KEY.verify_key.encode().hex()
INVALID_TICKET = "ticket in static WAMP-Ticket authentication is invalid"

DYNAUTH = '''
from autobahn.wamp.exception import ApplicationError


class DynAuth:
    def __init__(self, config):
        pass

    def on_join(self, session):
        session.register("com.test.authenticate", self.authenticate)

    def authenticate(self, realm, authid, details):
        if details["authmethod"] == "ticket":
            if authid == "dyn" and details.get("ticket") == "dyn-secret":
                return {"role": "user"}
            raise ApplicationError("com.test.bad_login", "wrong ticket or user")
        if authid == "dyn":
            return {"secret": "pw-dyn", "role": "user", "salt": "a1b2c3d4e5f60718",
                    "iterations": 100, "keylen": 32}
        raise ApplicationError("com.test.no_such_user", "no user " + str(authid))
'''


def config(throttle: dict | None = None) -> dict:
    dyn = {"type": "dynamic", "authenticator": "com.test.authenticate"}
    paths = {
        "ticket": {"type": "websocket", "serializers": ["json"],
                   "auth": {"ticket": {"type": "static", "principals": TICKETS}}},
        "cra": {"type": "websocket", "serializers": ["json"],
                "auth": {"wampcra": {"type": "static", "users": CRA_USERS}}},
        "cs": {"type": "websocket", "serializers": ["json"], "auth": {"cryptosign": {
            "type": "static", "principals": {"alice": {"authorized_keys": [PUB],
                                                       "role": "user"}}}}},
        "dyn": {"type": "websocket", "serializers": ["json"],
                "auth": {"ticket": dyn, "wampcra": dyn}},
        "open": {"type": "websocket", "serializers": ["json"]},
    }
    options: dict = {"pythonpath": ["."]}
    if throttle:
        options["auth_throttle"] = throttle
    comps = [{"type": "class", "classname": "dynauth.DynAuth", "realm": "realm1"}]
    return web_node(paths, realms=[REALM], worker_options=options, components=comps)


@pytest.fixture(scope="module")
def node(start_module_node):
    """The defaults: delay 0.1 s doubling to 30 s, 4 in flight per address, 16 per authid."""
    return start_module_node(config(), files={"dynauth.py": DYNAUTH})


@pytest.fixture(scope="module")
def fast_node(start_module_node):
    """Small penalties, to measure the curve quickly."""
    return start_module_node(config({"delay": 0.05, "max_delay": 0.4,
                                     "max_pending_per_address": 4}),
                             files={"dynauth.py": DYNAUTH})


#: how long slow_node holds every failure's answer; "at once" is under half of it
HELD = scaled(2.0)


@pytest.fixture(scope="module")
def slow_node(start_module_node):
    """Every failure held HELD s: "answered at once" and "answered late" are far apart."""
    return start_module_node(config({"delay": HELD, "max_delay": HELD,
                                     "max_pending_per_address": 4,
                                     "max_pending_per_authid": 4}),
                             files={"dynauth.py": DYNAUTH})


# -- a raw WAMP client bound to a source address -----------------------------------------------

class Wamp(RawWamp):
    def __init__(self, port: int, path: str, source: str = "127.0.0.1") -> None:
        super().__init__(port, path, source=source, timeout=15)
        self.sent_at = 0.0

    def send(self, msg: list) -> None:
        self.sent_at = time.monotonic()
        super().send(msg)

    def recv(self) -> list | None:  # type: ignore[override]
        try:
            data = self.ws.recv()
        except (websocket.WebSocketException, OSError):   # closed, or dropped by us
            return None
        return json.loads(data) if data else None

    def hello(self, authmethods: list[str], authid: str | None,  # type: ignore[override]
              authextra: dict | None = None) -> list | None:
        details: dict = {"roles": {"caller": {}}, "authmethods": authmethods}
        if authid is not None:
            details["authid"] = authid
        if authextra:
            details["authextra"] = authextra
        self.send([1, "realm1", details])
        return self.recv()

    def authenticate(self, signature: str) -> list | None:
        self.send([5, signature, {}])
        return self.recv()

    def drop(self) -> None:
        """Hang up without a word (a guesser does not wait for its answers)."""
        self.ws.shutdown()


def ticket_login(port: int, authid: str, ticket: str, source: str,
                 path: str = "ticket") -> tuple[list | None, float]:
    """(the final answer, seconds from AUTHENTICATE to it); a HELLO refusal has 0.0."""
    c = Wamp(port, path, source)
    try:
        ans = c.hello(["ticket"], authid)
        if not ans or ans[0] != 4:
            return ans, 0.0
        ans = c.authenticate(ticket)
        return ans, time.monotonic() - c.sent_at
    finally:
        c.drop()


def abort_of(msg: list | None) -> tuple[str, str]:
    assert msg is not None and msg[0] == 3, msg
    return msg[2], msg[1].get("message", "")


# -- row 8: no listing of authids ---------------------------------------------------------------

def test_unknown_authid_and_wrong_ticket_answer_alike(node):
    """Both are challenged, and both fail with the same ABORT after the same delay (main:
    the unknown authid was refused at HELLO, naming it)."""
    known, t_known = ticket_login(node.port, "joe", "guess", "127.0.0.2")
    unknown, t_unknown = ticket_login(node.port, "mallory", "guess", "127.0.0.3")
    assert abort_of(known) == abort_of(unknown) == ("wamp.error.authentication_failed",
                                                    INVALID_TICKET)
    # first failure of each address and authid: the default delay, 0.1 s, for both
    assert 0.09 <= t_known < scaled(3) and 0.09 <= t_unknown < scaled(3), (t_known, t_unknown)
    assert abs(t_known - t_unknown) < scaled(2.0)


def test_unknown_wampcra_authid_gets_a_realistic_challenge(node):
    """The decoy CHALLENGE of an unknown authid looks like a real salted user's (same
    iterations/keylen, a salt of the same length and alphabet, stable for that authid) and
    fails like a wrong signature."""
    def challenge(authid: str, source: str) -> dict:
        c = Wamp(node.port, "cra", source)
        try:
            ch = c.hello(["wampcra"], authid)
            assert ch and ch[0] == 4 and ch[1] == "wampcra", ch
            return ch[2]
        finally:
            c.drop()

    real, fake = challenge("peter", "127.0.0.4"), challenge("nobody", "127.0.0.4")
    assert (fake["iterations"], fake["keylen"]) == (real["iterations"], real["keylen"])
    assert len(fake["salt"]) == len(real["salt"]) and set(fake["salt"]) <= set("0123456789abcdef")
    assert challenge("nobody", "127.0.0.4")["salt"] == fake["salt"]
    assert json.loads(fake["challenge"])["authrole"] == json.loads(real["challenge"])["authrole"]

    def fail(authid: str, source: str) -> tuple[str, str]:
        c = Wamp(node.port, "cra", source)
        try:
            ch = c.hello(["wampcra"], authid)[2]
            key = derive_key(b"a guess", ch["salt"], ch["iterations"], ch["keylen"])
            return abort_of(c.authenticate(compute_wcs(key, ch["challenge"].encode()).decode()))
        finally:
            c.drop()

    assert fail("peter", "127.0.0.5") == fail("nobody", "127.0.0.6") == (
        "wamp.error.authentication_failed", "WAMP-CRA client signature is invalid")
    # the right secret still works
    c = Wamp(node.port, "cra", "127.0.0.7")
    ch = c.hello(["wampcra"], "paul")[2]
    key = derive_key(b"pw-paul", ch["salt"], ch["iterations"], ch["keylen"])
    assert c.authenticate(compute_wcs(key, ch["challenge"].encode()).decode())[0] == 2
    c.drop()


def test_cryptosign_unknown_authid_and_unknown_key_answer_alike(node):
    other = SigningKey.generate().verify_key.encode().hex()
    answers = []
    for authid, pub, source in (("alice", other, "127.0.0.8"), ("nobody", PUB, "127.0.0.9")):
        c = Wamp(node.port, "cs", source)
        answers.append(abort_of(c.hello(["cryptosign"], authid, {"pubkey": pub})))
        c.drop()
    assert answers[0] == answers[1] == ("wamp.error.not_authorized",
                                        "no principal with that authid and public key")


# -- row 8: guessing is slowed --------------------------------------------------------------

def burst(port: int, source: str, authid: str, n: int) -> tuple[list, list]:
    """``n`` connections from ``source`` challenged, then ``n`` wrong tickets at once; returns
    (clients, their answers in order of arrival) once every attempt has been decided: the
    ones refused unexamined are answered at once, the examined ones are held back."""
    clients = [Wamp(port, "ticket", source) for _ in range(n)]
    for c in clients:
        assert c.hello(["ticket"], authid)[0] == 4
    answers: list = []
    lock = threading.Lock()

    def read(c: Wamp) -> None:
        msg = c.recv()
        if msg is not None:          # None: the test dropped it before its answer came
            with lock:
                answers.append(abort_of(msg))

    readers = [threading.Thread(target=read, args=(c,), daemon=True) for c in clients]
    for th in readers:
        th.start()
    for c in clients:
        c.send([5, "guess", {}])
    return clients, answers


def test_parallel_guesses_from_one_address_are_bounded(node):
    """12 wrong tickets at once from one address: 4 are examined (their answers held back),
    the other 8 refused unexamined; another address logs in at once meanwhile (main: all 12
    examined and answered at once)."""
    clients, answers = burst(node.port, "127.0.0.20", "burst", 12)
    wait_for(lambda: len(answers) == 12, 15, "an answer to each of the 12 guesses")
    examined = [a for a in answers if a[1] == INVALID_TICKET]
    refused = [a for a in answers if a[1] == THROTTLED]
    assert len(examined) == 4 and len(refused) == 8, answers
    # another address is not held back: the right ticket is answered at once
    t0 = time.monotonic()
    ok, _ = ticket_login(node.port, "burst", "burst-secret", "127.0.0.21")
    assert ok[0] == 2 and time.monotonic() - t0 < scaled(3)
    for c in clients:
        c.drop()


def test_an_address_with_failures_in_flight_is_refused_even_the_right_ticket(slow_node):
    """Per address means per address: while its 4 failures wait (2 s), its right ticket is
    refused unexamined too; another address is not."""
    clients, answers = burst(slow_node.port, "127.0.0.22", "bob", 6)
    # the 2 refused unexamined: all decided
    wait_for(lambda: len(answers) == 2, 15, "the 2 refusals")
    assert all(a[1] == THROTTLED for a in answers), answers
    assert abort_of(ticket_login(slow_node.port, "bob", "bob-secret", "127.0.0.22")[0])[1] \
        == THROTTLED
    ok, _ = ticket_login(slow_node.port, "bob", "bob-secret", "127.0.0.23")
    assert ok[0] == 2
    for c in clients:
        c.drop()


def test_sequential_guesses_slow_down_exponentially_up_to_the_cap(fast_node):
    """delay 0.05 s doubling, capped at 0.4 s: 0.05, 0.1, 0.2, 0.4, 0.4 (main: ~1 ms each)."""
    times = [ticket_login(fast_node.port, "seq", "guess", "127.0.0.30")[1] for _ in range(5)]
    for t, want in zip(times, (0.05, 0.1, 0.2, 0.4, 0.4), strict=True):
        assert want * 0.9 <= t < want + scaled(2.5), times
    # a success is never delayed
    ok, t = ticket_login(fast_node.port, "seq", "seq-secret", "127.0.0.31")
    assert ok[0] == 2 and t < scaled(2.5)


def test_a_guesser_that_hangs_up_gains_nothing(fast_node):
    """A guesser that sends its ticket and hangs up at once (it reads failure from the missing
    WELCOME): the answers it does not wait for still hold its address back, so in one second
    only a few guesses are examined (main: hundreds). Counted in the node's log, where each
    examined ticket leaves a line (the guesser cannot tell)."""
    attempts = refused = 0
    deadline = time.monotonic() + 1.0  # the scenario: one second of guessing (not a bound)
    while time.monotonic() < deadline:
        c = Wamp(fast_node.port, "ticket", "127.0.0.32")
        ans = c.hello(["ticket"], "eve")
        attempts += 1
        if ans[0] == 4:
            c.send([5, "guess", {}])
        else:
            assert abort_of(ans)[1] == THROTTLED
            refused += 1
        c.drop()
    examined = sum(1 for line in fast_node.log().splitlines()
                   if "(tcp4:127.0.0.32:" in line and INVALID_TICKET in line)
    # 4 at once, then one each time a held answer (0.05 .. 0.4 s) comes due: ~15
    assert 4 <= examined <= 24 and refused >= 1, (examined, refused, attempts)


def test_distributed_guessing_does_not_slow_the_legitimate_user(slow_node):
    """Many addresses guess one authid: once it has 4 failures in flight, an address with a
    failure of its own in flight is refused unexamined, while the user's own address is
    examined and its right ticket answered at once (the failures wait HELD s)."""
    guessers = [f"127.0.0.{i}" for i in range(40, 48)]
    pending = []
    for src in guessers:                  # one guess each: all examined, answers held back
        c = Wamp(slow_node.port, "ticket", src)
        assert c.hello(["ticket"], "dist")[0] == 4
        c.send([5, "guess", {}])
        pending.append(c)
    # each guesser tries again while its first answer is held: refused unexamined
    for src in guessers[-3:]:
        assert abort_of(ticket_login(slow_node.port, "dist", "guess", src)[0])[1] == THROTTLED
    # the legitimate user, from an address without failures: answered at once
    t0 = time.monotonic()
    ok, _ = ticket_login(slow_node.port, "dist", "dist-secret", "127.0.0.60")
    took = time.monotonic() - t0
    assert ok[0] == 2 and took < HELD * 0.45, took
    # the held failure answers do come, later
    for c in pending:
        assert abort_of(c.recv())[1] == INVALID_TICKET
        assert time.monotonic() - c.sent_at >= HELD * 0.9
        c.drop()


def test_the_hub_serves_others_while_answers_are_held(slow_node):
    """The delay is a timer, not a sleep: while failures wait, other clients are served."""
    held = []
    for _ in range(4):
        c = Wamp(slow_node.port, "ticket", "127.0.0.70")
        c.hello(["ticket"], "ann")
        c.send([5, "guess", {}])
        held.append(c)
    for _ in range(5):
        c = Wamp(slow_node.port, "open", "127.0.0.71")
        t0 = time.monotonic()
        assert c.hello(["anonymous"], None)[0] == 2
        assert time.monotonic() - t0 < HELD * 0.45
        c.drop()
    for c in held:
        c.drop()


def test_dynamic_authenticators_are_throttled_too(fast_node):
    """A dynamic authenticator's refusal is a failure like any other (held back), and a
    dynamic wampcra authenticator's "no such user" becomes a decoy challenge shaped like its
    real answers, so it does not list users either."""
    client = SyncClient(fast_node.port, path="open")
    try:  # the component registers the authenticator after the node starts
        wait_subscribed(client, procedures=("com.test.authenticate",))
    finally:
        client.close()
    ok, _ = ticket_login(fast_node.port, "dyn", "dyn-secret", "127.0.0.80", path="dyn")
    assert ok and ok[0] == 2, ok
    times = [ticket_login(fast_node.port, "dyn", "guess", "127.0.0.81", path="dyn")
             for _ in range(3)]
    for (ans, t), want in zip(times, (0.05, 0.1, 0.2), strict=True):
        reason, message = abort_of(ans)
        assert reason == "wamp.error.authentication_failed" and "com.test.bad_login" in message
        assert want * 0.9 <= t < want + scaled(2.5), times

    def cra_challenge(authid: str) -> dict:
        c = Wamp(fast_node.port, "dyn", "127.0.0.82")
        try:
            ch = c.hello(["wampcra"], authid)
            assert ch[0] == 4, ch
            return ch[2]
        finally:
            c.drop()

    real, fake = cra_challenge("dyn"), cra_challenge("nobody")
    assert (fake["iterations"], fake["keylen"], len(fake["salt"])) == (
        real["iterations"], real["keylen"], len(real["salt"]))
    c = Wamp(fast_node.port, "dyn", "127.0.0.83")
    ch = c.hello(["wampcra"], "nobody")[2]
    key = derive_key(b"pw-dyn", ch["salt"], ch["iterations"], ch["keylen"])
    assert abort_of(c.authenticate(compute_wcs(key, ch["challenge"].encode()).decode())) == (
        "wamp.error.authentication_failed", "WAMP-CRA client signature is invalid")
    c.drop()


# -- the throttle's memory bound (in process) -------------------------------------------------

@pytest.mark.inprocess
def test_throttle_memory_is_bounded():
    t = AuthThrottle(ThrottleConfig(delay=10, max_delay=10, max_addresses=100, max_authids=50,
                                    max_pending_per_address=3, max_pending_per_authid=5))
    for i in range(20000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"user{i % 5000}" * 50)
    assert t.sizes() == (100, 50)
    for _ in range(100):
        t.failed("10.9.9.9", "x")
    assert t.check("10.9.9.9", "y") == THROTTLED
    rec = t._addresses["10.9.9.9"]
    assert len(rec.due) == 3 and rec.failures == 64      # bounded, whatever the flood
    # a fresh address is still examined for that authid
    assert t.check("10.8.8.8", "x") is None


@pytest.mark.inprocess
def test_address_units():
    assert address_key({"peer": "tcp4:192.0.2.7:5555"}) == "192.0.2.7"
    # one host usually has a whole IPv6 /64
    assert address_key({"peer": "tcp6:[2001:db8:1:2:aa::1]:5555"}) == \
        address_key({"peer": "tcp6:[2001:db8:1:2:bb::9]:6666"}) == "2001:db8:1:2::/64"
    assert address_key({"peer": "tcp6:[::ffff:192.0.2.7]:1"}) == "192.0.2.7"
    assert address_key({"peer": "unix"}) == "unix"


def test_concurrent_legitimate_logins_from_one_address_are_not_refused(node):
    """The per-address bound counts failures, not attempts: 10 right tickets at once from
    one address all get WELCOME."""
    results: list = []

    def login() -> None:
        results.append(ticket_login(node.port, "bob", "bob-secret", "127.0.0.90")[0][0])

    threads = [threading.Thread(target=login) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(scaled(30))
    assert results == [2] * 10
