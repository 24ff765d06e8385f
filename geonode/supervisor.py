"""``--processes N``: N node processes sharing every endpoint, under one supervising parent.

The parent imports no app code and runs no gevent hub. It

1. refuses a config it cannot split: a router worker that serves WAMP (``wamp_without_backplane``)
   without ``options.backplane`` would be N separate routers (exit 1, one line, nothing bound);
2. opens every endpoint itself (so a busy port is one error before any child starts, and port 0
   means one port for all);
3. starts N children (``python -m geonode start ...`` with the listening sockets inherited,
   ``geonode.endpoints.LISTEN_FDS_ENV``); each builds the node and serves on those sockets;
4. restarts a child that dies (backoff while it keeps dying young; each death logged with its
   exit status or signal), gives up with exit 1 only when a child of the first start fails
   before it ever served (a config or app error: restarting cannot help);
5. on SIGTERM/SIGINT closes its own copies of the sockets, passes SIGTERM to every child (each
   drains as a single node does: ``geonode.node``), waits for them within the shutdown timeout
   plus a margin, then SIGKILLs what is left; a second signal is passed on too (the children's
   "stop now"). Every child is reaped: no zombies;
6. on SIGHUP replaces the children one at a time (new code, a re-read config): the new process
   takes the same sockets, and only once it is ready is the old one stopped (its graceful
   drain), so no client is refused. A replacement that fails before it is ready leaves the old
   process serving and ends the reload. TLS certificates are re-read (the child builds its TLS
   context); the listening sockets stay the parent's: a changed port needs a restart.

How connections are spread (``LISTEN_MODES``, measured in bench/cluster/accept_spread.py):
``reuseport`` (default) gives every child its own listening socket on the same port
(SO_REUSEPORT): the kernel hashes each new connection to one of them, an even spread whatever
the children are doing. All those sockets are opened by the parent and stay open in it, so a
child that dies loses nothing: connections queued on its socket wait for its successor.
``shared`` gives every child the one socket: every child's event loop wakes for each new
connection and the first to accept wins, which favours whichever child is idle at that moment
and under a burst of connects lets one child take most of them (gevent accepts up to 100 per
wake-up). Unix sockets have no SO_REUSEPORT balancing: they are always shared.

Readiness: the children report ``READY=1`` over the sd_notify protocol to a socket of the
parent's (``geonode.sdnotify``); once all N have, the parent logs "ready" and tells systemd.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geonode import sdnotify
from geonode.config.model import Endpoint, NodeModel, wamp_without_backplane
from geonode.endpoints import LISTEN_FDS_ENV, EndpointError, tcp_listener, unix_listener
from geonode.node import SAME_STOP_WINDOW
from geonode.sdnotify import SUPERVISOR_ENV

__all__ = ["LISTEN_MODES", "SUPERVISOR_ENV", "run",
           "wamp_without_backplane"]

log = logging.getLogger("geonode.supervisor")

LISTEN_MODES = ("reuseport", "shared")
#: env var naming the listen mode (for measuring; the default is the better one)
LISTEN_MODE_ENV = "GEONODE_LISTEN_MODE"
#: a child that lived less than this counts as "died young": the next restart waits longer
YOUNG_SECONDS = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
#: beyond the children's own shutdown timeout, before the parent SIGKILLs them
KILL_MARGIN = 2.0

# ---- which configs can be split -------------------------------------------------------------

def backplane_refusal(model: NodeModel, n: int) -> str | None:
    """Why ``model`` cannot be served by ``n`` processes (one line), or None."""
    refused = wamp_without_backplane(model) if n > 1 else []
    if not refused:
        return None
    return (f"{', '.join(refused)}: --processes {n} needs {refused[0]}.options.backplane: this "
            "router worker serves WAMP, and without a backplane each process would be a "
            "separate router (run with --processes 1, or configure options.backplane)")


# ---- endpoints --------------------------------------------------------------------------------

def _endpoints(model: NodeModel) -> Iterator[tuple[str, Endpoint]]:
    for worker in model.workers:
        if worker.disabled:
            continue
        for transport in worker.transports:
            if transport.type in ("web", "rawsocket") and transport.endpoint.json_path:
                yield transport.endpoint.json_path, transport.endpoint


def open_listeners(model: NodeModel, config_dir: Path, n: int,
                   mode: str) -> dict[str, list[socket.socket]]:
    """Every endpoint's listening socket(s): N per TCP endpoint in ``reuseport`` mode (child i
    gets the i-th), else one shared by all. Closes what it opened on failure."""
    out: dict[str, list[socket.socket]] = {}
    try:
        for json_path, endpoint in _endpoints(model):
            if endpoint.type == "unix":
                sock, _ = unix_listener(endpoint, config_dir, json_path, plain=True)
                out[json_path] = [sock]
                continue
            first, where = tcp_listener(endpoint, json_path, plain=True,
                                        reuseport=mode == "reuseport")
            out[json_path] = [first]
            if mode == "reuseport":
                # Port 0 picked a free port: the others join that one.
                same = replace(endpoint, port=first.getsockname()[1])
                for _ in range(n - 1):
                    out[json_path].append(tcp_listener(same, json_path, plain=True,
                                                       reuseport=True)[0])
            log.info("listening on %s (%s, %d processes%s)", where, json_path.rsplit(".", 1)[0],
                     n, ", SO_REUSEPORT" if mode == "reuseport" else ", one shared socket")
    except BaseException:
        for socks in out.values():
            for s in socks:
                s.close()
        raise
    return out


# ---- children ---------------------------------------------------------------------------------

@dataclass
class Child:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ready: bool = False
    young_deaths: int = 0
    restart_at: float | None = None
    history: list[str] = field(default_factory=list)


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    def __init__(self, child_argv: list[str], n: int, listeners: dict[str, list[socket.socket]],
                 shutdown_timeout: float) -> None:
        self.child_argv = child_argv
        self.children = [Child(i + 1) for i in range(n)]
        self.listeners = listeners
        self.shutdown_timeout = shutdown_timeout
        self.stopping = False
        self.signals: list[int] = []
        self.node_ready = False
        self.failed = False
        self.deadline = float("inf")
        self.first_forward = 0.0
        self.force_at: float | None = None
        # SIGHUP: the slots still to replace, the one being replaced (its child, the old
        # process that serves until the new one is ready), old processes draining
        self.reload_queue: list[int] = []
        self.replacing: tuple[Child, subprocess.Popen | None] | None = None
        self.outgoing: list[tuple[int, subprocess.Popen]] = []
        self.notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # The abstract namespace: no file to clean up, nothing left behind by a SIGKILL.
        self.notify_name = f"@geonode-supervisor-{os.getpid()}-{os.urandom(4).hex()}"
        self.notify_sock.bind(b"\0" + self.notify_name[1:].encode())
        self.notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.notify_sock.setblocking(False)

    # -- children
    def spawn(self, child: Child) -> None:
        fds: dict[str, int] = {}
        for json_path, socks in self.listeners.items():
            sock = socks[(child.index - 1) % len(socks)]
            fds[json_path] = sock.fileno()
        env = dict(os.environ)
        env[LISTEN_FDS_ENV] = json.dumps(fds)
        env[sdnotify.ENV] = self.notify_name
        env[SUPERVISOR_ENV] = f"{os.getpid()}:{child.index}"
        # Its own process group: a Ctrl-C in the terminal reaches the parent only, which passes
        # it on once (the same signal twice would be "stop now" for the child).
        child.proc = subprocess.Popen(self.child_argv, env=env, pass_fds=list(fds.values()),
                                      process_group=0)
        child.started = time.monotonic()
        child.ready = False
        child.restart_at = None
        log.info("process %d started (pid %d)", child.index, child.proc.pid)

    def child_of(self, pid: int) -> Child | None:
        for c in self.children:
            if c.proc is not None and c.proc.pid == pid:
                return c
        return None

    def reap(self) -> None:
        for index, stopping in list(self.outgoing):
            if stopping.poll() is not None:
                self.outgoing.remove((index, stopping))
                log.info("process %d's previous pid %d %s", index, stopping.pid,
                         describe_status(stopping.returncode))
        waiting, previous = self.replacing or (None, None)
        if waiting is not None and previous is not None and previous.poll() is not None:
            log.warning("process %d's previous pid %d %s while its replacement started",
                        waiting.index, previous.pid, describe_status(previous.returncode))
            self.replacing = (waiting, None)
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            child.proc = None
            status = describe_status(proc.returncode)
            if self.replacing is not None and self.replacing[0] is child and not self.stopping:
                old = self.replacing[1]
                self.replacing = None
                self.reload_queue.clear()
                log.error("process %d's replacement (pid %d) %s before it was ready: the "
                          "reload stops%s", child.index, proc.pid, status,
                          f", pid {old.pid} keeps serving" if old is not None else "")
                if old is not None:
                    child.proc, child.ready = old, True
                    continue
            if self.stopping:
                log.log(logging.INFO if proc.returncode == 0 else logging.WARNING,
                        "process %d (pid %d) %s", child.index, proc.pid, status)
                continue
            if not child.ready and not self.node_ready:
                # The first start failed (config, app import, TLS files): every child would.
                log.error("process %d (pid %d) %s before it was ready: stopping",
                          child.index, proc.pid, status)
                self.failed = True
                self.begin_stop(None)
                continue
            lived = time.monotonic() - child.started
            child.young_deaths = child.young_deaths + 1 if lived < YOUNG_SECONDS else 0
            delay = 0.0 if not child.young_deaths else \
                min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (child.young_deaths - 1))
            log.warning("process %d (pid %d) %s after %.1f s; restarting it%s", child.index,
                        proc.pid, status, lived, f" in {delay:.1f} s" if delay else "")
            child.restart_at = time.monotonic() + delay

    def on_notify(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.notify_sock.recvmsg(
                    4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except BlockingIOError:
                return
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:struct.calcsize("3i")])[0]
            child = self.child_of(pid) if pid else None
            if child is None or b"READY=1" not in data.split(b"\n"):
                continue
            child.ready = True
            if self.replacing is not None and self.replacing[0] is child:
                old = self.replacing[1]
                self.replacing = None
                if old is not None and old.poll() is None:
                    old.send_signal(signal.SIGTERM)
                    self.outgoing.append((child.index, old))
                    assert child.proc is not None  # the replacement that said READY=1
                    log.info("process %d replaced: pid %d serves, pid %d stops", child.index,
                             child.proc.pid, old.pid)
                self.next_replacement()
            if not self.node_ready and all(c.ready for c in self.children):
                self.node_ready = True
                pids = ", ".join(str(c.proc.pid) for c in self.children if c.proc)
                log.info("ready: %d processes (pids %s)", len(self.children), pids)
                sdnotify.notify(f"READY=1\nSTATUS=serving with {len(self.children)} processes")

    # -- reload (SIGHUP)
    def begin_reload(self) -> None:
        if self.stopping:
            return
        if self.reload_queue or self.replacing is not None:
            log.warning("received SIGHUP: a reload is already under way")
            return
        if not self.node_ready:
            log.warning("received SIGHUP before the node was ready: ignored")
            return
        log.info("received SIGHUP: replacing the %d processes one at a time",
                 len(self.children))
        self.reload_queue = [c.index for c in self.children]
        self.next_replacement()

    def next_replacement(self) -> None:
        """Start the next slot's new process; the old one serves until it is ready."""
        while self.reload_queue:
            child = self.children[self.reload_queue.pop(0) - 1]
            if child.proc is None:
                continue  # dead, waiting for its restart: that one starts fresh anyway
            self.replacing = (child, child.proc)
            self.spawn(child)
            return
        log.info("reload done: %d processes replaced", len(self.children))

    # -- stop
    def begin_stop(self, signum: int | None) -> None:
        if not self.stopping:
            self.stopping = True
            sdnotify.notify("STOPPING=1")
            if signum is not None:
                log.info("received %s: stopping %d processes (up to %.0f s)",
                         signal.Signals(signum).name, len(self.children), self.shutdown_timeout)
            self.close_listeners()
            self.deadline = time.monotonic() + self.shutdown_timeout + KILL_MARGIN
            self.first_forward = time.monotonic()
        elif signum is not None:
            log.warning("received %s again (second signal): the processes stop now",
                        signal.Signals(signum).name)
            # A child takes a repeat within SAME_STOP_WINDOW for the same stop (the service
            # manager may have signalled it too): "stop now" must come after that.
            self.force_at = self.first_forward + SAME_STOP_WINDOW + 0.05
            return
        self.signal_children()

    def processes(self) -> list[subprocess.Popen]:
        """Every process of ours not yet reaped: the children, old ones being replaced."""
        procs = [c.proc for c in self.children if c.proc is not None]
        procs += [p for _, p in self.outgoing]
        if self.replacing is not None and self.replacing[1] is not None:
            procs.append(self.replacing[1])
        return procs

    def signal_children(self) -> None:
        self.reload_queue.clear()
        for c in self.children:
            c.restart_at = None
        for p in self.processes():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def close_listeners(self) -> None:
        for socks in self.listeners.values():
            for s in socks:
                if s.family == socket.AF_UNIX:
                    try:
                        os.unlink(s.getsockname())
                    except OSError:
                        pass
                s.close()

    # -- loop
    def run(self) -> int:  # noqa: C901 - the parent's one event loop: signals, notify socket, children, reload steps
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        old = {s: signal.signal(s, lambda signum, frame: self.signals.append(signum))
               for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)}
        sel = selectors.DefaultSelector()
        sel.register(rfd, selectors.EVENT_READ)
        sel.register(self.notify_sock, selectors.EVENT_READ)
        try:
            for c in self.children:
                self.spawn(c)
            while True:
                while self.signals:
                    signum = self.signals.pop(0)
                    if signum == signal.SIGHUP:
                        self.begin_reload()
                    elif signum != signal.SIGCHLD:
                        self.begin_stop(signum)
                self.reap()
                alive = self.processes()
                if self.stopping and not alive:
                    break
                now = time.monotonic()
                if self.stopping and now >= self.deadline:
                    for p in alive:
                        log.warning("pid %d still running: killing it", p.pid)
                        p.kill()
                    for p in alive:
                        p.wait()
                    self.deadline = float("inf")
                    continue
                timeout = 1.0
                for c in self.children:
                    if c.restart_at is not None:
                        if c.restart_at <= now:
                            self.spawn(c)
                        else:
                            timeout = min(timeout, c.restart_at - now)
                if self.force_at is not None:
                    if self.force_at <= now:
                        self.force_at = None
                        self.signal_children()
                    else:
                        timeout = min(timeout, self.force_at - now)
                if self.stopping:
                    timeout = min(timeout, max(0.0, self.deadline - now))
                for key, _ in sel.select(timeout):
                    if key.fileobj == rfd:
                        try:
                            while os.read(rfd, 512):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self.on_notify()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            sel.close()
            os.close(rfd)
            os.close(wfd)
            self.notify_sock.close()
            for p in self.processes():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if self.failed:
            return 1
        log.info("stopped")
        return 0


def run(cfg: Any, child_argv: list[str], n: int, shutdown_timeout: float) -> int:
    """Serve ``cfg`` with ``n`` processes running ``child_argv``; the exit status."""
    refusal = backplane_refusal(cfg.model, n)
    if refusal:
        log.error("%s", refusal)
        return 1
    mode = os.environ.get(LISTEN_MODE_ENV, "reuseport")
    if mode not in LISTEN_MODES:
        log.error("%s=%r: one of %s", LISTEN_MODE_ENV, mode, ", ".join(LISTEN_MODES))
        return 1
    try:
        listeners = open_listeners(cfg.model, Path(cfg.dir), n, mode)
    except EndpointError as e:
        log.error("%s", e)
        return 1
    if not listeners:
        log.warning("the config has no endpoint: the %d processes serve nothing", n)
    # A metrics scrape reaches one child: every child writes its samples to a shared folder
    # so that one answers for all (geonode.metrics). A folder of the user's is kept as is.
    from geonode.metrics import MULTIPROCESS_ENV

    own_dir = None
    if not os.environ.get(MULTIPROCESS_ENV):
        import tempfile

        own_dir = tempfile.mkdtemp(prefix="geonode-metrics-")
        os.environ[MULTIPROCESS_ENV] = own_dir
    try:
        return Supervisor(child_argv, n, listeners, shutdown_timeout).run()
    finally:
        if own_dir is not None:
            import shutil

            shutil.rmtree(own_dir, ignore_errors=True)


def child_setup() -> None:
    """In a supervised child: die with the parent (Linux PR_SET_PDEATHSIG), so a parent killed
    with SIGKILL leaves no child serving on its own."""
    raw = os.environ.pop(SUPERVISOR_ENV, "")
    if not raw:
        return
    parent = int(raw.split(":", 1)[0])
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
