"""Prometheus metrics: counted as plain ints on the hot paths, turned into metrics at scrape time.

Why not ``prometheus_client``'s ``Counter.inc()`` where things happen: each call takes a lock
and walks a labels dict (about a microsecond), and the router counts several messages per WAMP
call. Here the hot paths only bump ints they own (a realm's ``received``/``sent`` lists indexed
by WAMP message type, an ``HttpStats`` per web server, a ``Histogram`` per realm); one
:class:`NodeCollector` reads them all when Prometheus scrapes (``prometheus_client``'s custom
collector interface), next to ``prometheus_client``'s own process collector.

Counting costs nothing unless the config has a ``metrics`` path: HTTP requests are counted by
the handler only on servers the node gave an ``HttpStats``; the router's message counters
(used by the status page too) are a dict increment per message.

Several processes (``geonode start --processes N``): each process counts its own; see
:func:`snapshot` / :func:`merge_snapshots` and docs/observability.md "Several processes".
"""

from __future__ import annotations

import json
import os
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: Seconds; Prometheus' usual buckets, a little finer at the fast end (WAMP calls, json paths).
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0)
CALL_BUCKETS = HTTP_BUCKETS
#: Distinct ``path`` labels one server keeps; beyond, requests count under ``path="other"``
#: (a hosted app may rewrite SCRIPT_NAME: the label set must stay bounded).
MAX_PATHS = 256


class Histogram:
    """Non-cumulative bucket counts and a sum: ``observe`` is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = HTTP_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip((*map(_float_text, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def _float_text(v: float) -> str:
    return repr(float(v))


class _PathStats:
    __slots__ = ("statuses", "duration")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.duration = Histogram(HTTP_BUCKETS)


class HttpStats:
    """One web server's request counts by mount path and status, and their durations.

    Fed by ``geonode.web.handler.Handler`` after each response (from pywsgi's own
    ``time_start``/``time_finish``: no extra clock reads)."""

    __slots__ = ("paths", "transport")

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.paths: dict[str, _PathStats] = {}

    def observe(self, path: str, status: int, seconds: float | None) -> None:
        ps = self.paths.get(path)
        if ps is None:
            ps = self._new(path)
        ps.statuses[status] = ps.statuses.get(status, 0) + 1
        if seconds is not None:
            ps.duration.observe(seconds)

    def _new(self, path: str) -> _PathStats:
        if len(self.paths) >= MAX_PATHS:
            path = "other"
            ps = self.paths.get(path)
            if ps is not None:
                return ps
        ps = self.paths[path] = _PathStats()
        return ps


# ---- what the collector reads --------------------------------------------------------------
class Sources:
    """Everything the node registers for the collector (weakly: a test may build many nodes)."""

    def __init__(self) -> None:
        self.nodes: weakref.WeakSet = weakref.WeakSet()
        self.wsgi: list[tuple[str, weakref.ref]] = []   # (path, WSGIHost)
        #: extra collectors' callables: () -> Iterable[Metric] (backplane link state, ...)
        self.extra: list[Callable[[], Iterable[Any]]] = []
        #: WAMP connections dropped for an outgoing queue over its bound: geonode.transport.queue
        #: puts its counter here when it loads (this module imports nothing of geonode's)
        self.queue_overflows: Callable[[], int] = lambda: 0

    def add_wsgi(self, path: str, host: Any) -> None:
        self.wsgi = [(p, r) for p, r in self.wsgi if r() is not None]
        self.wsgi.append((path, weakref.ref(host)))


SOURCES = Sources()


def url_path(json_path: str) -> str:
    """``workers[0].transports[0].paths.api.paths.v1`` → ``/api/v1`` (the mount a service has;
    ``paths["/"]`` is the root)."""
    marker = ".paths"
    i = json_path.find(marker)
    if i < 0:
        return "/"
    parts = []
    rest = json_path[i:]
    while rest.startswith(marker):
        rest = rest[len(marker):]
        if rest.startswith("["):
            end = rest.index("]") + 1
            key = rest[2:end - 2]
        else:
            rest = rest[1:]
            end = rest.find(".")
            end = len(rest) if end < 0 else end
            key = rest[:end]
        rest = rest[end:]
        if key and key != "/":
            parts.append(key.strip("/"))
    return "/" + "/".join(parts)


def pool_use(host: Any) -> tuple[int, int, int]:
    """(threads busy, requests waiting for a thread, max threads) of a WSGIHost's pool."""
    pool = getattr(host, "pool", None)
    if pool is None:
        return 0, 0, 0
    return pool.use()


def wsgi_use() -> list[dict]:
    """Every WSGI path's pool use now (the status page's ``geonode.status.get``)."""
    out = []
    for path, ref in SOURCES.wsgi:
        host = ref()
        if host is not None:
            busy, waiting, size = pool_use(host)
            out.append({"path": path, "busy": busy, "waiting": waiting, "maxthreads": size})
    return out


def connection_counts(node: Any) -> dict[tuple[str, str], int]:
    """{(transport, kind): n} now; kinds: http_idle, http_request, websocket, rawsocket."""
    counts: dict[tuple[str, str], int] = {}
    for t in getattr(node, "web", ()):
        server = t.server
        if server is None:
            continue
        for h in list(server.connections._handlers):
            kind = ("websocket" if h.websocket_upgraded else
                    "http_request" if h.in_request else "http_idle")
            counts["web", kind] = counts.get(("web", kind), 0) + 1
    for _, server in getattr(node, "rawsocket_servers", ()):
        pool = getattr(server, "pool", None)
        n = len(pool) if pool is not None else 0
        counts["rawsocket", "rawsocket"] = counts.get(("rawsocket", "rawsocket"), 0) + n
    return counts


#: size of a realm's per-type counters (WAMP type codes are below 128)
MESSAGE_TYPES = 128
_TYPE_NAMES: dict[int, str] = {}


def message_type_name(code: int) -> str:
    """``48`` -> ``CALL``: autobahn's message classes name the codes."""
    if not _TYPE_NAMES:
        from autobahn.wamp import message as m

        for obj in vars(m).values():
            code_of = getattr(obj, "MESSAGE_TYPE", None)
            if isinstance(obj, type) and isinstance(code_of, int):
                _TYPE_NAMES[code_of] = obj.__name__.upper()
    return _TYPE_NAMES.get(code, str(code))


def type_counts(table: list[int]) -> dict[str, int]:
    """A realm's counters as {type name: count}, the types seen so far only."""
    return {message_type_name(code): n for code, n in enumerate(table) if n}


class NodeCollector:
    """``prometheus_client`` custom collector over :data:`SOURCES` (runs only when scraped)."""

    def describe(self) -> list:
        return []   # no duplicate-name checks against other collectors at registration

    def collect(self) -> Iterator[Any]:  # noqa: C901 - one scrape: every family in turn, each a short loop over its sources
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        nodes = list(SOURCES.nodes)
        req = CounterMetricFamily("geonode_http_requests", "HTTP requests answered",
                                  labels=["path", "status"])
        dur = HistogramMetricFamily("geonode_http_request_duration_seconds",
                                    "HTTP request durations (request line to last byte)",
                                    labels=["path"])
        merged: dict[str, _PathStats] = {}
        for node in nodes:
            for t in node.web:
                stats = getattr(t.server, "http_stats", None) if t.server is not None else None
                if stats is None:
                    continue
                for path, ps in list(stats.paths.items()):
                    acc = merged.setdefault(path, _PathStats())
                    for code, n in list(ps.statuses.items()):
                        acc.statuses[code] = acc.statuses.get(code, 0) + n
                    for i, n in enumerate(ps.duration.counts):
                        acc.duration.counts[i] += n
                    acc.duration.sum += ps.duration.sum
        for path, ps in sorted(merged.items()):
            for code, n in sorted(ps.statuses.items()):
                req.add_metric([path, str(code)], n)
            dur.add_metric([path], ps.duration.cumulative(), ps.duration.sum)
        yield req
        yield dur

        busy = GaugeMetricFamily("geonode_wsgi_threads_busy",
                                 "WSGI pool threads running a request", labels=["path"])
        queue = GaugeMetricFamily("geonode_wsgi_queue_length",
                                  "WSGI requests waiting for a pool thread", labels=["path"])
        maxt = GaugeMetricFamily("geonode_wsgi_threads_max", "WSGI pool size limit (maxthreads)",
                                 labels=["path"])
        for row in wsgi_use():
            busy.add_metric([row["path"]], row["busy"])
            queue.add_metric([row["path"]], row["waiting"])
            maxt.add_metric([row["path"]], row["maxthreads"])
        yield busy
        yield queue
        yield maxt

        conns = GaugeMetricFamily("geonode_connections", "Open client connections",
                                  labels=["transport", "kind"])
        total: dict[tuple[str, str], int] = {}
        for node in nodes:
            for key, n in connection_counts(node).items():
                total[key] = total.get(key, 0) + n
        for (transport, kind), n in sorted(total.items()):
            conns.add_metric([transport, kind], n)
        yield conns

        sessions = GaugeMetricFamily("geonode_wamp_sessions", "Joined WAMP sessions",
                                     labels=["realm"])
        msgs = CounterMetricFamily("geonode_wamp_messages", "WAMP messages routed",
                                   labels=["realm", "type", "direction"])
        calls = HistogramMetricFamily("geonode_wamp_call_duration_seconds",
                                      "WAMP call durations (CALL to RESULT/ERROR, at the router)",
                                      labels=["realm"])
        fails = CounterMetricFamily("geonode_auth_failures", "Failed WAMP authentications",
                                    labels=["realm", "method"])
        for node in nodes:
            for router in node.routers:
                for name, realm in list(router.realms.items()):
                    sessions.add_metric([name], len(realm.sessions))
                    for direction, table in (("in", realm.received), ("out", realm.sent)):
                        for typ, n in sorted(type_counts(table).items()):
                            msgs.add_metric([name, typ, direction], n)
                    h = realm.call_durations
                    calls.add_metric([name], h.cumulative(), h.sum)
                for (realm_name, method), n in sorted(list(router.auth_failures.items())):
                    fails.add_metric([realm_name, method], n)
        yield sessions
        yield msgs
        yield calls
        yield fails

        overflows = CounterMetricFamily("geonode_wamp_queue_overflows",
                                        "WAMP connections dropped: outgoing queue over its bound")
        overflows.add_metric([], SOURCES.queue_overflows())
        yield overflows

        up = GaugeMetricFamily("geonode_up", "1 when the node is serving (the health service's "
                               "status is ok)", labels=["state"])
        for node in nodes:
            up.add_metric([node.info.state], 1 if node.info.state == "up" else 0)
        yield up
        for extra in list(SOURCES.extra):
            yield from extra()


_registry: Any = None


def registry() -> Any:
    """The process's metrics registry: the node collector and the process collector."""
    global _registry
    if _registry is None:
        from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

        reg = CollectorRegistry(auto_describe=False)
        reg.register(NodeCollector())
        ProcessCollector(registry=reg)
        GCCollector(registry=reg)
        _registry = reg
    return _registry


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
    from prometheus_client.exposition import choose_encoder

    folder = multiprocess_dir()
    if folder is not None:
        from prometheus_client import CONTENT_TYPE_LATEST

        return multiprocess_exposition(folder), CONTENT_TYPE_LATEST
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry()), content_type


#: Several node processes (``geonode start --processes N``, or a supervisor of your own): each
#: writes its samples to ``<dir>/<pid>.json`` and a scrape answered by any of them merges all.
MULTIPROCESS_ENV = "GEONODE_METRICS_DIR"
#: how often each process refreshes its file (a scrape also refreshes the answering one's)
WRITE_EVERY = 1.0


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def write_snapshot(folder: str) -> None:
    """This process's samples to ``<folder>/<pid>.json``, atomically (rename)."""
    path = os.path.join(folder, f"{os.getpid()}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(snapshot(), f, separators=(",", ":"))
    os.replace(tmp, path)


def start_writer(folder: str) -> Any:
    """A greenlet refreshing this process's file every WRITE_EVERY seconds (idempotent)."""
    global _writer
    if _writer is None:
        import gevent

        def loop() -> None:
            while True:
                try:
                    write_snapshot(folder)
                except OSError as e:
                    import logging
                    logging.getLogger("geonode.metrics").warning(
                        "cannot write metrics to %s: %s", folder, e)
                gevent.sleep(WRITE_EVERY)

        _writer = gevent.spawn(loop)
    return _writer


_writer: Any = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def read_snapshots(folder: str) -> list[dict]:
    """Every process's last samples; a process that is gone keeps its counters and histograms
    (totals must not go down when a worker is replaced), not its gauges."""
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                snap = json.load(f)
        except (OSError, ValueError):
            continue   # being replaced right now, or not ours
        if snap.get("pid") != os.getpid() and not _alive(int(snap.get("pid", 0))):
            snap["samples"] = [x for x in snap["samples"] if x[1] in ("counter", "histogram")]
        out.append(snap)
    return out


def multiprocess_exposition(folder: str) -> bytes:
    """The text exposition of every process's samples merged (see merge_snapshots)."""
    write_snapshot(folder)
    snaps = read_snapshots(folder)
    types: dict[str, str] = {}
    for snap in snaps:
        for family, kind, *_ in snap["samples"]:
            types.setdefault(family, kind)
    lines: list[str] = []
    done: set[str] = set()
    for name, labels, value in merge_snapshots(snaps):
        family = _family_of(name, types)
        if family not in done:
            done.add(family)
            lines.append(f"# TYPE {family} {types.get(family, 'untyped')}")
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{text}}} {_float_repr(value)}" if text
                     else f"{name} {_float_repr(value)}")
    return ("\n".join(lines) + "\n").encode()


def _family_of(sample: str, types: dict[str, str]) -> str:
    for suffix in ("_total", "_created", "_bucket", "_count", "_sum", ""):
        if sample.endswith(suffix) and sample[:len(sample) - len(suffix)] in types:
            return sample[:len(sample) - len(suffix)]
    return sample


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _float_repr(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def snapshot() -> dict:
    """This process's samples as plain data: the hook for ``--processes N``.

    A supervisor that runs several node processes has each write ``snapshot()`` (JSON) where
    the process serving a scrape can read it, and that one answers with
    :func:`merge_snapshots` of all of them (counters and histograms summed, gauges summed,
    process metrics labelled by pid). See docs/observability.md "Several processes"."""
    out: dict = {"pid": os.getpid(), "time": time.time(), "samples": []}
    for metric in registry().collect():
        for s in metric.samples:
            out["samples"].append([metric.name, metric.type, s.name, dict(s.labels), s.value])
    return out


def merge_snapshots(snaps: list[dict]) -> list[tuple[str, dict, float]]:
    """Sum equal (sample name, labels) over processes; ``process_*`` samples get a ``pid``
    label instead (a sum of resident sizes or start times means nothing)."""
    acc: dict[tuple[str, tuple], float] = {}
    for snap in snaps:
        for _family, _type, name, labels, value in snap["samples"]:
            if name.startswith("process_") or name.startswith("python_gc"):
                labels = {**labels, "pid": str(snap["pid"])}
            key = (name, tuple(sorted(labels.items())))
            acc[key] = acc.get(key, 0.0) + value
    return [(name, dict(labels), v) for (name, labels), v in sorted(acc.items())]
