#!/usr/bin/env python3
"""Where one HTTP request's CPU goes in a geonode node, thread-pool mode: a phase table.

    python bench/http/profile_request.py                          # hello app, -c1,10,50, 3 rounds
    python bench/http/profile_request.py --code main=/tmp/base --code branch=.   # side by side
    python bench/http/profile_request.py --app flask --access-log --greenlet

Each ``--code NAME=DIR`` runs DIR's ``geonode`` package (``PYTHONPATH=DIR``; e.g. ``git archive
<commit> geonode | tar -x -C DIR``); the default is this checkout. For each code two node
processes serve the same config (``bench/http/run.py``'s node: the repo's root node.json with
``bench/http/hello.py`` or the Flask sample at ``/``): a *plain* one, measured from outside
only, and a *stamped* one, whose phases are timed from inside. ``wrk -t1 -cN`` drives one at a
time, round by round, so a noisy moment hits every row alike; medians over the rounds.

Measured per request (CPU time, user + system, µs):

- every thread of the server from ``/proc/self/task/*/schedstat`` (the hub thread, the pool's
  threads), its system (kernel) share, its context switches, how many pool threads ran;
- in the stamped process, the hub thread's CPU split by phase. Each handler greenlet keeps a
  stack of phases; the time between two boundaries (a phase entered or left, a greenlet
  switch seen by ``greenlet.settrace``) is charged to the phase on top:

  =================  =========================================================================
  parse              request line, headers, environ: pywsgi's request loop with geonode's
                     handler (the strict checks excepted)
  strict checks      ``geonode.web.httprules``' request line, framing, status and response
                     header checks, the body-length clip: counted live, each timed afterwards
                     by a loop over the arguments of a real call, moved out of its phase
  access log         ``options.access_log`` (``--access-log``): the middleware and its line
  dispatch           werkzeug's DispatcherMiddleware (the node has a ``ws`` sibling of ``/``)
  spool              ``spool_body`` (a GET: the empty body)
  hand-off (hub)     the WSGI host's code before the greenlet waits for the pool
  hand-back (hub)    the WSGI host's code after it (the response's chunks handed over)
  response write     ``start_response``, headers, the send, pywsgi's response bookkeeping
  hub loop           the hub greenlet: libev, epoll, watcher callbacks, greenlet wake-ups
  app                the WSGI callable and the iteration of its response (on the pool; on the
                     hub with ``--greenlet``)
  pool overhead      the pool threads' CPU besides the app: taking calls, waking, parking,
                     telling the hub, and the kernel's part of it
  =================  =========================================================================

  Clocks: a thread's CPU clock is a system call here (~1 µs, and it disturbs what it
  measures), so phase boundaries read the wall clock (``perf_counter_ns``, a segment over
  ``SEGMENT_CAP_NS`` is dropped as interrupted) and only greenlet switches read the hub
  thread's CPU clock: the hub loop is its CPU between switches, and the handler greenlets'
  phases are scaled so that they add up to the rest of the hub thread's CPU (schedstat). The
  instrumentation's own cost (a boundary's and a clock read's, calibrated in the process) is
  taken off and printed; the plain process's figures below the table are the check.

Nothing here changes the code measured: hooks wrap functions of the running node from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# A hub segment longer than this was interrupted (the thread preempted, or the GIL given to a
# pool thread): dropped from its phase. Genuine segments of these requests take a few µs.
SEGMENT_CAP_NS = 200_000

PHASES = ["parse", "strict checks", "access log", "dispatch", "spool", "hand-off (hub)",
          "hand-back (hub)", "response write", "hub loop", "other greenlets", "app (hub)",
          "app", "pool overhead"]


# ============================================================================================
# The server side (a child process: --serve)
# ============================================================================================

def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def thread_stats() -> dict[str, dict[str, int]]:
    """CPU (ns), system ticks and context switches of every thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            cpu_ns = int(_read(f"{base}/schedstat").split()[0])
            fields = _read(f"{base}/stat").rsplit(")", 1)[1].split()
            status = _read(f"{base}/status")
        except (OSError, ValueError, IndexError):
            continue
        vcs = nvcs = 0
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vcs = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                nvcs = int(line.split()[1])
        out[tid] = {"cpu_ns": cpu_ns, "utime": int(fields[11]), "stime": int(fields[12]),
                    "vcs": vcs, "nvcs": nvcs}
    return out


class Accounts:
    """CPU of the hub thread charged to phases (see the module docstring)."""

    def __init__(self, stamped: bool) -> None:
        import greenlet
        from gevent import get_hub
        from gevent.monkey import get_original

        self.stamped = stamped
        # Wall clock: thread_time_ns is a system call here (~1 µs) and disturbs what it
        # measures; a segment longer than SEGMENT_CAP_NS is dropped as not this phase's CPU.
        self.clock = time.perf_counter_ns
        self.cpu_clock = time.thread_time_ns
        self.ident = get_original("_thread", "get_ident")
        self.hub_ident = self.ident()
        self.hub = get_hub()
        self.getcurrent = greenlet.getcurrent
        self.stacks: dict[Any, list[str]] = {}
        self.cur = "hub loop"
        self.last = self.clock()
        self.ns: dict[str, int] = defaultdict(int)
        self.segments: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)
        self.responses = 0
        self.loop_cpu = self.switches = 0
        self.cpu_mark = 0
        # app time on pool threads, per native thread (one writer per key)
        self.pool_app: dict[int, int] = defaultdict(int)
        self.pool_apps: dict[int, int] = defaultdict(int)
        # strict checks: calls per (function, phase it was called in), one real call's args
        self.strict_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.strict_args: dict[str, tuple] = {}
        self.strict_funcs: dict[str, Any] = {}
        self.boundary_ns = 0.0
        self.cpu_clock_ns = 0.0
        if stamped:
            self.boundary_ns = self.calibrate()
            greenlet.settrace(self.trace)

    def reset(self) -> None:
        self.charge(self.cur)
        for d in (self.ns, self.segments, self.dropped, self.pool_app, self.pool_apps,
                  self.strict_calls):
            d.clear()
        self.responses = 0
        self.loop_cpu = self.switches = 0
        self.cpu_mark = self.cpu_clock()

    def charge(self, nxt: str) -> None:
        now = self.clock()
        cur = self.cur
        d = now - self.last
        if d < SEGMENT_CAP_NS:
            self.ns[cur] += d
        else:
            # preempted, or the GIL went to a pool thread meanwhile: not this phase's CPU
            self.dropped[cur] += 1
        self.segments[cur] += 1
        self.last = now
        self.cur = nxt

    def trace(self, event: str, args: Any) -> None:
        if event == "switch" or event == "throw":
            origin, target = args
            # CPU clock at every switch: the hub greenlet's own time (the loop) is CPU, not the
            # wall clock (that includes its sleeps in epoll)
            cpu = self.cpu_clock()
            if origin is self.hub:
                self.loop_cpu += cpu - self.cpu_mark
            self.cpu_mark = cpu
            self.switches += 1
            st = self.stacks.get(origin)
            if st and st[-1] == "hand-off (hub)":
                st[-1] = "hand-back (hub)"  # the host waits for the pool: what follows is after
            st = self.stacks.get(target)
            self.charge(st[-1] if st else ("hub loop" if target is self.hub
                                           else "other greenlets"))

    def push(self, name: str) -> None:
        g = self.getcurrent()
        st = self.stacks.get(g)
        if st is None:
            st = self.stacks[g] = []
        st.append(name)
        self.charge(name)

    def pop(self) -> None:
        g = self.getcurrent()
        st = self.stacks[g]
        st.pop()
        if st:
            self.charge(st[-1])
        else:
            del self.stacks[g]
            self.charge("other greenlets")

    def calibrate(self, n: int = 20000) -> float:
        """CPU per boundary (ns): a phase entered and left ``n`` times, no work inside."""
        best = float("inf")
        for _ in range(5):
            self.push("calibration")
            t0 = self.clock()
            for _ in range(n):
                self.push("calibration inner")
                self.pop()
            best = min(best, (self.clock() - t0) / (2 * n))
            self.pop()
        self.ns.clear()
        self.segments.clear()
        self.dropped.clear()
        t0 = self.cpu_clock()
        for _ in range(n):
            self.cpu_clock()
        self.cpu_clock_ns = (self.cpu_clock() - t0) / n
        return best

    # ---- strict checks: counted live, replayed for their cost -----------------------------
    def count(self, name: str, func: Any) -> Any:
        calls = self.strict_calls
        args_seen = self.strict_args
        self.strict_funcs[name] = func

        def counted(*args: Any) -> Any:
            calls[(name, self.cur)] += 1
            if name not in args_seen:
                args_seen[name] = args
            return func(*args)

        return counted

    def replay(self, n: int = 20000) -> dict[str, float]:
        """CPU (ns) of one call of each strict check, with the arguments of a real call."""
        cost = {}
        for name, args in self.strict_args.items():
            func = self.strict_funcs[name]
            if name in ("clip_body", "check_body_complete"):
                # methods of the handler: replayed on a stand-in with the same attributes
                handler, *rest = args
                stub = _StubHandler(handler)
                args = (stub, *rest)
                fresh = stub.reset
            else:
                fresh = None
            best = float("inf")
            for _ in range(3):
                t0 = self.clock()
                if fresh is None:
                    for _ in range(n):
                        func(*args)
                else:
                    for _ in range(n):
                        fresh()
                        func(*args)
                best = min(best, (self.clock() - t0) / n)
            if fresh is not None:
                t0 = self.clock()
                for _ in range(n):
                    fresh()
                best -= (self.clock() - t0) / n
            cost[name] = max(best, 0.0)
        return cost

    def report(self) -> dict:
        self.charge(self.cur)
        return {"ns": dict(self.ns), "segments": dict(self.segments),
                "dropped": dict(self.dropped),
                "responses": self.responses,
                "pool_app_ns": dict(self.pool_app), "pool_apps": dict(self.pool_apps),
                "strict_calls": [[f, p, c] for (f, p), c in self.strict_calls.items()],
                "strict_cost_ns": self.replay() if self.stamped else {},
                "boundary_ns": self.boundary_ns, "cpu_clock_ns": self.cpu_clock_ns,
                "loop_cpu_ns": self.loop_cpu, "switches": self.switches,
                "hub_ident": self.hub_ident}


class _StubHandler:
    """What ``clip_body``/``check_body_complete`` read of a handler, resettable."""

    def __init__(self, h: Any) -> None:
        self._left0 = h._body_left
        self.close_connection = h.close_connection
        self.command, self.path = h.command, h.path
        self.provided_content_length = h.provided_content_length
        self._body_left = self._left0

    def reset(self) -> None:
        self._body_left = self._left0


class _TimedIter:
    """A response iterable whose ``next()`` and ``close()`` on a pool thread count as app."""

    __slots__ = ("it", "result", "acc")

    def __init__(self, result: Any, acc: Accounts) -> None:
        self.result = result
        self.it = iter(result)
        self.acc = acc

    def __iter__(self) -> _TimedIter:
        return self

    def __next__(self) -> Any:
        acc = self.acc
        t0 = acc.cpu_clock()
        try:
            return next(self.it)
        finally:
            acc.pool_app[acc.ident()] += acc.cpu_clock() - t0

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            acc = self.acc
            t0 = acc.cpu_clock()
            try:
                close()
            finally:
                acc.pool_app[acc.ident()] += acc.cpu_clock() - t0


def install(acc: Accounts) -> None:
    """Wrap the node's functions so that ``acc`` sees each phase (stamped) or nothing (plain)."""
    if not acc.stamped:
        return
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from geonode.web import handler as handler_mod
    from geonode.web import options, strict, wsgi_host

    push, pop = acc.push, acc.pop

    def phase(name: str, func: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            push(name)
            try:
                return func(*args, **kw)
            finally:
                pop()

        wrapped.__wrapped__ = func  # type: ignore[attr-defined]
        return wrapped

    H = handler_mod.Handler
    orig_handle, orig_response = H.handle, H.handle_one_response

    def handle(self: Any) -> Any:
        # The connection's greenlet: what no other phase claims is request parsing.
        push("parse")
        try:
            return orig_handle(self)
        finally:
            pop()

    def handle_one_response(self: Any) -> Any:
        push("response write")
        try:
            return orig_response(self)
        finally:
            acc.responses += 1
            pop()

    H.handle = handle
    H.handle_one_response = handle_one_response
    orig_respond = getattr(H, "_respond", None)
    if orig_respond is not None:
        # the lean request loop's response (issue 15, fourth pass): pywsgi's
        # handle_one_response is not called for the requests it serves
        def respond(self: Any, *args: Any) -> Any:
            push("response write")
            try:
                return orig_respond(self, *args)
            finally:
                acc.responses += 1
                pop()

        H._respond = respond
    H.start_response = phase("response write", H.start_response)

    # Everything the handler calls as "the application" is an app layer; the response write
    # phase continues below it only where the layers return.
    DispatcherMiddleware.__call__ = phase("dispatch", DispatcherMiddleware.__call__)
    options.AccessLog.__call__ = phase("access log", options.AccessLog.__call__)
    if hasattr(options, "_Counted"):
        options._Counted.close = phase("access log", options._Counted.close)
    wsgi_host.spool_body = phase("spool", wsgi_host.spool_body)
    wsgi_host.WSGIHost.__call__ = phase("hand-off (hub)", wsgi_host.WSGIHost.__call__)

    orig_init = wsgi_host.WSGIHost.__init__

    def init(self: Any, app: Any, *args: Any, **kw: Any) -> None:
        orig_init(self, _timed_app(app, acc), *args, **kw)

    wsgi_host.WSGIHost.__init__ = init

    for name in ("check_request_line", "framing", "check_status", "check_response_headers"):
        setattr(strict, name, acc.count(name, getattr(strict, name)))
    if hasattr(handler_mod, "check_request_line"):  # (the lean loop's own import)
        handler_mod.check_request_line = acc.count("check_request_line",
                                                   handler_mod.check_request_line)
    for name in ("clip_body", "check_body_complete"):
        setattr(strict.StrictHTTP, name, acc.count(name, getattr(strict.StrictHTTP, name)))


def _timed_app(app: Any, acc: Accounts) -> Any:
    # CPU clock on the pool: an app call there may be preempted or wait for the GIL
    hub_ident, ident, clock = acc.hub_ident, acc.ident, acc.cpu_clock

    def timed(environ: dict, start_response: Any) -> Any:
        if ident() == hub_ident:  # greenlet mode
            acc.push("app (hub)")
            try:
                return app(environ, start_response)
            finally:
                acc.pop()
        me = ident()
        t0 = clock()
        try:
            result = app(environ, start_response)
        finally:
            acc.pool_app[me] += clock() - t0
            acc.pool_apps[me] += 1
        if type(result) is list or type(result) is tuple:
            return result
        return _TimedIter(result, acc)

    return timed


def serve(args: argparse.Namespace) -> int:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.server import StreamServer

    acc_box: list[Accounts] = []
    base: dict = {}

    def control(sock: Any, _addr: Any) -> None:
        f = sock.makefile("rwb")
        for line in f:
            cmd = line.strip().decode()
            if cmd == "start":
                acc = acc_box[0]
                acc.reset()
                base["threads"] = thread_stats()
                reply: dict = {"ok": True}
            elif cmd == "stop":
                after = thread_stats()
                acc = acc_box[0]
                rep = acc.report()
                reply = {"threads": {tid: {k: v - base["threads"].get(tid, {}).get(k, 0)
                                           for k, v in st.items()}
                                     for tid, st in after.items()},
                         "main_tid": str(os.getpid()), **rep}
            else:
                reply = {"error": cmd}
            f.write(json.dumps(reply).encode() + b"\n")
            f.flush()

    ctl = StreamServer(("127.0.0.1", args.control), control)
    ctl.start()

    def hooks() -> None:
        acc_box.append(Accounts(args.stamped))
        install(acc_box[0])

    gevent.get_hub()  # the hooks need the hub of this (main) thread
    hooks()
    try:
        from geonode.node import main as start  # the layout since 2026-12 (issue 10)
    except ImportError:
        from geonode.cli import start  # type: ignore[attr-defined,no-redef]
    return start(args.config, "info")


# ============================================================================================
# The orchestrator
# ============================================================================================

def _ctl(port: int, cmd: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(cmd.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"control connection closed during {cmd!r}")
            buf += chunk
    return json.loads(buf)


def _callgrind(srv: Any, *args: str) -> str:
    out = subprocess.run(["callgrind_control", *args, str(srv.proc.pid)], capture_output=True,
                         text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(f"callgrind_control {args}: {out.stdout} {out.stderr}")
    return out.stdout


def _callgrind_dump(srv: Any) -> int:
    """Instructions since the last zeroing, all threads: dump, read the newest dump's totals."""
    folder = Path(srv.cwd)
    before = set(folder.glob("callgrind.out*"))
    _callgrind(srv, "-d")
    _callgrind(srv, "-i", "off")
    new = sorted(set(folder.glob("callgrind.out*")) - before, key=lambda p: p.stat().st_mtime)
    total = 0
    for f in new:
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                total += int(line.split()[1])
                break
        if not os.environ.get("KEEP_CALLGRIND"):
            f.unlink()
    return total


def per_request(res: dict, requests: int, tick_ns: float) -> dict[str, float]:
    """One measurement window's figures, µs per request."""
    n = max(requests, 1)
    out: dict[str, float] = {}
    threads = res["threads"]
    main = res["main_tid"]
    hub = threads.get(main, {})
    others = {t: st for t, st in threads.items() if t != main}
    # Pool threads: every other thread that ran at all (the nodes here start no others).
    out["hub thread"] = hub.get("cpu_ns", 0) / n / 1e3
    out["pool threads"] = sum(st["cpu_ns"] for st in others.values()) / n / 1e3
    out["total"] = out["hub thread"] + out["pool threads"]
    out["hub system"] = hub.get("stime", 0) * tick_ns / n / 1e3
    out["pool system"] = sum(st["stime"] for st in others.values()) * tick_ns / n / 1e3
    out["hub ctx switches"] = (hub.get("vcs", 0) + hub.get("nvcs", 0)) / n
    out["pool ctx switches"] = sum(st["vcs"] + st["nvcs"] for st in others.values()) / n
    out["pool threads used"] = sum(1 for st in others.values() if st["cpu_ns"] > 0)
    if res.get("boundary_ns"):
        k = res["boundary_ns"]
        ns = dict(res["ns"])
        segs = res["segments"]
        corrected = {p: v - segs.get(p, 0) * k for p, v in ns.items()}
        strict_total = 0.0
        cost = res["strict_cost_ns"]
        for fname, phase, calls in res["strict_calls"]:
            c = cost.get(fname, 0.0) * calls
            corrected[phase] = corrected.get(phase, 0.0) - c
            strict_total += c
        # Wall-clock segments include moments the thread was off the CPU (preempted for less
        # than SEGMENT_CAP_NS, or waiting for the GIL): the handler greenlets' phases are
        # scaled to what the hub thread really used outside its own greenlet (CPU clock).
        c = res.get("cpu_clock_ns", 0.0)
        switches = res.get("switches", 0)
        loop = res.get("loop_cpu_ns", 0) - switches * c / 2
        instr = sum(segs.values()) * k + switches * c
        handler_cpu = out["hub thread"] * n * 1e3 - loop - instr
        walls = {p: max(corrected.get(p, 0.0), 0.0) for p in PHASES
                 if p not in ("app", "pool overhead", "hub loop", "strict checks")}
        scale = (handler_cpu - strict_total) / max(sum(walls.values()), 1.0)
        for p, v in walls.items():
            out[p] = v * scale / n / 1e3
        out["strict checks"] = strict_total / n / 1e3
        out["hub loop"] = loop / n / 1e3
        out["instrumentation"] = instr / n / 1e3
        out["wall scale"] = scale
        # two CPU clock reads per app call, about half of each inside
        calls = sum(res["pool_apps"].values())
        app = sum(res["pool_app_ns"].values()) - calls * res.get("cpu_clock_ns", 0.0)
        out["app"] = app / n / 1e3
        out["pool overhead"] = out["pool threads"] - out["app"]
        out["boundaries"] = sum(segs.values()) / n
        out["dropped"] = sum(res.get("dropped", {}).values()) / n
        out["responses seen"] = res["responses"] / n
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--control", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stamped", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--code", action="append", metavar="NAME=DIR",
                   help="a geonode package to measure (PYTHONPATH=DIR); repeat to compare; "
                        "default: this checkout")
    p.add_argument("--app", choices=("hello", "flask"), default="hello")
    p.add_argument("--conns", default="1,10,50", help="wrk -c values (comma-separated)")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--access-log", action="store_true", help="options.access_log on")
    p.add_argument("--options", default="{}",
                   help="JSON object merged into the web transport's options (e.g. "
                        "'{\"keepalive_timeout\": null}')")
    p.add_argument("--bare", action="store_true",
                   help="paths / and ws only (services every checkout since 2026-11 knows: "
                        "for --code DIRs of old commits)")
    p.add_argument("--greenlet", action="store_true",
                   help='also rows with "threads": false (the app on the hub)')
    p.add_argument("--kinds", default="plain,stamped",
                   help="plain (measured from outside only), stamped (phases), or both")
    p.add_argument("--callgrind", action="store_true",
                   help="instead: one process per code under valgrind's callgrind, reporting "
                        "instructions per request (user space, every thread; steady on a busy "
                        "machine); use a longer --duration (valgrind runs ~50x slower)")
    p.add_argument("--json", help="write every window's figures here")
    args = p.parse_args(argv)
    if args.serve:
        return serve(args)

    import common
    from run import node_config

    common.require_wrk()
    work = common.WORK / "profile" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    codes = []
    for spec in args.code or [f"this={HERE.parents[1]}"]:
        name, _, d = spec.partition("=")
        codes.append((name, str(Path(d).resolve())))
    modes = ["threads"] + (["greenlet"] if args.greenlet else [])
    kinds = (["callgrind"] if args.callgrind else
             args.kinds.split(","))
    conns = [int(c) for c in args.conns.split(",")]
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")

    servers = []
    for code, d in codes:
        for mode in modes:
            for kind in kinds:
                name = f"{code}/{mode}/{kind}"
                port, cport = common.free_port(), common.free_port()
                cfg = node_config(port, hello=args.app == "hello")
                t = cfg["workers"][0]["transports"][0]
                if args.access_log:
                    t.setdefault("options", {})["access_log"] = True
                t.setdefault("options", {}).update(json.loads(args.options))
                if args.bare:
                    t["paths"] = {k: v for k, v in t["paths"].items() if k in ("/", "ws")}
                if mode == "greenlet":
                    t["paths"]["/"]["threads"] = False
                path = common.write_config(work / name.replace("/", "-"), "node.json", cfg)
                cmd = [common.PY, str(Path(__file__).resolve()), "--serve", "--config",
                       str(path), "--control", str(cport)] + (["--stamped"] if kind == "stamped"
                                                              else [])
                if kind == "callgrind":
                    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={path.parent / 'callgrind.out'}", *cmd]
                srv = common.Server(name, cmd, path.parent, port, path.parent / "server.log",
                                    env={"PYTHONPATH": d})
                servers.append((srv, cport))
    results: dict[str, dict[int, list[dict]]] = {s.name: defaultdict(list) for s, _ in servers}
    try:
        for srv, cport in servers:
            srv.start(lambda s=srv, c=cport: common.port_open(c) and
                      common.http_status(s.url, timeout=5) == 200, timeout=300)
            common.wrk(srv.url, 1, max(conns), 1.0)  # warm-up
        for r in range(args.rounds):
            for c in conns:
                for srv, cport in servers:
                    _ctl(cport, "start")
                    if args.callgrind:
                        _callgrind(srv, "-i", "on")
                        _callgrind(srv, "-z")
                    w = common.wrk(srv.url, 1, c, args.duration)
                    if args.callgrind:
                        ir = _callgrind_dump(srv)
                    res = _ctl(cport, "stop")
                    fig = per_request(res, w.requests, tick_ns)
                    if args.callgrind:
                        fig["instructions"] = ir / max(w.requests, 1)
                    fig["req/s"] = w.rps
                    fig["wrk cores"] = w.cpu
                    results[srv.name][c].append(fig)
                    extra = (f"  instrumentation {fig['instrumentation']:4.1f}"
                             if "instrumentation" in fig else "")
                    if args.callgrind:
                        extra = f"  {fig['instructions']:9.0f} instructions/req"
                    print(f"round {r + 1}  -c{c:<4} {srv.name:<28} {w.rps:8.0f} req/s  "
                          f"{fig['total']:6.1f} µs CPU/req (hub {fig['hub thread']:5.1f}, pool "
                          f"{fig['pool threads']:5.1f}){extra} {w.problems}", flush=True)
    finally:
        for srv, _ in servers:
            srv.stop()

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    names = [s.name for s, _ in servers]
    for c in conns:
        print(f"\n== -c{c}: µs of CPU per request (medians of {args.rounds} rounds of "
              f"{args.duration:g} s; app {args.app}"
              f"{', access log' if args.access_log else ''}) ==")
        cols = [n for n in names if n.endswith("/stamped")]
        plain = [n for n in names if n.endswith("/plain")]
        med = {n: {k: statistics.median(f[k] for f in results[n][c])
                   for k in results[n][c][0]} for n in names}
        short = [n.rsplit("/", 1)[0] for n in cols]
        if cols:
            print(f"{'phase':<34}" + "".join(f"{s:>18}" for s in short))
        for ph in PHASES if cols else ():
            if all(abs(med[n].get(ph, 0.0)) < 0.05 for n in cols):
                continue
            print(f"{ph:<34}" + "".join(f"{med[n].get(ph, 0.0):>18.1f}" for n in cols))
        rows = [("= total (hub + pool threads)", lambda m: m["total"] - m["instrumentation"]),
                ("  (instrumentation taken off)", lambda m: m["instrumentation"]),
                ("  (boundaries per request)", lambda m: m["boundaries"]),
                ("  (segments dropped per 1000 req)", lambda m: m["dropped"] * 1000),
                ("  (wall-clock phases scaled by)", lambda m: m["wall scale"])]
        for label, f in rows if cols else ():
            print(f"{label:<34}" + "".join(f"{f(med[n]):>18.1f}" for n in cols))
        grind = [n for n in names if n.endswith("/callgrind")]
        if grind:
            print(f"{'instructions per request':<34}" + "".join(
                f"{n.rsplit('/', 1)[0]:>18}" for n in grind))
            print(f"{'(callgrind, all threads)':<34}" + "".join(
                f"{med[n]['instructions']:>18.0f}" for n in grind))
        if plain:
            print(f"\n{'plain process':<34}" + "".join(
                f"{n.rsplit('/', 1)[0]:>18}" for n in plain))
            for key in ("total", "hub thread", "pool threads", "hub system", "pool system",
                        "hub ctx switches", "pool ctx switches", "pool threads used", "req/s",
                        "wrk cores"):
                print(f"{key:<34}" + "".join(f"{med[n][key]:>18.2f}" for n in plain))
    print(f"\nconfigs and server logs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
