"""The WSGI host's thread pool in a process of its own: fork, trace hooks, batches.

Each test runs a short script in a fresh monkey-patched interpreter (the pool's threads and the
hub must not meet pytest's), calling the host the way pywsgi's handler does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import os, sys, threading, gevent
    from pathlib import Path
    from gevent.monkey import get_original
    from geonode.web.context import BuildContext
    from geonode.web.wsgi_host import build

    native_ident = get_original("_thread", "get_ident")
    HUB = native_ident()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"on a pool thread" if native_ident() != HUB else b"on the hub"]

    sys.modules["__main__"].app = app

    def host(**cfg):
        ctx = BuildContext(config_dir=Path("."), json_path="paths./")
        return build({"type": "wsgi", "module": "__main__", "object": "app", **cfg}, ctx)

    def get(h):
        seen = []
        body = b"".join(h({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
                          "wsgi.errors": sys.stderr},
                         lambda status, headers, exc_info=None: seen.append(status)))
        return seen[0], body
''')


def run(script: str, timeout: float = 60) -> str:
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_pool_made_before_a_fork_serves_in_the_child():
    # gunicorn --preload builds the app (its pool, minthreads started) in the master; the
    # child has none of those threads and must start its own instead of waiting on them.
    out = run('''
        h = host(minthreads=2, maxthreads=2)  # no room to grow: only the fork handler helps
        assert get(h) == ("200 OK", b"on a pool thread")
        pid = os.fork()
        if pid == 0:
            with gevent.Timeout(10, RuntimeError("the child's request never finished")):
                ok = get(h) == ("200 OK", b"on a pool thread")
                ok = ok and all(g.get() == ("200 OK", b"on a pool thread")
                                for g in [gevent.spawn(get, h) for _ in range(5)])
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        assert get(h) == ("200 OK", b"on a pool thread")  # the parent's pool is untouched
    ''')
    assert "child 0" in out


def test_threading_settrace_reaches_the_app_on_the_pool():
    # What gevent's ThreadPool did and debuggers/coverage rely on: threading.settrace()
    # applies to the code a pool thread runs for a request.
    out = run('''
        calls = []

        def tracer(frame, event, arg):
            if event == "call" and frame.f_code.co_name == "app":
                calls.append(native_ident() != HUB)
            return None

        h = host()
        assert get(h)[1] == b"on a pool thread"
        threading.settrace(tracer)
        assert get(h)[1] == b"on a pool thread"
        threading.settrace(None)
        assert get(h)[1] == b"on a pool thread"
        print("traced", calls)
    ''')
    assert "traced [True]" in out


def test_a_burst_of_requests_is_answered_in_order_and_completely():
    # 200 greenlets at once on a 3-thread pool: every request gets its own answer, whatever
    # the batching of hand-offs and reports.
    out = run('''
        def echo(environ, start_response):
            start_response("200 OK", [])
            return [environ["PATH_INFO"].encode()]

        sys.modules["__main__"].app = echo
        h = host(maxthreads=3)

        def one(i):
            return b"".join(h({"REQUEST_METHOD": "GET", "PATH_INFO": f"/{i}",
                               "SCRIPT_NAME": "", "wsgi.errors": sys.stderr},
                              lambda *a: None))

        for _ in range(3):
            jobs = [gevent.spawn(one, i) for i in range(200)]
            gevent.joinall(jobs, raise_error=True)
            assert [j.value for j in jobs] == [f"/{i}".encode() for i in range(200)]
        print("ok", h.pool.size)
    ''')
    assert out.startswith("ok ")
    assert 1 <= int(out.split()[1]) <= 3
