"""WSGI Host Service over real sockets: thread pool, uploads, streaming, errors, greenlet mode."""

from __future__ import annotations

import ast
import hashlib
import os
import socket
import threading
import time

import pytest
import requests
from support import scaled, wait_for, web_node

#: how long the blocking views (/sleep, /stream's pause) take: every "meanwhile" bound is a
#: fraction of it, so a stalled hub (which holds others for all of it) still fails them
VIEW = scaled(1.0)
#: the greenlet stream's cooperative pause
GREEN = scaled(0.5)

APP = r'''
import hashlib
import time

from flask import Flask, Response, request
from gevent.monkey import get_original

# The node imports this module in its main (hub) thread; native ids tell threads apart even
# under monkey-patching (where threading.current_thread() is per greenlet).
native_ident = get_original("_thread", "get_ident")
MAIN = native_ident()
# The node monkey-patches time.sleep into a cooperative one: a truly blocking call (a C
# database driver, say) is the original.
blocking_sleep = get_original("time", "sleep")

app = Flask(__name__)

@app.route("/fast")
def fast():
    return "fast"

@app.route("/sleep")
def sleep():
    if "marker" in request.args:  # the test waits for this file: the view is running
        open(request.args["marker"], "w").close()
    # the scenario: a blocking call, which must not stall the hub
    blocking_sleep(float(request.args["s"]))
    return "slept"

@app.route("/upload", methods=["POST", "PUT"])
def upload():
    data = request.get_data()
    return {"n": len(data), "sha256": hashlib.sha256(data).hexdigest()}

@app.route("/stream")
def stream():
    pause = float(request.args["s"])
    def gen():
        yield "first;"
        time.sleep(pause)  # the scenario: iteration runs on the pool too
        yield "second;"
    return Response(gen(), mimetype="text/plain")

@app.route("/big-stream")
def big_stream():
    # Longer than what a producer may queue on its own: exercises the hand-back path.
    def gen():
        for i in range(300):
            yield (b"%06d" % i) * 1000
    return Response(gen(), mimetype="application/octet-stream")

CLOSED = []

@app.route("/endless")
def endless():
    def gen():
        try:
            while True:
                yield b"tick;" * 100
                time.sleep(0.02)  # the scenario: a stream that never ends
        finally:
            CLOSED.append(1)
    return Response(gen(), mimetype="text/plain")

@app.route("/closed")
def closed():
    return str(len(CLOSED))

@app.route("/thread")
def thread():
    return {"main": native_ident() == MAIN,
            "multithread": request.environ["wsgi.multithread"],
            "multiprocess": request.environ["wsgi.multiprocess"]}


BUSY = []


def cpu(environ, start_response):
    # CPU work under the GIL (a template render, say; 3 ms unless ?ms=N), then which pool
    # thread ran it
    ms = int(environ.get("QUERY_STRING", "").partition("ms=")[2] or 3)
    BUSY.append(ms)
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass
    BUSY.remove(ms)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(native_ident()).encode()]


def nap(environ, start_response):
    # a short blocking call (a database query, say): 6 ms unless ?ms=N
    time.sleep(int(environ.get("QUERY_STRING", "").partition("ms=")[2] or 6) / 1000)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(native_ident()).encode()]


def busy(environ, start_response):
    # (greenlet mode: answers while the pool's threads are busy) the calls of cpu() under way
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(sorted(BUSY)).encode()]


def boom(environ, start_response):
    raise ValueError("secret-detail-42")


def boom_midway(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    def gen():
        yield b"partial;"
        time.sleep(0.05)  # the scenario: the failure comes after the first chunk went out
        raise RuntimeError("midway failure")
    return gen()


def green(environ, start_response):
    import gevent
    gevent.sleep(0.01)  # the scenario: gevent-aware, a cooperative sleep in its greenlet
    body = repr((environ["wsgi.multithread"], native_ident() == MAIN)).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def green_stream(environ, start_response):
    import gevent
    from urllib.parse import parse_qs
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    def gen():
        yield b""  # empty chunks are skipped, never sent as a terminating chunk
        yield b"g1;"
        # the scenario: a cooperative pause, the node serves others meanwhile
        gevent.sleep(float(query["pause"][0]))
        yield b"g2;"
        yield b"g3;"
        if "fail" in query:
            raise RuntimeError("green midway failure")
    return gen()


def yields_str(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
    return [b"x"]


def bad_status(environ, start_response):
    start_response("OK", [])
    return [b"x"]


def no_start(environ, start_response):
    return [b"x"]


CONC = {"now": 0, "max": 0, "threads": set()}
CONC_LOCK = get_original("_thread", "allocate_lock")()


def conc(environ, start_response):
    # a 20 ms blocking call that records how many calls of it run at once, and on which threads
    with CONC_LOCK:
        CONC["now"] += 1
        CONC["max"] = max(CONC["max"], CONC["now"])
        CONC["threads"].add(native_ident())
    try:
        blocking_sleep(0.02)
    finally:
        with CONC_LOCK:
            CONC["now"] -= 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def conc_stats(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr((CONC["max"], len(CONC["threads"]))).encode()]


def write_legacy(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written;")
    return [b"returned;"]
'''


def wsgi(obj: str, **kw) -> dict:
    return {"type": "wsgi", "module": "hostapp", "object": obj, **kw}


@pytest.fixture(scope="module")
def node(start_module_node):
    paths = {"/": wsgi("app"), "boom": wsgi("boom"), "midway": wsgi("boom_midway"),
             "green": wsgi("green", threads=False), "legacy": wsgi("write_legacy"),
             "small": wsgi("app", maxthreads=2, minthreads=1),
             "str": wsgi("yields_str"), "badheader": wsgi("bad_header"),
             "badstatus": wsgi("bad_status"), "nostart": wsgi("no_start"),
             "greenstr": wsgi("yields_str", threads=False),
             "greenstream": wsgi("green_stream", threads=False), "cpu": wsgi("cpu"), "nap": wsgi("nap"),
             "busy": wsgi("busy", threads=False), "five": wsgi("conc", maxthreads=5),
             "fivestats": wsgi("conc_stats", threads=False)}
    cfg = web_node(paths, worker_options={"pythonpath": ["."]})
    cfg["workers"][0]["transports"].append({
        "type": "web",
        "endpoint": {"type": "tcp", "port": "$PORT2", "interface": "127.0.0.1"},
        "paths": {"/": wsgi("boom")},
        "options": {"display_tracebacks": True},
    })
    return start_module_node(cfg, files={"hostapp.py": APP}, nports=2)


def get(node, path: str, **kw) -> requests.Response:
    return requests.get(node.url + path, timeout=scaled(10) + VIEW, **kw)


def test_blocking_view_does_not_stall_others(node):
    results: dict = {}

    def slow():
        t0 = time.monotonic()
        results["slow"] = get(node, f"/sleep?s={VIEW}&marker=sleeping").text
        results["slow_t"] = time.monotonic() - t0

    th = threading.Thread(target=slow)
    th.start()
    wait_for(lambda: (node.dir / "sleeping").exists(), 10, "the blocking view to run")
    worst = 0.0
    for _ in range(10):
        t0 = time.monotonic()
        assert get(node, "/fast").text == "fast"
        worst = max(worst, time.monotonic() - t0)
    th.join()
    assert results["slow"] == "slept"
    assert results["slow_t"] >= 0.95 * VIEW
    # A stalled hub would hold a fast request until the view's sleep ends.
    assert worst < 0.6 * VIEW, f"a fast request took {worst:.2f}s while a view slept"


def test_blocking_views_run_in_parallel(node):
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(get(node, f"/sleep?s={VIEW}").text))
               for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["slept"] * 4
    assert time.monotonic() - t0 < 2.5 * VIEW  # not one after another (4 × VIEW)


def test_runs_on_a_pool_thread(node):
    assert get(node, "/thread").json() == {"main": False, "multithread": True,
                                          "multiprocess": False}


def test_maxthreads_limits_concurrency(node):
    # "small" has maxthreads 2: four views of VIEW s each need two rounds.
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(
        get(node, f"/small/sleep?s={VIEW}").text)) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    assert out == ["slept"] * 4
    assert 1.9 * VIEW < took < 3.5 * VIEW


def test_long_cpu_bound_call_does_not_hold_up_the_others(node):
    # One request holds the GIL 600 ms: its thread finishes nothing meanwhile, so the pool
    # adds a thread and the short requests behind it are served (taking turns at the GIL).
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("long", get(node, "/cpu/?ms=600")))
    th.start()
    deadline = time.monotonic() + 5
    while get(node, "/busy").text != "[600]":
        assert time.monotonic() < deadline, "the long call did not start"
    worst = 0.0
    for _ in range(5):
        t0 = time.monotonic()
        assert get(node, "/cpu/?ms=1").status_code == 200
        worst = max(worst, time.monotonic() - t0)
    th.join()
    assert out["long"].status_code == 200
    assert worst < scaled(0.4), f"a 1 ms request took {worst:.2f} s behind a 600 ms one"


def test_short_blocking_calls_spread_over_threads(node):
    # 30 clients, 10 requests each, to a view that blocks 10 ms. The threads keep finishing
    # calls, yet they leave the CPU unused while requests wait: the pool grows past the few
    # threads it runs freely (FREE_THREADS, 4) towards maxthreads (20): the calls wait in
    # parallel (4 threads would need 0.75 s).
    out: list = []

    def client() -> None:
        with requests.Session() as s:
            for _ in range(10):
                out.append(s.get(node.url + "/nap/?ms=10", timeout=10).text)

    threads = [threading.Thread(target=client) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 300
    assert len(set(out)) >= 8, f"300 blocking calls ran on {len(set(out))} threads"


def raw_get(node, path: str) -> bytes:
    """One request on its own connection, the whole answer (the server closes it)."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(30)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_maxthreads_holds_under_200_concurrent_requests(node):
    # 200 clients at once on a service with maxthreads 5 whose view blocks: the pool grows
    # (its threads are blocked while calls wait) but never past 5 threads or 5 calls at once,
    # and every request is answered.
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(raw_get(node, "/five/")))
               for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 200
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"ok") for r in out)
    most, used = ast.literal_eval(get(node, "/fivestats").text)  # (max calls at once, threads used)
    assert 2 <= most <= 5 and 2 <= used <= 5, (most, used)


def test_a_saturated_pool_does_not_stall_the_hub(node):
    # "small" (maxthreads 2): two views block, four more requests queue for its threads.
    # Meanwhile the hub serves every other service at once: it never waits for a pool.
    done: list = []
    clients = [threading.Thread(target=lambda i=i: done.append(
        get(node, f"/small/sleep?s={VIEW}&marker=saturated{i}").text)) for i in range(6)]
    for t in clients:
        t.start()
    wait_for(lambda: len(list(node.dir.glob("saturated*"))) >= 2, 10,
             "two blocking views to run")
    t0 = time.monotonic()
    worst = 0.0
    for path in ("/fast", "/green", "/busy", "/fast"):
        t1 = time.monotonic()
        assert get(node, path).status_code == 200
        worst = max(worst, time.monotonic() - t1)
    meanwhile = time.monotonic() - t0
    for t in clients:
        t.join()
    assert done == ["slept"] * 6
    assert worst < 0.5 * VIEW and meanwhile < VIEW, (worst, meanwhile)


def test_multi_megabyte_upload(node):
    data = os.urandom(5 * 1024 * 1024 + 123)
    r = requests.post(node.url + "/upload", data=data, timeout=scaled(20))
    assert r.json() == {"n": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_chunked_upload(node):
    parts = [os.urandom(70_000) for _ in range(20)]
    r = requests.put(node.url + "/upload", data=iter(parts), timeout=scaled(20))  # chunked encoding
    whole = b"".join(parts)
    assert r.json() == {"n": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_small_upload_and_empty_body(node):
    r = requests.post(node.url + "/upload", data=b"abc", timeout=scaled(5))
    assert r.json()["n"] == 3
    r = requests.post(node.url + "/upload", timeout=scaled(5))
    assert r.json()["n"] == 0


def test_truncated_body_gets_400(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nshort")
        s.shutdown(socket.SHUT_WR)
        out = s.recv(4096)
    assert out.startswith(b"HTTP/1.1 400")
    assert get(node, "/fast").text == "fast"


def test_streaming_chunks_arrive_before_generator_finishes(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /stream?s=%f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % VIEW)
        buf = b""
        while b"first;" not in buf:
            chunk = s.recv(4096)
            assert chunk
            buf += chunk
        first_at = time.monotonic() - t0
        # Meanwhile the node answers others: the generator's sleep is on the pool.
        t1 = time.monotonic()
        assert get(node, "/fast").text == "fast"
        assert time.monotonic() - t1 < 0.5 * VIEW
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        done_at = time.monotonic() - t0
    assert first_at < 0.7 * VIEW, first_at
    assert done_at >= 0.95 * VIEW
    assert b"second;" in buf and buf.rstrip().endswith(b"0")


def test_long_stream_complete_and_in_order(node):
    r = get(node, "/big-stream")
    assert r.content == b"".join((b"%06d" % i) * 1000 for i in range(300))


def test_app_exception_is_500_without_traceback(node):
    r = get(node, "/boom/x")
    assert r.status_code == 500
    assert "secret-detail-42" not in r.text
    assert "Traceback" not in r.text
    assert len(r.content) < 1000
    # Logged instead, and the node keeps serving.
    assert get(node, "/fast").text == "fast"
    node.wait_log("secret-detail-42", 3)
    assert "Traceback" in node.log()


@pytest.mark.parametrize("path", ["/str", "/badheader", "/badstatus", "/nostart", "/greenstr"])
def test_broken_app_answers_are_500(node, path):
    r = get(node, path)
    assert r.status_code == 500
    assert "Injected" not in r.headers
    assert get(node, "/fast").text == "fast"
    assert "failed with" not in node.log()  # pywsgi's own traceback printer was not involved


def test_display_tracebacks_shows_it(node):
    r = requests.get(f"http://127.0.0.1:{node.ports[1]}/", timeout=scaled(5))
    assert r.status_code == 500
    assert "secret-detail-42" in r.text
    assert "Traceback" in r.text


def test_exception_after_headers_closes_connection(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET /midway HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 200")
    assert b"partial;" in buf
    assert not buf.endswith(b"0\r\n\r\n")  # no clean end: the client can tell it broke
    assert get(node, "/fast").text == "fast"


def test_greenlet_mode(node):
    assert get(node, "/green").text == "(False, True)"


def test_greenlet_mode_streams(node):
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /greenstream?pause=%f HTTP/1.1\r\nHost: x\r\nConnection: close"
                  b"\r\n\r\n" % GREEN)
        buf = b""
        while b"g1;" not in buf:
            chunk = s.recv(4096)
            assert chunk
            buf += chunk
        # the first chunk did not wait for the pause
        assert time.monotonic() - t0 < 0.8 * GREEN
        assert get(node, "/fast").text == "fast"
        while chunk:
            chunk = s.recv(4096)
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 200")
    assert b"g1;" in buf and b"g2;" in buf and b"g3;" in buf
    assert buf.endswith(b"0\r\n\r\n")
    # An exception after the headers: the connection is dropped, no clean end.
    with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
        s.sendall(b"GET /greenstream?fail&pause=%f HTTP/1.1\r\nHost: x\r\n\r\n" % GREEN)
        buf = chunk = b"x"
        while chunk:
            chunk = s.recv(4096)
            buf += chunk
    assert b"g3;" in buf and not buf.endswith(b"0\r\n\r\n")
    assert get(node, "/fast").text == "fast"


def test_legacy_write_callable(node):
    assert get(node, "/legacy").text == "written;returned;"


def test_head_on_flask(node):
    r = requests.head(node.url + "/fast", timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "4"


def test_import_failure_exits_1_naming_module(start_node):
    cfg = web_node({"/": {"type": "wsgi", "module": "no_such_module_xyz", "object": "app"}})
    n = start_node(cfg, wait=False)
    assert n.proc.wait(scaled(20)) == 1
    out = n.log()
    assert "no_such_module_xyz" in out
    assert "sys.path" in out
    assert "workers[0].transports[0].paths./.module" in out or \
        "workers[0].transports[0].paths" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", n.port), timeout=1).close()


def test_error_at_import_and_missing_object(start_node):
    cfg = web_node({"a": {"type": "wsgi", "module": "okmod", "object": "nothere"}},
                   worker_options={"pythonpath": ["."]})
    n = start_node(cfg, files={"okmod.py": "app = None\n"}, wait=False)
    assert n.proc.wait(scaled(20)) == 1
    assert "nothere" in n.log() and "paths.a.object" in n.log()

    cfg = web_node({"/": {"type": "wsgi", "module": "badmod", "object": "app"}},
                   worker_options={"pythonpath": ["."]})
    n = start_node(cfg, files={"badmod.py": "raise RuntimeError('broken at import')\n"},
                   wait=False)
    assert n.proc.wait(scaled(20)) == 1
    assert "broken at import" in n.log() and "badmod" in n.log()


def test_client_disconnect_mid_stream_frees_the_thread(node):
    before = int(get(node, "/closed").text)
    for _ in range(3):  # more than "small"'s two threads: each must be given back
        with socket.create_connection(("127.0.0.1", node.port), timeout=scaled(5)) as s:
            s.sendall(b"GET /small/endless HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"tick;" in s.recv(4096)
    wait_for(lambda: int(get(node, "/closed").text) >= before + 3, 5,
             "the three generators to be closed", interval=0.05)
    assert get(node, "/small/fast").text == "fast"
