#!/usr/bin/env python3
"""Soak: one node under mixed load for a bounded time; leaks, failures and honest metrics.

    python bench/soak.py                    # 1 minute (a smoke run)
    python bench/soak.py --minutes 30       # the real run (issue 13)

One node (``python -m geonode``, PYTHONPATH = this checkout) serves a WSGI app on its thread
pool, a ``json`` path, WAMP over WebSocket, ``metrics`` and ``health``. Clients, all at once:
  http      keep-alive GETs of the WSGI app and the json path (2 threads)
  fresh     one new connection per GET (1 thread)
  slow      slow clients: the request head sent a few bytes at a time over ~1 s (1 thread)
  rpc       a callee and 2 callers, one call in flight each (raw JSON WAMP over WebSocket)
  pubsub    a publisher (acknowledged publishes) and 3 subscribers
  churn     connect, HELLO, one call, GOODBYE, close, again (1 thread)
Checked at the end (exit status 1 when one fails):
  - no failed request, call or publish, and every subscriber got every event;
  - the node's RSS growth between the end of the warm-up (a fifth of the run, at most 5 min)
    and the end of the load under 5%;
  - its open file descriptors back to the baseline (before the load) within 10 s of the end;
  - the metrics' totals equal the clients' own counts (HTTP requests per path, CALL, RESULT,
    PUBLISH, EVENT), no queue overflow, no authentication failure; health 200 throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests"), str(HERE)]

import requests  # noqa: E402
from support import launch, scaled, wait_for  # noqa: E402
from support.config import realm, web_node, wsgi  # noqa: E402
from support.ws import RawWamp  # noqa: E402

APP = '''
BODY = b"soak " * 20

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
'''

HELLO, WELCOME, GOODBYE = 1, 2, 6
ERROR, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 8, 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70
SUBSCRIBERS = 3


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n: dict[str, int] = {}
        self.failures: list[str] = []

    def add(self, key: str, k: int = 1) -> None:
        with self.lock:
            self.n[key] = self.n.get(key, 0) + k

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)
            self.n["failures"] = self.n.get("failures", 0) + 1


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def proc_fds(pid: int) -> int:
    """The node's descriptors but the WSGI pool's per-thread CPU clocks
    (``/proc/self/task/<tid>/schedstat``, one per live pool thread: more threads are alive
    after a load until their idle timeout, so those are counted apart by ``clock_fds``)."""
    return sum(1 for fd in _fd_targets(pid) if not fd.endswith("/schedstat"))


def clock_fds(pid: int) -> int:
    return sum(1 for fd in _fd_targets(pid) if fd.endswith("/schedstat"))


def _fd_targets(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass   # closed meanwhile
    return out


def connection_sockets(pid: int) -> int:
    """The node's sockets but its listeners (connections, open or being closed)."""
    listening = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        listening.update(f.split()[9] for f in lines if f.split()[3] == "0A")
    return sum(1 for fd in _fd_targets(pid)
               if fd.startswith("socket:[") and fd[8:-1] not in listening)


def describe_fds(pid: int) -> list[str]:
    """What the node's descriptors are: a socket with its TCP state and ports, or the path."""
    inodes: dict[str, str] = {}
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN",
              "04": "FIN_WAIT1", "05": "FIN_WAIT2", "09": "LAST_ACK", "07": "CLOSE"}
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote = (int(a.split(":")[1], 16) for a in (f[1], f[2]))
            inodes[f[9]] = f"tcp {states.get(f[3], f[3])} :{local} -> :{remote}"
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        out.append(f"{fd}: {inodes.get(m.group(1), target) if m else target}")
    return out


def hello(w: RawWamp) -> int:
    welcome = w.hello()
    if welcome[0] != WELCOME:
        raise RuntimeError(f"no WELCOME: {welcome}")
    return welcome[1]


def http_worker(base: str, stop: threading.Event, c: Counts, keepalive: bool) -> None:
    s = requests.Session() if keepalive else None
    try:
        _http_loop(base, stop, c, s)
    finally:
        if s is not None:
            s.close()   # its keep-alive connection: else the node holds it past the end


def _http_loop(base: str, stop: threading.Event, c: Counts, s: requests.Session | None) -> None:
    i = 0
    while not stop.is_set():
        path = "/app" if i % 2 == 0 else "/json"
        i += 1
        try:
            r = (s.get if s else requests.get)(base + path, timeout=scaled(10),
                                               headers=None if s else {"Connection": "close"})
            if r.status_code == 200:
                c.add(f"http {path}")
            else:
                c.fail(f"GET {path}: {r.status_code}")
        except Exception as e:
            c.fail(f"GET {path}: {e}")


def slow_worker(port: int, stop: threading.Event, c: Counts) -> None:
    head = f"GET /app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: slow\r\n" \
           "Connection: close\r\n\r\n".encode()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=scaled(30)) as s:
                for k in range(0, len(head), 8):
                    s.sendall(head[k:k + 8])
                    time.sleep(0.08)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                c.add("http /app")
            else:
                c.fail(f"slow GET: {data[:60]!r}")
        except Exception as e:
            c.fail(f"slow GET: {e}")


def callee_worker(port: int, ready: threading.Event, stop: threading.Event, c: Counts) -> None:
    w = RawWamp(port)
    try:
        hello(w)
        w.send([REGISTER, 1, {}, "soak.add"])
        if w.recv()[0] != REGISTERED:
            raise RuntimeError("not registered")
        ready.set()
        while not stop.is_set():
            try:
                msg = w.recv(timeout=0.5)
            except Exception:
                continue
            if msg[0] == INVOCATION:
                a, b = msg[4]
                w.send([YIELD, msg[1], {}, [a + b]])
    except Exception as e:
        c.fail(f"callee: {e}")
    finally:
        w.close()


def call_once(w: RawWamp, i: int, c: Counts) -> None:
    req = w.next_request()
    w.send([CALL, req, {}, "soak.add", [i, 1]])
    msg = w.recv()
    if msg[0] == RESULT and msg[1] == req and msg[3] == [i + 1]:
        c.add("calls")
    else:
        c.fail(f"call: {msg}")


def caller_worker(port: int, stop: threading.Event, c: Counts) -> None:
    w = RawWamp(port)
    try:
        hello(w)
        i = 0
        while not stop.is_set():
            i += 1
            call_once(w, i, c)
    except Exception as e:
        c.fail(f"caller: {e}")
    finally:
        w.close()


def churn_worker(port: int, stop: threading.Event, c: Counts) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            w = RawWamp(port)
            try:
                hello(w)
                call_once(w, i, c)
                w.send([GOODBYE, {}, "wamp.close.normal"])
                if w.recv()[0] != GOODBYE:
                    c.fail("churn: no GOODBYE")
                c.add("sessions churned")
            finally:
                w.close()
        except Exception as e:
            c.fail(f"churn: {e}")


class Subscriber(threading.Thread):
    def __init__(self, port: int, c: Counts) -> None:
        super().__init__(daemon=True)
        self.w = RawWamp(port)
        hello(self.w)
        self.w.send([SUBSCRIBE, 1, {}, "soak.topic"])
        if self.w.recv()[0] != SUBSCRIBED:
            raise RuntimeError("not subscribed")
        self.got = 0
        self.done = threading.Event()
        self.c = c

    def run(self) -> None:
        while not self.done.is_set():
            try:
                msg = self.w.recv(timeout=0.5)
            except Exception:
                continue
            if msg[0] == EVENT:
                self.got += 1


def publisher_worker(port: int, stop: threading.Event, c: Counts) -> None:
    w = RawWamp(port)
    try:
        hello(w)
        i = 0
        while not stop.is_set():
            i += 1
            req = w.next_request()
            w.send([PUBLISH, req, {"acknowledge": True}, "soak.topic", [i]])
            msg = w.recv()
            if msg[0] == PUBLISHED and msg[1] == req:
                c.add("published")
            else:
                c.fail(f"publish: {msg}")
    except Exception as e:
        c.fail(f"publisher: {e}")
    finally:
        w.close()


def scrape(base: str) -> str:
    return requests.get(base + "/metrics", timeout=scaled(10)).text


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--folder", default=str(ROOT / "bench" / ".work" / "soak" /
                                            time.strftime("%Y%m%d-%H%M%S")))
    args = ap.parse_args(argv)
    seconds = args.minutes * 60
    warmup = min(seconds / 5, 300)
    cfg = web_node({"app": wsgi("app"), "json": {"type": "json", "value": {"soak": True}},
                    "ws": {"type": "websocket"}, "metrics": {"type": "metrics"},
                    "health": {"type": "health"}}, realms=[realm()])
    node = launch(cfg, Path(args.folder), files={"app.py": APP}, args=("--loglevel", "warning"))
    base, port, pid = node.url, node.port, node.proc.pid
    c = Counts()
    ok = True
    try:
        if requests.get(base + "/json", timeout=scaled(10)).status_code == 200:
            c.add("http /json")   # the node warmed (imports settled), counted like the rest
        # The baseline without that GET's connection, which the node may still be closing
        # (counted, it let the check pass with one descriptor left over).
        wait_for(lambda: connection_sockets(pid) == 0, scaled(10),
                 "the warm-up connection closed")
        fds0 = proc_fds(pid)
        print("the node's descriptors before the load:", *describe_fds(pid), sep="\n  ")
        stop = threading.Event()
        ready = threading.Event()
        callee_stop = threading.Event()   # set after the callers stopped: no call is cut
        threads = [threading.Thread(target=callee_worker, args=(port, ready, callee_stop, c),
                                    daemon=True)]
        threads[0].start()
        ready.wait(scaled(10))
        subs = [Subscriber(port, c) for _ in range(SUBSCRIBERS)]
        for s in subs:
            s.start()
        threads += [threading.Thread(target=http_worker, args=(base, stop, c, True), daemon=True)
                    for _ in range(2)]
        threads += [threading.Thread(target=http_worker, args=(base, stop, c, False),
                                     daemon=True),
                    threading.Thread(target=slow_worker, args=(port, stop, c), daemon=True),
                    threading.Thread(target=churn_worker, args=(port, stop, c), daemon=True),
                    threading.Thread(target=publisher_worker, args=(port, stop, c),
                                     daemon=True)]
        threads += [threading.Thread(target=caller_worker, args=(port, stop, c), daemon=True)
                    for _ in range(2)]
        t0 = time.monotonic()
        for t in threads[1:]:
            t.start()
        rss_warm = None
        health_bad = 0
        scrapes = 0
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds / 10))
            elapsed = time.monotonic() - t0
            if rss_warm is None and elapsed >= warmup:
                rss_warm = proc_rss_kb(pid)
            if requests.get(base + "/health", timeout=scaled(10)).status_code != 200:
                health_bad += 1
            scrape(base)
            scrapes += 1
            print(f"{elapsed:6.0f} s  rss {proc_rss_kb(pid) / 1024:6.1f} MB  fds "
                  f"{proc_fds(pid):4d}  {dict(sorted(c.n.items()))}", flush=True)
        rss_end = proc_rss_kb(pid)
        stop.set()
        for t in threads[1:]:
            t.join(scaled(30))
        published = c.n.get("published", 0)
        wait_for(lambda: all(s.got >= published for s in subs), 30,
                 "every event delivered", interval=0.1)
        for s in subs:
            s.done.set()
            s.join(scaled(5))
            s.w.close()
        callee_stop.set()
        threads[0].join(scaled(10))
        try:
            wait_for(lambda: proc_fds(pid) <= fds0, scaled(10),
                     f"the node's fds back to {fds0}")
        except AssertionError:
            pass   # reported below
        fds_end = proc_fds(pid)
        if fds_end > fds0:
            print("the node's descriptors now:", *describe_fds(pid), sep="\n  ")
        text = scrape(base)
        checks = []

        def check(what: str, cond: bool, detail: str = "") -> None:
            nonlocal ok
            ok &= cond
            checks.append(f"{'ok  ' if cond else 'FAIL'} {what} {detail}")

        check("no failures", not c.failures, str(c.failures[:5]))
        check("health 200 throughout", health_bad == 0, f"({health_bad} bad of {scrapes})")
        growth = (rss_end - rss_warm) / rss_warm if rss_warm else 0.0
        check("RSS growth after warm-up < 5%", growth < 0.05,
              f"({rss_warm / 1024:.1f} -> {rss_end / 1024:.1f} MB, {growth:+.1%})"
              if rss_warm else "(no warm-up sample)")
        check("fds back to baseline", fds_end <= fds0,
              f"({fds0} before, {fds_end} after; besides, {clock_fds(pid)} per-thread CPU "
              f"clocks of the WSGI pool's live threads, at most maxthreads)")
        for path in ("/app", "/json"):
            mine = c.n.get(f"http {path}", 0)
            theirs = sample(text, "geonode_http_requests_total", path=path, status="200")
            check(f"metrics: HTTP {path} 200 = clients' count", theirs == mine,
                  f"({theirs:.0f} vs {mine})")
        calls = c.n.get("calls", 0)
        events = sum(s.got for s in subs)
        for typ, d, mine in (("CALL", "in", calls), ("RESULT", "out", calls),
                             ("PUBLISH", "in", published), ("EVENT", "out", events)):
            theirs = sample(text, "geonode_wamp_messages_total", realm="realm1", type=typ,
                            direction=d)
            check(f"metrics: {typ} {d} = clients' count", theirs == mine,
                  f"({theirs:.0f} vs {mine})")
        check("no queue overflow", sample(text, "geonode_wamp_queue_overflows_total") == 0)
        check("every event delivered", events == published * SUBSCRIBERS,
              f"({events} of {published * SUBSCRIBERS})")
        print(f"\nsoak {args.minutes:g} min: {json.dumps(dict(sorted(c.n.items())))}")
        print("\n".join(checks))
    finally:
        node.stop()
    print(f"\n{'PASSED' if ok else 'FAILED'}; node log: {node.log_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
