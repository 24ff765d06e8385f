"""A WAMP session's socket is closed as soon as the session ends, however the connection ends.

The soak (bench/soak.py, issue 13) found the node holding one descriptor per long-lived session
after its clients had closed: the socket handed over from the HTTP request to the session's
greenlet (``Handler.detach_websocket``) was closed only when the cyclic GC freed the request.
Here a real node, real clients that receive events or results continuously and then go,
rudely (with unread input: the kernel resets the connection) or politely (the closing
handshake); the node's own descriptors (``/proc/<pid>/fd``) must come back to what they were.
"""

from __future__ import annotations

import os
import select
import threading

import pytest
from support import router_config, scaled, wait_for, web_transport
from support.ws import RawWamp

HELLO_WELCOME, SUBSCRIBE, SUBSCRIBED, PUBLISH, CALL, EVENT = 2, 32, 33, 16, 48, 36
TOPIC = "com.release.topic"
SESSIONS = 3


@pytest.fixture(scope="module")
def node(start_module_node):
    return start_module_node(router_config([web_transport({"ws": {"type": "websocket"}})]))


def sockets_of(pid: int) -> int:
    """How many sockets the process holds (the listener included)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass   # closed meanwhile
    return n


def unread_input(w: RawWamp) -> bool:
    return bool(select.select([w.ws.sock], [], [], 0)[0])


def close(w: RawWamp, how: str) -> None:
    if how == "reset":
        # What the client has not read makes the kernel answer the close with a reset.
        wait_for(lambda: unread_input(w), 10, "input the client leaves unread")
        w.ws.sock.close()
    else:
        w.close()   # the closing handshake, as bench/soak.py's clients end


def subscriber(port: int) -> RawWamp:
    w = RawWamp(port)
    assert w.hello()[0] == HELLO_WELCOME
    w.send([SUBSCRIBE, 1, {}, TOPIC])
    assert w.recv()[0] == SUBSCRIBED
    return w


def publishing(port: int, stop: threading.Event) -> threading.Thread:
    """A publisher in a thread: events without pause until ``stop`` (at most 100,000)."""
    pub = RawWamp(port)
    assert pub.hello()[0] == HELLO_WELCOME

    def run() -> None:
        try:
            for i in range(100_000):
                if stop.is_set():
                    break
                pub.send([PUBLISH, i + 1, {}, TOPIC, [i, "x" * 200]])
        finally:
            pub.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("how", ["reset", "handshake"])
def test_subscribers_receiving_events_leave_no_socket_behind(node, how):
    pid = node.proc.pid
    before = sockets_of(pid)
    subs = [subscriber(node.port) for _ in range(SESSIONS)]
    stop = threading.Event()
    t = publishing(node.port, stop)
    try:
        for w in subs:
            assert w.recv()[0] == EVENT   # the events flow
        for w in subs:
            close(w, how)
    finally:
        stop.set()
        t.join(scaled(10))
    # the publisher went too: every session's socket must be gone, promptly
    wait_for(lambda: sockets_of(pid) <= before, 5,
             f"the node's sockets back to {before} (it holds {sockets_of(pid)})")


def test_caller_receiving_results_reset_leaves_no_socket_behind(node):
    pid = node.proc.pid
    before = sockets_of(pid)
    w = RawWamp(node.port)
    assert w.hello()[0] == HELLO_WELCOME
    for i in range(200):   # results pile up unread
        w.send([CALL, i + 1, {}, "wamp.session.count"])
    close(w, "reset")
    wait_for(lambda: sockets_of(pid) <= before, 5,
             f"the node's sockets back to {before} (it holds {sockets_of(pid)})")
