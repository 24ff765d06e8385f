#!/usr/bin/env python3
"""The keep-alive race a pooling client loses: does ``httpclient.request`` deliver every POST?

    python bench/libs/stale_keepalive.py                                  # geonode's client
    GEONODE_LIBS=urllib3 PYTHONPATH=.:bench/libs/shim python bench/libs/stale_keepalive.py

The upstream answers the first request on each connection with a keep-alive 200, and treats
the next request on that connection as a server whose keep-alive timeout fired just as the
request arrived: it closes the connection without an answer (what urllib3/urllib3#944 and
psf/requests#4664 describe; the window is one round trip, so on a real network it happens
now and then, here every time). A client that pools connections sends its second POST into
that connection and gets ``RemoteDisconnected``; a forwarder would log the event as failed.
Prints how many of ``n`` POSTs were answered.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from geonode.bridge import httpclient  # noqa: E402


def _read_request(f) -> bool:
    length = 0
    while True:
        line = f.readline()
        if not line:
            return False
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    f.read(length)
    return True


def _serve(sock, _addr) -> None:
    f = sock.makefile("rb")
    if _read_request(f):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        # the next request finds the connection expired: closed, unanswered
        f.peek(1)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def main(n: int = 20) -> int:
    server = StreamServer(("127.0.0.1", 0), _serve)
    server.start()
    url = f"http://127.0.0.1:{server.server_port}/events"
    answered = 0
    errors: list[str] = []
    for i in range(n):
        try:
            r = httpclient.request("POST", url, body=b'{"n": %d}' % i, timeout=5,
                                   headers={"Content-Type": "application/json"})
            answered += r.status == 200
        except httpclient.HTTPError as e:
            errors.append(str(e))
        gevent.sleep(0.01)
    server.stop()
    print(f"{answered}/{n} POSTs answered" + (f"; first error: {errors[0]}" if errors else ""))
    return 0 if answered == n else 1


if __name__ == "__main__":
    sys.exit(main())
