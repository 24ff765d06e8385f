"""The ``static`` path service through a real node: files, caching, ranges, and path safety."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests
from support import web_node
from support.http import exchange, split_response

SECRET = "SECRET-MARKER-outside-the-root"

FILES = {
    "www/index.html": "<h1>home</h1>\n",
    "www/a.txt": "hello static\n",
    "www/data.dat": "dat\n",
    "www/sub/b.txt": "bee\n",
    "www/idx/index.htm": "<p>htm index</p>\n",
    "www/sub/<b>&'x\".txt": "odd name\n",
    "www/caf\u00e9.txt": "utf-8 name\n",
    "secret.txt": SECRET + "\n",
    "outside/inner.txt": SECRET + "\n",
    # A folder whose name is the double-encoded form must stay a literal name.
    "www/%2e%2e/lit.txt": "literal percent folder\n",
}

BIG_SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def node(start_module_node):
    paths = {
        "/": {"type": "static", "directory": "www"},
        "list": {"type": "static", "directory": "www",
                 "options": {"enable_directory_listing": True, "cache_timeout": None,
                             "mime_types": {"txt": "text/x-custom", ".DAT": "application/x-dat"}}},
        "spa": {"type": "static", "directory": "www", "options": {"default_file": "index.html"}},
        "pkg": {"type": "static", "package": "geonode.web", "resource": "services"},
    }
    n = start_module_node(web_node(paths), files=FILES)
    www = n.dir / "www"
    # Written after start: static files are looked up per request.
    (www / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    os.symlink(n.dir / "secret.txt", www / "link-out")
    os.symlink(n.dir / "outside", www / "dir-out")
    os.symlink(www / "a.txt", www / "link-in")
    (www / "trap").mkdir()
    os.symlink(n.dir / "secret.txt", www / "trap" / "index.html")
    return n


def raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given (no client normalization) and read the whole answer."""
    return split_response(exchange(port, request, timeout))


def get(port: int, target: str, method: str = "GET", extra: str = "") -> tuple[int, dict, bytes]:
    req = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    return raw(port, req.encode("latin-1"))


# -- plain serving ---------------------------------------------------------------------------


def test_index_and_file(node):
    r = requests.get(node.url + "/")
    assert r.status_code == 200 and r.text == "<h1>home</h1>\n"
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    r = requests.get(node.url + "/a.txt")
    assert r.status_code == 200 and r.text == "hello static\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["Content-Length"] == str(len("hello static\n"))
    assert r.headers["Cache-Control"] == "public, max-age=43200"
    assert "Expires" in r.headers and "Last-Modified" in r.headers and "ETag" in r.headers
    r = requests.get(node.url + "/idx/")
    assert r.text == "<p>htm index</p>\n"
    r = requests.get(node.url + "/caf%C3%A9.txt")
    assert r.status_code == 200 and r.text == "utf-8 name\n"


def test_missing_is_404(node):
    assert requests.get(node.url + "/nope.txt").status_code == 404
    assert requests.get(node.url + "/a.txt/more").status_code == 404
    assert requests.get(node.url + "/a.txt/").status_code == 404
    # An existing folder without index and without listing is not served.
    assert requests.get(node.url + "/sub/").status_code == 404


def test_directory_without_slash_redirects(node):
    status, headers, _ = get(node.port, "/sub?x=1")
    assert status == 301 and headers["location"] == "/sub/?x=1"
    status, headers, _ = get(node.port, "/list/sub")
    assert status == 301 and headers["location"] == "/list/sub/"
    status, headers, _ = get(node.port, "/list")
    assert status == 301 and headers["location"] == "/list/"
    # Empty segments are dropped: never a protocol-relative Location.
    status, headers, _ = get(node.port, "//sub")
    assert status == 301 and headers["location"] == "/sub/"


def test_symlink_inside_is_served(node):
    assert requests.get(node.url + "/link-in").text == "hello static\n"


def test_package_resource(node):
    r = requests.get(node.url + "/pkg/none.py")
    assert r.status_code == 200 and "def build" in r.text
    assert requests.get(node.url + "/pkg/nothing").status_code == 404


def test_head_has_headers_no_body(node):
    status, headers, body = get(node.port, "/a.txt", "HEAD")
    assert status == 200 and headers["content-length"] == str(len("hello static\n"))
    assert body == b""


def test_methods(node):
    status, headers, _ = get(node.port, "/a.txt", "POST", "Content-Length: 0\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, _ = get(node.port, "/a.txt", "DELETE")
    assert status == 405


def test_big_file_streams_intact(node):
    with requests.get(node.url + "/big.bin", stream=True) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == BIG_SIZE
        h = hashlib.sha256()
        for chunk in r.iter_content(65536):
            h.update(chunk)
    assert h.hexdigest() == hashlib.sha256((node.dir / "www/big.bin").read_bytes()).hexdigest()


# -- conditional requests and ranges -----------------------------------------------------------


def test_etag_and_last_modified_304(node):
    r = requests.get(node.url + "/a.txt")
    etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
    r = requests.get(node.url + "/a.txt", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    r = requests.get(node.url + "/a.txt", headers={"If-None-Match": f'"other", {etag}'})
    assert r.status_code == 304
    r = requests.get(node.url + "/a.txt", headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.text == "hello static\n"
    r = requests.get(node.url + "/a.txt", headers={"If-Modified-Since": lm})
    assert r.status_code == 304
    r = requests.get(node.url + "/a.txt",
                     headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200


def test_ranges(node):
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=0-4"})
    assert r.status_code == 206 and r.content == b"hello"
    assert r.headers["Content-Range"] == "bytes 0-4/13"
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=-7"})
    assert r.status_code == 206 and r.content == b"static\n"
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=6-"})
    assert r.content == b"static\n"
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=100-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */13"
    # A stale If-Range means "send everything".
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=0-4", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.text == "hello static\n"
    etag = requests.head(node.url + "/a.txt").headers["ETag"]
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=0-4", "If-Range": etag})
    assert r.status_code == 206
    # Several ranges: answered with the whole file (allowed, and simpler than multipart).
    r = requests.get(node.url + "/a.txt", headers={"Range": "bytes=0-1,3-4"})
    assert r.status_code == 200 and r.text == "hello static\n"
    # Garbage ranges are ignored.
    r = requests.get(node.url + "/a.txt", headers={"Range": "lines=1-2"})
    assert r.status_code == 200
    r = requests.get(node.url + "/big.bin", headers={"Range": f"bytes={BIG_SIZE - 10}-"})
    assert r.status_code == 206 and len(r.content) == 10
    assert r.content == (node.dir / "www/big.bin").read_bytes()[-10:]


# -- options ---------------------------------------------------------------------------------


def test_listing_escapes_names(node):
    # The root has an index.html: the index wins over the listing.
    assert requests.get(node.url + "/list/").text == "<h1>home</h1>\n"
    r = requests.get(node.url + "/list/sub/")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;b&gt;&amp;" in r.text and "<b>&" not in r.text
    assert 'href="b.txt"' in r.text and 'href="../"' in r.text
    assert 'href="%3Cb%3E%26%27x%22.txt"' in r.text
    assert requests.get(node.url + "/list/sub/%3Cb%3E%26%27x%22.txt").text == "odd name\n"
    # Links pointing outside the root are not even listed.
    os.symlink(node.dir / "secret.txt", node.dir / "www/sub/out-link")
    try:
        r = requests.get(node.url + "/list/sub/")
        assert "out-link" not in r.text and SECRET not in r.text
    finally:
        os.unlink(node.dir / "www/sub/out-link")


def test_mime_types_and_no_cache_headers(node):
    r = requests.get(node.url + "/list/a.txt")
    assert r.headers["Content-Type"] == "text/x-custom"
    assert "Cache-Control" not in r.headers and "Expires" not in r.headers
    assert "ETag" in r.headers
    assert requests.get(node.url + "/list/data.dat").headers["Content-Type"] == "application/x-dat"
    assert requests.get(node.url + "/data.dat").headers["Content-Type"] != "application/x-dat"


def test_default_file_for_unknown_names(node):
    r = requests.get(node.url + "/spa/some/client/route")
    assert r.status_code == 200 and r.text == "<h1>home</h1>\n"
    assert requests.get(node.url + "/spa/a.txt").text == "hello static\n"
    status, _, body = get(node.port, "/spa/../secret.txt")
    assert SECRET.encode() not in body and status in (400, 404)


# -- never a byte outside the root -----------------------------------------------------------

TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/%2e%2e/%2e%2e/etc/passwd",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/..\\secret.txt",
    "/..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "/a.txt%00.html",
    "/%00",
    "/..%00/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%ef%bc%8e%ef%bc%8e/secret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/link-out",
    "/dir-out/inner.txt",
    "/dir-out/",
    "/list/../secret.txt",
    "/list/%2e%2e/secret.txt",
    "/list/dir-out/",
    "/spa/%2e%2e/secret.txt",
    "/spa/link-out",
    "/pkg/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/./../secret.txt",
    "/trap/",
    "/trap/index.html",
    "/list/trap/index.html",
    "http://127.0.0.1/../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_escapes(node, target):
    status, _, body = get(node.port, target)
    assert SECRET.encode() not in body
    assert b"root:" not in body
    if target.startswith("/spa/") and status == 200:
        # The single-page-app mount may answer unknown names with its default file.
        assert body == b"<h1>home</h1>\n"
    else:
        assert status in (400, 404), (target, status, body[:200])


def test_double_encoding_stays_literal(node):
    # %252e%252e is the name "%2e%2e", a real folder inside the root: served, never a "..".
    r = requests.get(node.url + "/%252e%252e/lit.txt")
    assert r.status_code == 200 and r.text == "literal percent folder\n"


def test_windows_absolute_and_drive_paths(node):
    for target in ("/C:/Windows/win.ini", "/c:%5cwindows%5cwin.ini", "/%2fetc/passwd"):
        status, _, body = get(node.port, target)
        assert status in (400, 404) and b"root:" not in body
