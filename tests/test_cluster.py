"""Two real geonode processes and a real redis-server behave as one router (issue 11).

Every scenario here runs two ``python -m geonode`` nodes joined by ``options.backplane`` to a
``redis-server`` started on a free port, and real autobahn clients on both. A client on node A
learns that node B's change arrived by asking A's meta API (never by sleeping).
``GEONODE_TEST_REDIS_SERVER=/path/to/valkey-server`` runs them against Valkey
(tests/support/redis.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions
from support import Node, launch, scaled
from support.redis import (
    REDIS_SERVER,
    RedisServer,
    cluster_config,
    redis_available,
    tls_available,
)
from support.timing import async_wait_for
from support.wamp import SyncClient, leave, wait_subscribed, ws_session
from support.ws import RawWamp

from geonode.router.errors import POLICY_CONFLICT

pytestmark = pytest.mark.skipif(not redis_available(), reason=f"{REDIS_SERVER} not installed")
needs_tls = pytest.mark.skipif(not tls_available(), reason=f"{REDIS_SERVER} has no TLS")

HISTORY_REALM = {
    "name": "realm1",
    "roles": [{"name": "anonymous", "permissions": [
        {"uri": "", "match": "prefix", "allow": {"call": True, "register": True,
                                                   "publish": True, "subscribe": True},
         "disclose": {"caller": True, "publisher": True}, "cache": True}]}],
    "store": {"type": "memory", "event-history": [{"uri": "com.hist", "match": "exact",
                                                   "limit": 10}]},
}


#: the client side of a TLS cluster's files, in each node's folder
TLS_OPTIONS = {"ca_certificates": ["ca.crt"], "certificate": "client.crt", "key": "client.key"}


class Cluster:
    """A Redis server and the geonode nodes joined by it, stopped at the end: a test names
    only what differs (realms, backplane options, one node's config or files). ``tls``: the
    server speaks TLS only and wants client certificates, every node has the CA and one."""

    def __init__(self, base: Path, tls: bool = False) -> None:
        self.base = base
        self.pki = None
        if tls:
            from support.certs import pki

            self.pki = pki(base / "pki")
        self.redis = RedisServer(base / "redis", tls=self.pki).start()
        self.nodes: list[Node] = []

    def config(self, realms: list | None = None, **backplane) -> dict:
        """A node's config: ``cluster_config`` with HISTORY_REALM unless ``realms``."""
        if self.pki is not None:
            backplane.setdefault("tls", TLS_OPTIONS)
        return cluster_config(self.redis.url,
                              realms=[HISTORY_REALM] if realms is None else realms, **backplane)

    def node(self, name: str, config: dict | None = None, files: dict | None = None,
             env: dict | None = None, **backplane) -> Node:
        """Node ``name`` in its own folder (``config`` or ``self.config(**backplane)``), once
        it is connected to Redis."""
        if self.pki is not None:
            files = {**self.pki.texts(), **(files or {})}
        n = launch(config if config is not None else self.config(**backplane),
                   self.base / name, files=files, env=env)
        self.nodes.append(n)
        n.wait_log("backplane: connected")
        return n

    @staticmethod
    def joined(*nodes: Node) -> None:
        """Each of ``nodes`` has the others' state: it logged them joining."""
        for n in nodes:
            n.wait_log("joined the cluster", timeout=20)

    def pair(self, realms: list | None = None, **backplane) -> tuple[Node, Node]:
        """Nodes a and b with the same config, each knowing the other."""
        a = self.node("a", self.config(realms, **backplane))
        b = self.node("b", self.config(realms, **backplane))
        self.joined(a, b)
        return a, b

    def close(self) -> None:
        for n in self.nodes:
            n.stop()
        self.redis.stop()


@contextlib.contextmanager
def started(base: Path, tls: bool = False):
    c = Cluster(base, tls)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Nodes a and b of one cluster, shared by the tests that leave no state behind."""
    with started(tmp_path_factory.mktemp("cluster")) as c:
        yield c.pair()


@pytest.fixture
def cluster(tmp_path):
    with started(tmp_path) as c:
        yield c


@contextlib.asynccontextmanager
async def clients(*on):
    """A joined session on each of ``on`` (a node, or a ``ws_session(...)`` coroutine for
    other options), left at the end of the block."""
    opened: list = []
    pending = list(on)
    try:
        while pending:
            x = pending.pop(0)
            opened.append(await (x if asyncio.iscoroutine(x) else ws_session(x.port)))
        yield opened
    except BaseException:
        for x in pending:
            if asyncio.iscoroutine(x):
                x.close()
        for session in opened:
            # the failure that got here is the one to report
            with contextlib.suppress(Exception):
                await leave(session, 1.0)
        raise
    for session in opened:
        await leave(session)


def run(main, *on) -> None:
    """``main(*sessions)``, a session on each of ``on`` (as ``clients``), in its own loop."""
    async def go():
        async with clients(*on) as sessions:
            await main(*sessions)
    asyncio.run(go())


async def until(fn, what: str, timeout: float = 10.0):
    """Poll the async ``fn`` until it returns something truthy."""
    async def probe():
        return await fn()
    return await async_wait_for(probe, timeout, what)


async def knows_subscription(session, topic: str, match: str = "exact", count: int = 1):
    async def check():
        sid = await session.call("wamp.subscription.lookup", topic, {"match": match})
        if sid is None:
            return None
        n = await session.call("wamp.subscription.count_subscribers", sid)
        return sid if n >= count else None
    return await until(check, f"a subscription to {topic} with {count} subscribers")


async def knows_callees(session, procedure: str, count: int = 1):
    async def check():
        rid = await session.call("wamp.registration.lookup", procedure)
        if rid is None:
            return None
        n = await session.call("wamp.registration.count_callees", rid)
        return rid if n >= count else None
    return await until(check, f"{count} callees of {procedure}")


def collector():
    """(events, handler): the handler records (args, kwargs, details) of each event."""
    got: list = []

    def handler(*args, **kwargs):
        details = kwargs.pop("details", None)
        got.append((list(args), kwargs, details))
    return got, handler


async def wait_len(items: list, n: int, what: str, timeout: float = 10.0):
    async def check():
        return len(items) >= n
    await async_wait_for(check, timeout, what)


# -- broker --------------------------------------------------------------------------------------

def test_events_reach_other_node_exact_prefix_wildcard_and_disclose(pair):
    a, b = pair

    async def main(pub, sub):
        exact, h1 = collector()
        prefix, h2 = collector()
        wild, h3 = collector()
        await sub.subscribe(h1, "com.ev.one", options=SubscribeOptions(details_arg="details"))
        await sub.subscribe(h2, "com.ev", options=SubscribeOptions(match="prefix",
                                                                   details_arg="details"))
        await sub.subscribe(h3, "com..one", options=SubscribeOptions(match="wildcard",
                                                                     details_arg="details"))
        await knows_subscription(pub, "com..one", "wildcard")
        await knows_subscription(pub, "com.ev", "prefix")
        await knows_subscription(pub, "com.ev.one")
        ack = await pub.publish("com.ev.one", 1, b"\x00\xff", k="ü",
                                options=PublishOptions(acknowledge=True))
        assert ack.id
        for got, what in ((exact, "exact"), (prefix, "prefix"), (wild, "wildcard")):
            await wait_len(got, 1, f"the {what} event")
            args, kwargs, details = got[0]
            assert args == [1, b"\x00\xff"] and kwargs == {"k": "ü"}
            assert details.publisher == pub.details.session   # disclosed across nodes
            assert details.publication == ack.id
        assert prefix[0][2].topic == "com.ev.one" and wild[0][2].topic == "com.ev.one"

    run(main, a, ws_session(b.port, serializer="msgpack"))


def test_exclude_eligible_by_session_authid_authrole_across_nodes(pair):
    a, b = pair

    async def main(pub, local, r1, r2):
        seen: dict = {}
        for name, s in (("local", local), ("r1", r1), ("r2", r2)):
            seen[name] = []
            await s.subscribe(lambda x, _n=name: seen[_n].append(x), "com.flt")
        await knows_subscription(pub, "com.flt", count=3)
        ids = {n: s.details.session for n, s in (("local", local), ("r1", r1), ("r2", r2))}
        opts = PublishOptions(acknowledge=True, exclude=[ids["r1"]])
        await pub.publish("com.flt", 1, options=opts)
        await pub.publish("com.flt", 2, options=PublishOptions(acknowledge=True,
                                                               eligible=[ids["r2"]]))
        await pub.publish("com.flt", 3, options=PublishOptions(acknowledge=True,
                                                               exclude_authrole=["anonymous"]))
        await pub.publish("com.flt", 4, options=PublishOptions(acknowledge=True,
                                                               exclude_me=False))
        # one publisher's events keep their order: 4 arriving means 1-3 were decided
        for n in seen:
            await wait_len(seen[n], 1, f"{n}'s last event")
            await async_wait_for(lambda n=n: _has(seen[n], 4), 10, f"event 4 at {n}")
        assert seen == {"local": [1, 4], "r1": [4], "r2": [1, 2, 4]}

    run(main, a, a, b, b)


async def _has(items, x):
    return x in items


def test_one_publishers_events_keep_their_order_on_the_other_node(pair):
    a, b = pair
    n = 3000

    async def main(pub, sub):
        got: list = []
        await sub.subscribe(got.append, "com.order")
        await knows_subscription(pub, "com.order")
        for i in range(n):
            pub.publish("com.order", i)
        await wait_len(got, n, f"{n} events", timeout=30)
        assert got == list(range(n))

    run(main, a, b)


def test_retained_event_and_history_cluster_wide(pair):
    a, b = pair

    async def main(pub, sub):
        await pub.publish("com.retained.x", "kept", options=PublishOptions(retain=True,
                                                                           acknowledge=True))
        await pub.publish("com.hist", "h1", options=PublishOptions(acknowledge=True))
        await pub.publish("com.hist", "h2", options=PublishOptions(acknowledge=True))

        async def history():
            sid = await sub.call("wamp.subscription.lookup", "com.hist")
            events = await sub.call("wamp.subscription.get_events", sid, 10)
            return events if len(events) >= 2 else None
        events = await until(history, "the other node's history")
        assert [e["args"] for e in events[:2]] == [["h2"], ["h1"]]
        assert events[0]["session_id"] == pub.details.session

        got: list = []

        async def retained_arrived():
            await sub.subscribe(got.append, "com.retained.x",
                                options=SubscribeOptions(get_retained=True))
            await asyncio.sleep(0)   # the event follows SUBSCRIBED on one connection
            return True
        await retained_arrived()
        await wait_len(got, 1, "the retained event from the other node")
        assert got == ["kept"]

    run(main, a, b)


# -- dealer --------------------------------------------------------------------------------------

def test_remote_call_single_conflict_and_caller_disclosure(pair):
    a, b = pair

    async def main(caller, callee, other):
        def echo(x, details=None):
            return {"x": x, "caller": details.caller}
        await callee.register(echo, "com.remote.echo",
                              options=RegisterOptions(details_arg="details"))
        await knows_callees(caller, "com.remote.echo")
        res = await caller.call("com.remote.echo", 7)
        assert res == {"x": 7, "caller": caller.details.session}
        with pytest.raises(ApplicationError) as e:
            await other.register(lambda: 0, "com.remote.echo")
        assert e.value.error == "wamp.error.procedure_already_exists"

    run(main, a, b, a)


def test_payload_passthrough_call_and_result_across_nodes(pair):
    """A call in payload passthrough mode (E2E encryption) whose callee is on the other node:
    the opaque payloads and their enc_* fields reach the callee and the caller unchanged
    (the RESULT crosses the backplane as its fields, not as a RESULT to parse)."""
    a, b = pair
    callee, caller = RawWamp(b.port), RawWamp(a.port)
    try:
        assert callee.hello()[0] == 2 and caller.hello()[0] == 2
        callee.send([64, callee.next_request(), {}, "com.ppt.echo"])
        assert callee.recv()[0] == 65
        admin = SyncClient(a.port)
        try:
            wait_subscribed(admin, procedures=("com.ppt.echo",))
        finally:
            admin.close()
        enc = {"enc_algo": "cryptobox", "enc_key": "k1", "enc_serializer": "json"}
        caller.send([48, 7, dict(enc), "com.ppt.echo", "\u0000AQJvcGFxdWU="])
        inv = callee.recv()
        assert inv[0] == 68 and inv[4] == "\u0000AQJvcGFxdWU="
        assert {k: inv[3].get(k) for k in enc} == enc
        callee.send([70, inv[1], {"enc_algo": "cryptobox", "enc_key": "k2",
                                  "enc_serializer": "json"}, "\u0000/wA="])
        res = caller.recv()
        assert res[:2] == [50, 7] and res[3] == "\u0000/wA="
        assert (res[2]["enc_algo"], res[2]["enc_key"]) == ("cryptobox", "k2")
    finally:
        callee.close()
        caller.close()


def test_shared_roundrobin_picks_callees_on_both_nodes(pair):
    a, b = pair

    async def main(caller, ca, cb):
        opts = RegisterOptions(invoke="roundrobin")
        await ca.register(lambda: "a", "com.rr", options=opts)
        await cb.register(lambda: "b", "com.rr", options=opts)
        await knows_callees(caller, "com.rr", 2)
        answers = [await caller.call("com.rr") for _ in range(6)]
        assert sorted(answers) == ["a"] * 3 + ["b"] * 3
        assert answers[0] != answers[1]
        with pytest.raises(ApplicationError) as e:
            await caller.register(lambda: 0, "com.rr", options=RegisterOptions(invoke="random"))
        assert e.value.error == POLICY_CONFLICT   # the other node's callee counts

    run(main, a, a, b)


def test_progressive_results_timeout_cancel_and_concurrency_across_nodes(pair):
    a, b = pair

    async def main(caller, callee):
        release = asyncio.Event()

        async def progressive(n, details=None):
            for i in range(n):
                details.progress(i)
            return "done"

        async def slow():
            await release.wait()
            return "late"
        await callee.register(progressive, "com.prog",
                              options=RegisterOptions(details_arg="details"))
        await callee.register(slow, "com.slow", options=RegisterOptions(concurrency=1))
        await knows_callees(caller, "com.prog")
        await knows_callees(caller, "com.slow")
        progress: list = []
        res = await caller.call("com.prog", 3, options=CallOptions(on_progress=progress.append))
        assert res == "done" and progress == [0, 1, 2]

        with pytest.raises(ApplicationError) as e:
            await caller.call("com.slow", options=CallOptions(timeout=300))  # ms
        assert e.value.error == "wamp.error.timeout"

        pending = asyncio.ensure_future(caller.call("com.slow"))
        # the callee's node enforces its concurrency: a second call meanwhile is refused
        async def refused():
            try:
                await caller.call("com.slow")
            except ApplicationError as err:
                return err.error
            return None
        err = await until(refused, "max_concurrency refusal")
        assert err == "crossbar.error.max_concurrency_reached"
        pending.cancel()   # autobahn sends CANCEL (killnowait)
        with pytest.raises(asyncio.CancelledError):
            await pending
        release.set()

    run(main, a, b)


# -- meta API ------------------------------------------------------------------------------------

def test_meta_api_answers_for_the_whole_cluster(pair):
    a, b = pair

    async def main(admin, remote_probe):
        joins: list = []
        leaves: list = []
        await admin.subscribe(lambda d: joins.append(d["session"]), "wamp.session.on_join")
        await admin.subscribe(leaves.append, "wamp.session.on_leave")
        await admin.subscribe(lambda: None, "com.meta.sync")
        # node a's changes reach b in order: b knowing the last one knows the meta ones
        await knows_subscription(remote_probe, "com.meta.sync")
        remote = await ws_session(b.port)
        await async_wait_for(lambda: _has(joins, remote.details.session), 10,
                             "on_join from the other node")
        ids = await admin.call("wamp.session.list")
        assert remote.details.session in ids and admin.details.session in ids
        assert await admin.call("wamp.session.count") >= 3
        d = await admin.call("wamp.session.get", remote.details.session)
        assert d["session"] == remote.details.session and d["realm"] == "realm1"
        await remote.register(lambda: 1, "com.meta.proc")
        await remote.subscribe(lambda: 1, "com.meta.topic")
        rid = await knows_callees(admin, "com.meta.proc")
        assert await admin.call("wamp.registration.list_callees", rid) == [remote.details.session]
        assert (await admin.call("wamp.registration.get", rid))["uri"] == "com.meta.proc"
        sid = await knows_subscription(admin, "com.meta.topic")
        assert await admin.call("wamp.subscription.list_subscribers", sid) == [
            remote.details.session]
        regs = await admin.call("wamp.registration.list", remote.details.session)
        assert regs["exact"] == [rid]
        # the same IDs on both nodes
        assert await remote.call("wamp.registration.lookup", "com.meta.proc") == rid
        await admin.call("wamp.session.kill", remote.details.session)
        details = await asyncio.wait_for(remote.left, scaled(10))
        assert details.reason == "wamp.close.killed"
        await wait_len(leaves, 1, "on_leave of the killed session")
        assert remote.details.session in leaves

    run(main, a, b)


# -- TLS -----------------------------------------------------------------------------------------

@needs_tls
def test_rediss_with_a_ca_and_client_certificate_is_one_router(tmp_path):
    """A Redis that speaks TLS only (no plain port) and wants client certificates: two nodes
    with ``rediss://`` and ``options.backplane.tls`` (the CA, a client certificate and key,
    files relative to their config) are one router."""
    with started(tmp_path, tls=True) as cluster:
        assert cluster.redis.url.startswith("rediss://")
        a, b = cluster.pair()

        async def main(pub, sub, caller):
            got: list = []
            await sub.subscribe(got.append, "com.tls")
            await sub.register(lambda x: x * 2, "com.tls.double")
            await knows_subscription(pub, "com.tls")
            await pub.publish("com.tls", "over TLS", options=PublishOptions(acknowledge=True))
            await wait_len(got, 1, "the event through the TLS Redis")
            assert got == ["over TLS"]
            await knows_callees(caller, "com.tls.double")
            assert await caller.call("com.tls.double", 21) == 42

        run(main, a, b, a)


# -- faults --------------------------------------------------------------------------------------

def test_kill_9_of_a_node_is_noticed_calls_fail_testaments_published(cluster):
    a, b = cluster.pair()

    async def main(watcher, victim):
        leaves: list = []
        wills: list = []
        await watcher.subscribe(leaves.append, "wamp.session.on_leave")
        await watcher.subscribe(wills.append, "com.will")
        await victim.call("wamp.session.add_testament", "com.will", ["gone"], {})
        release = asyncio.Event()

        async def hang():
            await release.wait()
        await victim.register(hang, "com.hang")
        await knows_callees(watcher, "com.hang")
        waiting = asyncio.ensure_future(watcher.call("com.hang"))
        await asyncio.sleep(0.2)   # let the call reach the callee before the crash
        b.proc.kill()              # kill -9
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ApplicationError) as e:
            await asyncio.wait_for(waiting, scaled(15))
        assert e.value.error == "wamp.error.canceled"
        await wait_len(wills, 1, "the dead node's testament", timeout=15)
        assert wills == ["gone"]
        await wait_len(leaves, 1, "on_leave of the dead node's session", timeout=15)
        assert leaves == [victim.details.session]
        assert asyncio.get_running_loop().time() - t0 < scaled(10)
        assert await watcher.call("wamp.session.count") == 1
        assert await watcher.call("wamp.registration.lookup", "com.hang") is None

    run(main, a, b)
    a.wait_log("forgetting its")


def test_redis_down_local_traffic_goes_on_then_resumes(cluster):
    a, b = cluster.pair()

    async def main(pa, sa, sb):
        local: list = []
        remote: list = []
        await sa.subscribe(local.append, "com.out")
        await sb.subscribe(remote.append, "com.out")
        await sa.register(lambda: "local", "com.local")
        await sb.register(lambda: "remote", "com.remote")
        await knows_subscription(pa, "com.out", count=2)
        await knows_callees(pa, "com.remote")
        cluster.redis.stop()
        a.wait_log("backplane: lost", timeout=10)
        # local traffic: RPC and events on the node itself
        assert await pa.call("com.local") == "local"
        # an acknowledged publish cannot claim the other node got it: ERROR, local delivery
        with pytest.raises(ApplicationError) as e:
            await pa.publish("com.out", 1, options=PublishOptions(acknowledge=True))
        assert e.value.error == "wamp.error.unavailable"
        await wait_len(local, 1, "the local event during the outage")
        with pytest.raises(ApplicationError) as e:
            await pa.call("com.remote")
        assert e.value.error == "wamp.error.unavailable"
        # Redis back, empty: the nodes re-announce, cross-node traffic resumes
        cluster.redis.start()
        t0 = asyncio.get_running_loop().time()

        async def remote_call():
            try:
                return await pa.call("com.remote")
            except ApplicationError:
                return None
        assert await until(remote_call, "the remote call after Redis came back") == "remote"
        await pa.publish("com.out", 2, options=PublishOptions(acknowledge=True))
        await async_wait_for(lambda: _has(remote, 2), 10, "event after the outage")
        assert asyncio.get_running_loop().time() - t0 < scaled(10)
        assert 1 not in remote    # at most once: the outage's event is lost, not replayed

    run(main, a, a, b)
    assert a.log().count("backplane: lost") == 1   # one line, not one per retry


def test_single_registrations_made_during_a_partition_older_wins(cluster):
    a, b = cluster.pair()

    async def main(ca, cb):
        cluster.redis.stop()
        a.wait_log("backplane: lost", timeout=10)
        b.wait_log("backplane: lost", timeout=10)
        await ca.register(lambda: "a", "com.split")       # older
        await asyncio.sleep(0.05)   # a later clock reading for b's registration
        await cb.register(lambda: "b", "com.split")
        cluster.redis.start()

        async def settled():
            ra = await ca.call("wamp.registration.lookup", "com.split")
            if ra is None:
                return None
            n = await cb.call("wamp.registration.count_callees", ra)
            return n == 1 and await cb.call("com.split") == "a"
        await until(settled, "node b taking node a's older registration", timeout=15)
        assert await ca.call("com.split") == "a"

    run(main, a, b)
    b.wait_log("registered on node")


@pytest.mark.parametrize("kind", ["refused", "password", "not-redis",
                                  pytest.param("tls-wrong-ca", marks=needs_tls)])
def test_bad_backplane_url_one_line_local_traffic_works(tmp_path, kind):
    import socket
    import threading

    server = None
    r: RedisServer | None = None
    backplane: dict = {}
    files: dict | None = None
    if kind == "refused":
        from support import free_port
        url = f"redis://127.0.0.1:{free_port()}/0"
    elif kind == "password":
        r = RedisServer(tmp_path / "redis", password="right").start()
        url = f"redis://:wrong@127.0.0.1:{r.port}/0"
    elif kind == "tls-wrong-ca":
        # a TLS Redis whose certificate is signed by a CA the node was not given
        from support.certs import pki

        tls = pki(tmp_path / "pki")
        r = RedisServer(tmp_path / "redis", tls=tls).start()
        url = r.url
        backplane = {"tls": dict(TLS_OPTIONS, ca_certificates=["other-ca.crt"])}
        files = tls.texts()
    else:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def answer():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.close()
        threading.Thread(target=answer, daemon=True).start()
        url = f"redis://127.0.0.1:{port}/0"
    node = launch(cluster_config(url, **backplane), tmp_path / "node", files=files)
    try:
        log = node.wait_log("options.backplane.url")
        line = next(ln for ln in log.splitlines() if "options.backplane.url" in ln)
        assert "serving local clients only" in line
        assert "wrong" not in line   # no password in logs
        if kind == "tls-wrong-ca":
            assert "certificate verify failed" in line
            assert "workers[0].options.backplane.tls.ca_certificates" in line

        async def main(s1, s2):
            await s1.register(lambda: "ok", "com.local")
            assert await s2.call("com.local") == "ok"
        run(main, node, node)
        assert "Traceback" not in node.log()
        assert node.log().count("options.backplane.url") == 1
    finally:
        node.stop()
        if r is not None:
            r.stop()
        if server is not None:
            server.close()


# -- config and bounds ---------------------------------------------------------------------------

STUCK_REDIS_CHILD = """
from gevent import monkey; monkey.patch_all()
import json, os, signal, sys, gevent, gevent.event
from geonode.cluster.link import RedisLink
from geonode.config.backplane import BackplaneConfig
port, pid, deadline = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
up, down, got, lost = gevent.event.Event(), gevent.event.Event(), gevent.event.Event(), []
cfg = BackplaneConfig.from_options({"type": "redis", "url": f"redis://127.0.0.1:{port}/0"})
link = RedisLink(cfg, "n1", lambda sender, msgs: got.set(), up.set, down.set)
link.start()
out = {"up": up.wait(deadline)}
os.kill(pid, signal.SIGSTOP)
try:
    out["sent"] = link.send(link.channel_of("n2"), ("P", 1), lambda: lost.append(1))
    out["watching"] = link._watching   # the reply is awaited by the hub's watcher
    up.clear()
    link.reset("test: Redis stopped answering")   # what the heartbeats do
    out["down"] = down.wait(deadline)
    out["lost"] = lost
finally:
    os.kill(pid, signal.SIGCONT)
out["up_again"] = up.wait(deadline)
got.clear()
link.send(link.inbox, ("H",))
out["works"] = got.wait(deadline)
link.stop()
print(json.dumps(out))
"""


def test_a_redis_that_stops_answering_loses_the_write_and_the_link_comes_back(tmp_path):
    """A PUBLISH whose reply never comes (redis-server SIGSTOPped) while its reply is awaited
    by the hub's io watcher: the heartbeats' reset ends the wait, the write is reported lost
    (a call would get ERROR), and after SIGCONT the link reconnects and carries messages."""
    import json
    import os
    import subprocess
    import sys

    r = RedisServer(tmp_path / "redis").start()
    try:
        assert r.proc is not None
        out = subprocess.run(
            [sys.executable, "-c", STUCK_REDIS_CHILD, str(r.port), str(r.proc.pid),
             str(scaled(20))], capture_output=True, text=True, timeout=scaled(120),
            env=dict(os.environ))
    finally:
        r.stop()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "up": True, "sent": True, "watching": True, "down": True, "lost": [1],
        "up_again": True, "works": True}, out.stderr


@pytest.mark.inprocess
def test_queue_toward_redis_is_bounded():
    from geonode.cluster.link import RedisLink
    from geonode.config.backplane import BackplaneConfig

    lost: list = []
    link = RedisLink(BackplaneConfig(url="redis://127.0.0.1:1/0", max_queue=100),
                     "n1", lambda *a: None, lambda: None, lambda: None)
    assert link.send(link.all_channel, ("H",)) is False    # down: refused, not queued
    link.up = True
    sent = [link.send(link.channel_of("n2"), ("P", "x" * 1000), lambda: lost.append(1))
            for _ in range(1000)]
    assert sent.count(True) == 100 and link.dropped == 900
    big = BackplaneConfig(url="redis://127.0.0.1:1/0", max_queue_bytes=65536)
    link = RedisLink(big, "n1", lambda *a: None, lambda: None, lambda: None)
    link.up = True
    sent = [link.send(link.all_channel, ("P", "x" * 10_000)) for _ in range(100)]
    assert sent.count(True) == 7   # 65,536 bytes hold 7 such messages
    # a payload msgpack cannot carry is refused, the queue unchanged
    assert link.send(link.all_channel, ("P", object())) is False


def test_a_direct_write_never_waits_even_when_the_socket_takes_part_of_it():
    """A lone message is written by ``send`` itself, also from a hub callback (the
    subscriber's reader applies a call's messages there, and their answers are sent from
    it). When the socket takes only part of it, the writer greenlet sends the rest and reads
    Redis's reply: the caller never waits, and "Redis" gets each PUBLISH whole, in order."""
    import socket

    import gevent
    import gevent.socket
    import hiredis

    from geonode.cluster.link import DIRECT_BYTES, RedisLink, unpack_publish
    from geonode.config.backplane import BackplaneConfig

    link = RedisLink(BackplaneConfig(url="redis://127.0.0.1:1/0"), "n1", lambda *a: None,
                     lambda: None, lambda: None)
    ours, theirs = gevent.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    link._pub_sock, link._pub_raw, link._pub_reader = ours, ours._sock, hiredis.Reader()
    link._reply_watch = gevent.get_hub().loop.io(ours.fileno(), 1)
    link.up = True
    writer = None
    try:
        sent: list = []
        big = ("P", "x" * (DIRECT_BYTES - 100))
        gevent.get_hub().loop.run_callback(
            lambda: sent.append(link.send(link.channel_of("n2"), big)))
        with gevent.Timeout(scaled(5)):
            while not sent:
                gevent.sleep(0.001)
        assert sent == [True] and link._rest   # sent from the hub, in part
        writer = gevent.spawn(link._writer)   # (started now: it takes the rest at once)
        assert link.send(link.channel_of("n2"), ("P", "second"))   # queued behind it
        reader, commands = hiredis.Reader(), []
        with gevent.Timeout(scaled(10)):
            while len(commands) < 2:
                reader.feed(theirs.recv(65536))
                while (command := reader.gets()) is not False:
                    commands.append(command)
                    theirs.sendall(b":1\r\n")   # one receiver
            while link._inflight or link._queue or link._busy:
                gevent.sleep(0.001)
        assert [c[:2] for c in commands] == [[b"PUBLISH", b"geonode:n:n2"]] * 2
        assert [unpack_publish(c[2]) for c in commands] == [["n1", list(big)],
                                                            ["n1", ["P", "second"]]]
        assert link.sent_batches == 2 and not link._rest
    finally:
        if writer is not None:
            writer.kill()
        link._reply_watch.close()
        ours.close()
        theirs.close()


@pytest.mark.parametrize("backplane, expected", [
    ({"type": "redis"}, "workers[0].options.backplane.url: 'url' is required"),
    ({"type": "redis", "url": "http://x"}, "workers[0].options.backplane.url"),
    ({"type": "redis", "url": "redis://h", "heartbeat": 2, "timeout": 3},
     "workers[0].options.backplane.timeout: 3 is less than two heartbeats"),
    ({"type": "redis", "url": "redis://h:notaport/0"}, "workers[0].options.backplane.url"),
    ({"type": "kafka", "url": "redis://h"}, "workers[0].options.backplane.type"),
    ({"type": "redis", "url": "rediss://h", "tls": {"ca_certificates": ["nothere.crt"]}},
     "workers[0].options.backplane.tls.ca_certificates[0]: certificate file 'nothere.crt' "
     "not found"),
    ({"type": "redis", "url": "rediss://h", "tls": {"ca_certificates": "ca.crt"}},
     "workers[0].options.backplane.tls.ca_certificates"),
    ({"type": "redis", "url": "redis://h", "tls": {}},
     "workers[0].options.backplane.tls: TLS needs a rediss:// url"),
    ({"type": "redis", "url": "rediss://h", "tls": {"cafile": "ca.crt"}},
     "workers[0].options.backplane.tls.cafile"),
    ({"type": "redis", "url": "rediss://h/0?ssl_ca_certs=nothere.crt"},
     "workers[0].options.backplane.url: ssl_ca_certs: file 'nothere.crt' not found"),
    ({"type": "redis", "url": "rediss://h/0?ssl_cert_reqs=always"},
     "workers[0].options.backplane.url: ssl_cert_reqs: 'always'"),
])
def test_check_names_the_backplane_key(tmp_path, backplane, expected):
    r = check_backplane(tmp_path, backplane)
    assert r.returncode == 1, r.stdout
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def check_backplane(folder: Path, backplane: dict, *args: str, files: dict | None = None,
                    env: dict | None = None, port: int = 8080):
    """``geonode ARGS`` (default: ``check``) of a node with ``options.backplane`` in
    ``folder``."""
    import json
    import os
    import subprocess

    from support import geonode_cmd
    from support.nodes import write_files

    cfg = cluster_config("redis://127.0.0.1:1/0")
    cfg["workers"][0]["options"]["backplane"] = backplane
    cfg["workers"][0]["transports"][0]["endpoint"]["port"] = port
    write_files(folder, files)
    p = folder / "node.json"
    p.write_text(json.dumps(cfg))
    return subprocess.run(geonode_cmd(*(args or ("check",)), str(p)), capture_output=True,
                          text=True, timeout=scaled(30), cwd=folder,
                          env=dict(os.environ, **(env or {})))


def test_check_accepts_a_backplane_from_the_environment(tmp_path):
    r = check_backplane(tmp_path, {"type": "redis", "url": "${REDIS_URL}"},
                        env={"REDIS_URL": "rediss://:secret@127.0.0.1:6380/2"})
    assert r.returncode == 0, r.stderr


def test_check_and_start_agree_on_the_backplane_tls_files(tmp_path):
    """A CA file that is missing or not a certificate, a key without its certificate: the
    key's JSON path from ``check`` and the same lines from ``start``, which listens on
    nothing; the files a TLS cluster uses pass."""
    from support import free_port, port_open
    from support.certs import pki

    tls = pki(tmp_path / "pki")
    good = {"type": "redis", "url": "rediss://127.0.0.1:1/0",
            "tls": {"ca_certificates": ["ca.crt"], "certificate": "client.crt",
                    "key": "client.key"}}
    r = check_backplane(tmp_path / "good", good, files=tls.texts())
    assert r.returncode == 0, r.stderr
    bad = {"type": "redis", "url": "rediss://127.0.0.1:1/0",
           "tls": {"ca_certificates": ["ca.crt", "nothere.crt", "notpem.crt"],
                   "key": "client.key"}}
    files = dict(tls.texts(), **{"notpem.crt": "not a certificate\n"})
    expected = [
        "workers[0].options.backplane.tls.ca_certificates[1]: certificate file 'nothere.crt' "
        "not found",
        "workers[0].options.backplane.tls.certificate: required with "
        "workers[0].options.backplane.tls.key",
    ]
    port = free_port()
    checked = check_backplane(tmp_path / "bad", bad, files=files)
    started = check_backplane(tmp_path / "bad", bad, "start", port=port)
    for r in (checked, started):
        assert r.returncode == 1, r.stdout
        assert "Traceback" not in r.stderr
        for line in expected:
            assert line in r.stderr
    assert not port_open(port)
    # every file there: the one that is not PEM is named
    bad["tls"]["ca_certificates"] = ["ca.crt", "notpem.crt"]
    bad["tls"]["certificate"] = "client.crt"
    for args in (("check",), ("start",)):
        r = check_backplane(tmp_path / "bad", bad, *args, port=port)
        assert r.returncode == 1, r.stdout
        assert ("workers[0].options.backplane.tls.ca_certificates[1]: 'notpem.crt' is not a "
                "PEM certificate") in r.stderr


# -- the sample: components and the HTTP bridge of two nodes ---------------------------------------

def test_cluster_sample_bridge_and_components_span_both_nodes(cluster):
    import json
    import shutil

    import requests
    from support import SAMPLES

    def sample(name: str) -> Node:
        work = cluster.base / f"sample-{name}"
        shutil.copytree(SAMPLES / "cluster", work, ignore=shutil.ignore_patterns("__pycache__"))
        cfg = json.loads((work / f"node-{name}.json").read_text())
        cfg["workers"][0]["transports"][0]["endpoint"]["port"] = "$PORT"
        return cluster.node(work.name, cfg, env={"REDIS_URL": cluster.redis.url})
    a, b = sample("a"), sample("b")
    cluster.joined(a, b)

    def call(node):
        r = requests.post(node.url + "/call", json={"procedure": "com.example.where"},
                          timeout=scaled(10))
        assert r.status_code == 200, r.text
        return r.json()["args"][0]

    def both_callees():
        return {call(a)["node"] for _ in range(4)} == {"a", "b"}
    from support import wait_for
    wait_for(both_callees, 15, "calls through node a's bridge reaching both nodes")
    r = requests.post(b.url + "/publish", json={"topic": "com.example.news", "args": ["hi"]},
                      timeout=scaled(10))
    assert r.status_code == 200
    wait_for(lambda: {call(b)["events_seen"] for _ in range(4)} == {1}, 15,
             "the event published on b seen by both nodes' components")


AUTHZ_COMPONENT = '''
class Authz:
    def __init__(self, config):
        pass

    def on_join(self, session):
        session.register("com.authz", self.authorize)

    def authorize(self, details, uri, action, options):
        return uri.startswith("com.ok")
'''


def test_dynamic_authorizer_on_one_node_serves_clients_of_the_other(cluster):
    realm_cfg = {"name": "realm1", "roles": [
        {"name": "anonymous", "authorizer": "com.authz"},
        {"name": "backend", "permissions": [
            {"uri": "com.authz", "match": "exact",
             "allow": {"call": False, "register": True, "publish": False,
                       "subscribe": False}}]}]}
    def config(with_authorizer: bool) -> dict:
        cfg = cluster.config([realm_cfg])
        worker = cfg["workers"][0]
        worker["options"]["pythonpath"] = ["."]
        if with_authorizer:
            worker["components"] = [{"type": "class", "classname": "authz.Authz",
                                     "realm": "realm1", "role": "backend"}]
        return cfg
    files = {"authz.py": AUTHZ_COMPONENT}
    a = cluster.node("a", config(False), files)
    cluster.joined(a, cluster.node("b", config(True), files))

    async def main(client):
        async def allowed():
            try:
                await client.subscribe(lambda: None, "com.ok.topic")
                return True
            except ApplicationError:
                return False   # node a has not heard of node b's authorizer yet
        await until(allowed, "the authorizer on node b allowing a subscription on node a")
        with pytest.raises(ApplicationError) as e:
            await client.subscribe(lambda: None, "com.secret")
        assert e.value.error == "wamp.error.not_authorized"

    run(main, a)


def test_pattern_callee_on_another_node_gets_only_what_its_role_may_register(cluster):
    allow = {"call": True, "register": True, "publish": True, "subscribe": True}
    realm_cfg = {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
        {"uri": "", "match": "prefix", "allow": dict(allow, register=False)},
        {"uri": "com.pat.", "match": "prefix", "allow": allow},
        {"uri": "com.pat.secret", "match": "exact", "allow": dict(allow, register=False)}]}]}
    a, b = cluster.pair([realm_cfg])

    async def main(caller, callee):
        await callee.register(lambda: "pattern", "com.pat.",
                              options=RegisterOptions(match="prefix"))
        await knows_callees_match(caller, "com.pat.ok")
        assert await caller.call("com.pat.ok") == "pattern"
        with pytest.raises(ApplicationError) as e:
            await caller.call("com.pat.secret")
        assert e.value.error == "wamp.error.no_such_procedure"

    run(main, a, b)


async def knows_callees_match(session, procedure: str):
    async def check():
        return await session.call("wamp.registration.match", procedure)
    return await until(check, f"a registration matching {procedure}")


def test_meta_revocations_and_kills_reach_the_other_node(pair):
    a, b = pair

    async def main(admin, callee, subscriber):
        reg = await callee.register(lambda: 1, "com.revoke.proc")
        sub = await subscriber.subscribe(lambda: 1, "com.revoke.topic")
        rid = await knows_callees(admin, "com.revoke.proc")
        sid = await knows_subscription(admin, "com.revoke.topic")
        await admin.call("wamp.registration.remove_callee", rid, callee.details.session)

        async def gone():
            return await admin.call("wamp.registration.lookup", "com.revoke.proc") is None
        await until(gone, "the revocation done by node b")
        with pytest.raises(ApplicationError) as e:
            await admin.call("com.revoke.proc")
        assert e.value.error == "wamp.error.no_such_procedure" and reg
        # (autobahn-python announces subscription_revocation but fails on the UNSUBSCRIBED
        # that carries it; the revocation itself goes the same way as the registration's)
        assert sub.active and sid
        # kill by authrole: every anonymous session but the caller, on both nodes
        killed = await admin.call("wamp.session.kill_by_authrole", "anonymous")
        assert {callee.details.session, subscriber.details.session} <= set(killed)
        for s in (callee, subscriber):
            details = await asyncio.wait_for(s.left, scaled(10))
            assert details.reason == "wamp.close.killed"

    run(main, a, b, b)


def test_bad_payloads_on_the_backplane_channels_end_nothing(cluster):
    """Whatever another Redis client publishes on the cluster's channels (truncated,
    over-long, not msgpack, the old stream format): each is logged and dropped, the link
    stays up and cross-node calls go on."""
    import msgpack
    import redis

    a, b = cluster.pair()
    r = redis.Redis.from_url(cluster.redis.url)
    try:
        channels = [c.decode() for c in r.pubsub_channels("geonode:n:*")]
        assert len(channels) == 2
        good = msgpack.packb(["0123456789abcdef", ["H"]])
        bad = [b"", b"\xc1", good[:-2], good + b"\x01", b"\x90", msgpack.packb("not an array"),
               msgpack.packb("0123456789abcdef") + msgpack.packb(["H"]),
               # well-formed PUBLISHes of messages that are not: kinds that are no strings
               msgpack.packb(["0123456789abcdef", [[1], 2]]),
               msgpack.packb(["0123456789abcdef", [{"k": 1}]]),
               msgpack.packb(["0123456789abcdef", 7]), msgpack.packb(["0123456789abcdef", []])]
        for channel in [*channels, "geonode:all"]:
            for payload in bad:
                assert r.publish(channel, payload) >= 1
    finally:
        r.close()
    from support.timing import wait_for

    for n in (a, b):   # each node: its inbox's and the broadcast channel's
        wait_for(lambda n=n: n.log().count("could not handle a message from Redis")
                 >= 2 * len(bad), scaled(10), "every bad payload logged")

    async def main(caller, callee):
        await callee.register(lambda x: x * 2, "com.bad.double")
        await knows_callees(caller, "com.bad.double")
        assert await caller.call("com.bad.double", 21) == 42

    run(main, a, b)
    assert "backplane: lost" not in a.log() + b.log()
    assert "our own heartbeats stopped" not in a.log() + b.log()


def test_an_invocation_crosses_as_its_fields_and_a_bad_one_is_dropped(cluster):
    """Another node's call reaches node B as the INVOCATION's fields (no marshalled
    INVOCATION to parse): B's callee gets args, kwargs, the caller's disclosure and the
    request for progressive results, and its answers (progressive, then final) go back to
    the calling node's inbox; INVOCATIONs of the wrong shape or types (the old marshalled
    form among them) are logged and dropped, the callee gets none of them, the link stays."""
    import re
    import time

    import msgpack
    import redis

    a, b = cluster.pair()
    b_id = re.search(r"backplane: connected to \S+ as node (\w+)", b.log()).group(1)
    me = "f" * 16   # a node of our own: its inbox gets B's answers
    r = redis.Redis.from_url(cluster.redis.url)
    inbox = r.pubsub(ignore_subscribe_messages=True)
    callee = RawWamp(b.port)
    try:
        inbox.subscribe(f"geonode:n:{me}")
        sid = callee.hello(roles={"callee": {"features": {"progressive_call_results": True}}})[1]
        callee.send([64, callee.next_request(), {}, "com.fields.echo"])
        registered = callee.recv()
        assert registered[0] == 65
        rid = registered[2]

        def invocation(request, args, kwargs=None, progress=None):
            return ("I", "realm1", sid, request, rid, args, kwargs, None, None, progress,
                    4242, "alice", "user", None, None, None, None)

        bad = [("I", "realm1", sid, [68, 5, rid, {}, [1]]),   # the old marshalled form
               invocation(6, "not a list"), invocation("7", [1]), invocation(8, [1], ["x"]),
               ("I", "realm1", sid)]
        good = invocation(9, [1, 2], {"k": "v"}, progress=True)
        assert r.publish(f"geonode:n:{b_id}", msgpack.packb([me, *bad, good],
                                                             use_bin_type=True)) == 1
        inv = callee.recv()   # the good one is the first the callee gets
        assert inv[0] == 68 and inv[2] == rid and inv[4:] == [[1, 2], {"k": "v"}]
        assert (inv[3]["caller"], inv[3]["caller_authid"], inv[3]["caller_authrole"]) == \
            (4242, "alice", "user")
        assert inv[3]["receive_progress"] is True
        callee.send([70, inv[1], {"progress": True}, ["half"]])
        callee.send([70, inv[1], {}, ["done"], {"n": 1}])
        answers: list = []
        deadline = time.monotonic() + scaled(10)
        while len(answers) < 2 and time.monotonic() < deadline:
            got = inbox.get_message(timeout=0.2)
            if got is not None:
                sender, *msgs = msgpack.unpackb(got["data"], raw=False)
                assert sender == b_id
                answers += msgs
        assert [(x[0], x[2], x[3], x[4], x[5]) for x in answers] == \
            [("Y", 9, ["half"], None, True), ("Y", 9, ["done"], {"n": 1}, None)]
        log = b.wait_log("could not apply a 'I' message")
        assert log.count("could not apply a 'I' message") == len(bad)
    finally:
        callee.close()
        inbox.close()
        r.close()
    assert "lost options.backplane" not in b.log()


def test_gunicorn_workers_with_a_backplane_are_one_router(cluster):
    """``gunicorn -w 3`` with ``options.backplane``: whichever worker each client reaches,
    a callee registered through one is called through all (without the backplane 6 callers
    all reaching the callee's worker has a probability of 1/729)."""
    import json

    pytest.importorskip("gunicorn")
    from support import launch_gunicorn

    cfg = cluster.config()
    cfg["workers"][0]["transports"][0]["endpoint"]["port"] = 8080   # gunicorn owns the socket
    (cluster.base / "node.json").write_text(json.dumps(cfg))
    g = launch_gunicorn(cluster.base, "geonode:load('node.json')", workers=3)
    cluster.nodes.append(g)
    wait = __import__("support").wait_for
    wait(lambda: g.log().count("backplane: connected") >= 3, 30, "3 workers connected")
    wait(lambda: g.log().count("joined the cluster") >= 6, 30, "3 workers knowing each other")

    async def main(callee, *callers):
        await callee.register(lambda: "one router", "com.gunicorn.proc")
        for c in callers:
            await knows_callees(c, "com.gunicorn.proc")
            assert await c.call("com.gunicorn.proc") == "one router"

    run(main, *[g] * 7)


def test_a_stuck_node_stalls_no_one_and_rejoins(cluster):
    """SIGSTOP one node while the other publishes for its subscribers: the live node keeps
    serving its own clients at once, forgets the stuck one after the timeout, and the two
    are one router again after SIGCONT."""
    import os
    import signal

    a, b = cluster.pair()

    async def main(pa, la, sb):
        local: list = []
        await la.subscribe(lambda i, _blob: local.append(i), "com.stuck")
        await sb.subscribe(lambda *x: None, "com.stuck")
        await sb.register(lambda: "b", "com.stuck.proc")
        await la.register(lambda: "a", "com.local.proc")
        await knows_subscription(pa, "com.stuck", count=2)
        await knows_callees(pa, "com.stuck.proc")
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            blob = "x" * 1000
            for i in range(3000):   # 3 MB for node b, which reads nothing now
                pa.publish("com.stuck", i, blob)
            assert await pa.call("com.local.proc") == "a"
            await wait_len(local, 3000, "the local subscriber's 3000 events", timeout=30)
            assert loop.time() - t0 < scaled(15)
            await async_wait_for(lambda: _log_has(a, "forgetting its"), 20,
                                 "node a forgetting the stuck node")
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)

        async def remote_works():
            try:
                return await pa.call("com.stuck.proc") == "b"
            except ApplicationError:
                return False
        await until(remote_works, "a call to node b after it woke up", timeout=20)

    run(main, a, a, b)


async def _log_has(node, text: str) -> bool:
    return text in node.log()


def test_clusters_with_different_prefixes_share_one_redis_apart(cluster):
    x1 = cluster.node("x1", prefix="cluster-x")
    y = cluster.node("y", prefix="cluster-y")
    x2 = cluster.node("x2", prefix="cluster-x")
    cluster.joined(x1, x2)

    async def main(on_x1, on_x2, on_y):
        await on_x1.register(lambda: "x", "com.prefix.proc")
        await knows_callees(on_x2, "com.prefix.proc")
        assert await on_x2.call("com.prefix.proc") == "x"
        # y started before x2: had prefixes been ignored it would know x1 by now
        assert await on_y.call("wamp.registration.lookup", "com.prefix.proc") is None
        assert await on_y.call("wamp.session.count") == 1

    run(main, x1, x2, y)
    assert "joined the cluster" not in y.log()
