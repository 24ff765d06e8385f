"""The private and internal APIs of gevent, gevent-websocket, werkzeug and gunicorn that geonode
relies on still exist and still behave as geonode assumes.

geonode's handler and strict mixin override pywsgi's ``WSGIHandler`` request loop
(geonode/web/handler.py, strict.py), its server subclasses pywsgi's ``WSGIServer`` (server.py,
limits.py), the WSGI host feeds gevent's ThreadPool queue and wakes the hub with libev watchers
(wsgi_host.py), the dev server runs werkzeug's stat reloader loop (dev.py) and the gunicorn
worker extends gunicorn's gevent worker (gunicorn.py). None of that is public API: a new
release may rename it without notice. pyproject.toml bounds these dependencies below their next
major version; this file is what to run before raising a bound. Each check names the geonode
module that needs it, so a failure says where to look.
"""

from __future__ import annotations

import inspect
import os
import threading
import time

import gevent
import pytest
from support.router import green_wait_for

pytestmark = pytest.mark.inprocess


def source(obj) -> str:
    return inspect.getsource(obj)


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# -- gevent.pywsgi: the handler and strict mixin (web/handler.py, web/strict.py) -------------

#: WSGIHandler methods geonode overrides or calls, with the parameters it passes
HANDLER_METHODS = {
    "handle": ["self"],
    "handle_one_request": ["self"],
    "handle_one_response": ["self"],
    "read_requestline": ["self"],
    "read_request": ["self", "raw_requestline"],
    "get_environ": ["self"],
    "run_application": ["self"],
    "start_response": ["self", "status", "headers", "exc_info"],
    "write": ["self", "data"],
    "process_result": ["self"],
    "finalize_headers": ["self"],
    "log_request": ["self"],
    "log_error": ["self", "msg"],
    "_write": ["self", "data"],
    "_write_with_headers": ["self", "data"],
    "_sendall": ["self", "data"],
    "_handle_client_error": ["self", "ex"],
}

#: WSGIHandler instance attributes geonode reads or sets (assigned in pywsgi's own code)
HANDLER_ATTRIBUTES = [
    "rfile", "socket", "server", "client_address", "requestline", "command", "path",
    "request_version", "headers", "content_length", "close_connection", "environ",
    "wsgi_input", "headers_sent", "provided_content_length", "code", "status",
    "response_headers", "response_use_chunked", "response_length", "result",
]


@pytest.mark.parametrize("name", sorted(HANDLER_METHODS))
def test_pywsgi_handler_methods(name):
    from gevent.pywsgi import WSGIHandler

    fn = getattr(WSGIHandler, name, None)
    assert callable(fn), f"gevent.pywsgi.WSGIHandler.{name} is gone (geonode/web/handler.py)"
    want = HANDLER_METHODS[name]
    assert params(fn)[:len(want)] == want, (name, params(fn))


def test_pywsgi_handler_attributes():
    from gevent.pywsgi import WSGIHandler

    src = source(WSGIHandler)
    missing = [a for a in HANDLER_ATTRIBUTES if f"self.{a}" not in src]
    assert not missing, f"pywsgi's handler no longer sets {missing} (geonode/web/strict.py)"
    # MessageClass(rfile, 0) builds the request headers (geonode's RequestHeaders.parse)
    assert "self.MessageClass(self.rfile" in src
    # _handle_client_error's answer is (status, body bytes) for the server to write
    assert "_handle_client_error(" in src and "_send_error_response_if_possible" in src


def test_pywsgi_module_names():
    from gevent import pywsgi

    assert isinstance(pywsgi.MAX_REQUEST_LINE, int)             # web/strict.py
    # web/strict.py builds the environ and the Date header as pywsgi does, with its helpers
    assert pywsgi.unquote_latin1("/a%e9") == "/a\xe9"
    assert pywsgi.format_date_time(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert callable(pywsgi.Input)
    # optional (getattr with a default): web/wsgi_host.py tells body errors by it
    assert getattr(pywsgi, "_InvalidClientInput", ValueError) is not None


def test_pywsgi_input_internals():
    """web/strict.py's _NoDrainOnClose wraps wsgi.input and calls its private drain."""
    from gevent.pywsgi import Input

    assert callable(getattr(Input, "_discard", None))
    src = source(Input)
    for attr in ("_chunked_input_error", "socket", "content_length", "chunked_input"):
        assert f"self.{attr}" in src, attr


def test_pywsgi_server_hooks():
    """web/server.py overrides do_handle and wrap_socket_and_handle; web/limits.py replaces
    the server's full() and relies on the accept loop asking it before each accept()."""
    from gevent import baseserver, pywsgi, server

    for name, want in (("do_handle", ["self"]), ("wrap_socket_and_handle",
                                                  ["self", "client_socket", "address"]),
                       ("handle", ["self"])):
        fn = getattr(pywsgi.WSGIServer, name)
        assert params(fn)[:len(want)] == want, (name, params(fn))
    assert callable(getattr(baseserver.BaseServer, "full", None))
    assert "self.full()" in source(baseserver.BaseServer)
    sig = params(pywsgi.WSGIServer.__init__)
    for kw in ("listener", "application", "spawn", "log", "error_log", "environ",
               "handler_class"):
        assert kw in sig, kw
    assert "self.ssl_args" in source(server.StreamServer)      # wrap_socket(sock, **ssl_args)
    assert "self.wrap_socket" in source(server.StreamServer)  # set for TLS in __init__


def test_server_closes_the_connection_socket_a_makefile_reader_defers_it():
    """web/handler.py's detach_websocket: pywsgi closes a handler's socket only while it is
    set, the server closes the connection's socket when its greenlet ends (do_close), and a
    gevent socket closes only once the readers ``makefile`` made of it are closed too."""
    from gevent import baseserver, pywsgi, server, socket

    assert "if self.socket is not None" in source(pywsgi.WSGIHandler.handle)
    assert "close(*args_tuple)" in source(baseserver._handle_and_close_when_done)
    assert "sock.close()" in source(server.StreamServer.do_close)
    a, b = socket.socketpair()
    try:
        hold = a.makefile("rb", buffering=0)
        a.close()   # the server's close: deferred while the reader is open
        b.sendall(b"x")
        assert a.recv(1) == b"x"
        hold.close()
        assert a.fileno() == -1
    finally:
        a.close()
        b.close()


def test_geventwebsocket_handler_is_a_pywsgi_handler():
    """web/handler.py's Handler is a WebSocketHandler for code that checks isinstance."""
    from gevent.pywsgi import WSGIHandler
    from geventwebsocket.handler import WebSocketHandler

    assert issubclass(WebSocketHandler, WSGIHandler)
    for name in ("run_application", "start_response", "log_request"):
        assert name in vars(WebSocketHandler), name


def test_gevent_socket_timeout_slot_is_writable():
    """web/strict.py sets ``sock.timeout`` directly (settimeout costs 8 times as much)."""
    from gevent import socket

    a, b = socket.socketpair()
    try:
        a.timeout = 0.25
        assert a.gettimeout() == 0.25
    finally:
        a.close()
        b.close()


# -- gevent's hub, loop and thread pool (web/wsgi_host.py, transport/, websocket/) -----------

def test_loop_async_watcher_wakes_a_waiter_from_a_thread():
    """wsgi_host's _Channel: ``loop.async_()`` started with a callback, ``send()`` from a
    worker thread, a ``gevent.hub.Waiter`` switched by the callback, ``ref`` togglable."""
    from gevent.hub import Waiter

    hub = gevent.get_hub()
    watcher = hub.loop.async_()
    waiter = Waiter(hub)
    watcher.start(lambda: waiter.switch("woken"))
    try:
        threading.Thread(target=watcher.send).start()
        with gevent.Timeout(5):
            assert waiter.get() == "woken"
        watcher.ref = False
        watcher.ref = True
    finally:
        watcher.stop()
        watcher.close()


def test_loop_timer_and_callbacks():
    """wsgi_host's backlog timer, the router's call timeouts, the transports' resumes:
    ``loop.timer(after, repeat)``, ``run_callback`` and ``run_callback_threadsafe``."""
    loop = gevent.get_hub().loop
    fired: list = []
    timer = loop.timer(0.01, 0.01)
    timer.start(lambda: fired.append("timer"))
    loop.run_callback(fired.append, "callback")
    threading.Thread(target=loop.run_callback_threadsafe, args=(fired.append, "thread")).start()
    try:
        green_wait_for(lambda: {"timer", "callback", "thread"} <= set(fired), 5,
                       "the timer and both callbacks")
    finally:
        timer.stop()
        timer.close()


def test_gevent_socket_wraps_a_nonblocking_os_socket():
    """websocket/connection.py's send_nowait writes through a gevent socket's ``_sock`` (the
    OS socket, non-blocking under gevent): it must raise BlockingIOError when full, never
    block."""
    import _socket

    from gevent import socket

    a, b = socket.socketpair()
    try:
        raw = a._sock
        assert isinstance(raw, _socket.socket)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(100_000):   # bounded: fills any send buffer
                sent += raw.send(b"x" * 65536)
        assert sent > 0
    finally:
        a.close()
        b.close()


def test_loop_iteration_counts_passes():
    """handoff.admit and queue._pace tell passes of the loop apart by ``loop.iteration``."""
    loop = gevent.get_hub().loop
    first = loop.iteration
    gevent.sleep(0.001)
    assert isinstance(first, int) and loop.iteration != first


def test_threadpool_task_queue_takes_tasks_directly():
    """wsgi_host._submit puts ``(func, args, kwargs, result)`` tuples on the pool's
    task_queue (no ThreadResult per request), reads ``task_queue._queue`` and
    ``unfinished_tasks`` for its backlog, and sizes the pool itself."""
    from gevent.threadpool import ThreadPool

    done = threading.Event()
    ran: list = []

    class Result:  # what wsgi_host's _NoResult provides
        def set(self, value):
            ran.append(value)
            done.set()

        def handle_error(self, context, exc_info):
            ran.append(exc_info)
            done.set()

    pool = ThreadPool(maxsize=2)
    try:
        assert pool.size == 0 and pool.maxsize == 2
        queue = pool.task_queue
        task = (lambda a, b=0: a + b, (40,), {"b": 2}, Result())
        queue.put(task)
        assert queue.unfinished_tasks == 1
        assert queue._queue[0] is task          # oldest first, as _check_backlog reads it
        pool.size = 1                           # starts a thread: it takes the task
        green_wait_for(done.is_set, 5, "the pool thread to run the task", interval=0.005)
        assert ran == [42]
    finally:
        pool.kill()


# -- werkzeug's stat reloader (dev.py) --------------------------------------------------------

def test_werkzeug_stat_reloader_loop(tmp_path):
    """geonode's dev server subclasses StatReloaderLoop (its trigger_reload would exit the
    process), sets ``extra_files`` and ``mtimes`` and calls ``run_step`` itself."""
    from werkzeug._reloader import StatReloaderLoop

    assert {"extra_files", "exclude_patterns", "interval"} <= set(
        params(StatReloaderLoop.__init__))
    seen: list = []

    class Loop(StatReloaderLoop):
        def trigger_reload(self, filename: str) -> None:
            seen.append(filename)

    watched = tmp_path / "app.py"
    watched.write_text("x = 1\n")
    loop = Loop(extra_files=[str(watched)], interval=0.1)
    loop.__enter__()
    try:
        loop.extra_files = {str(watched)}
        loop.mtimes = {}
        loop.run_step()                                   # baseline
        later = time.time() + 5
        os.utime(watched, (later, later))
        loop.run_step()
        assert str(watched) in seen
        assert callable(loop.run)
    finally:
        loop.__exit__(None, None, None)


# -- gunicorn's gevent worker (gunicorn.py) ---------------------------------------------------

def test_gunicorn_gevent_worker_internals():
    pytest.importorskip("gunicorn")
    from gunicorn import arbiter
    from gunicorn.http.wsgi import base_environ
    from gunicorn.sock import ssl_context
    from gunicorn.workers import base, ggevent

    assert isinstance(ggevent.VERSION, str)
    assert issubclass(ggevent.PyWSGIHandler, ggevent.pywsgi.WSGIHandler)
    assert issubclass(ggevent.PyWSGIServer, ggevent.pywsgi.WSGIServer)
    worker = ggevent.GeventPyWSGIWorker
    for name in ("init_process", "run", "handle_exit", "notify", "patch"):
        assert callable(getattr(worker, name, None)), name
    assert params(worker.handle_exit) == ["self", "sig", "frame"]
    assert worker.server_class is not None and worker.wsgi_handler is not None
    base_src = source(base.Worker)
    for attr in ("self.alive", "self.sockets", "self.cfg", "self.wsgi", "self.log",
                 "self.pid"):
        assert attr in base_src, attr
    assert "self.worker_connections" in source(ggevent)
    # the master calls the worker class's check_config once (geonode's warnings)
    assert "check_config(" in source(arbiter)
    assert params(base_environ) == ["cfg"] and params(ssl_context) == ["conf"]


def test_gunicorn_settings_geonode_reads():
    pytest.importorskip("gunicorn")
    from gunicorn.config import KNOWN_SETTINGS, Config

    names = {s.name for s in KNOWN_SETTINGS}
    assert {"graceful_timeout", "keepalive", "workers", "preload_app", "wsgi_app",
            "default_proc_name", "worker_connections"} <= names
    assert hasattr(Config, "is_ssl")
    # support/nodes.py turns gunicorn's control socket off where the flag exists
    flags = {f for s in KNOWN_SETTINGS for f in (getattr(s, "cli", None) or ())}
    assert "--graceful-timeout" in flags and "--keep-alive" in flags
