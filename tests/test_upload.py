"""The ``upload`` path service (Resumable.js protocol, Crossbar's form fields and progress
events): plain ``requests`` clients, and a real headless Chromium driving Resumable.js."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import requests
from support import router_config, scaled, wait_for
from support.browser import chromium
from support.config import endpoint
from support.nodes import ROOT
from support.wamp import SyncClient

FIELDS = {"file_name": "resumableFilename", "mime_type": "resumableType",
          "total_size": "resumableTotalSize", "chunk_number": "resumableChunkNumber",
          "chunk_size": "resumableChunkSize", "total_chunks": "resumableTotalChunks",
          "content": "file", "on_progress": "on_progress", "session": "session",
          "chunk_extra": "chunk_extra", "finish_extra": "finish_extra"}
RESUMABLE_JS = ROOT / "tests" / "js" / "node_modules" / "resumablejs" / "resumable.js"
MAX = 8 * 1024 * 1024


def config() -> dict:
    return router_config([{"type": "web", "endpoint": endpoint("$PORT"), "paths": {
        "/": {"type": "static", "directory": "www"},
        "ws": {"type": "websocket"},
        "upload": {"type": "upload", "realm": "realm1", "role": "anonymous",
                   "directory": "uploaded", "temp_directory": "temp",
                   "form_fields": FIELDS, "options": {"max_file_size": MAX,
                                                      "file_permissions": "0640"}},
    }}])


FILES = {"www/index.html": "<!DOCTYPE html><html><body>upload test</body></html>",
         "uploaded/.keep": ""}


@pytest.fixture(scope="module")
def node(start_module_node):
    return start_module_node(config(), FILES)


def _data(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"z" * (n % 32)


def send_chunk(url: str, name: str, data: bytes, number: int, chunk_size: int,
               total: int | None = None, topic: str | None = None, **extra: str):
    total = len(data) if total is None else total
    chunks = max(total // chunk_size, 1)
    start = (number - 1) * chunk_size
    end = total if number == chunks else start + chunk_size
    fields = {"resumableFilename": name, "resumableType": "application/octet-stream",
              "resumableTotalSize": str(total), "resumableChunkNumber": str(number),
              "resumableChunkSize": str(chunk_size), "resumableTotalChunks": str(chunks),
              **extra}
    if topic:
        fields["on_progress"] = topic
    return requests.post(url, data=fields, files={"file": ("blob", data[start:end])},
                         timeout=scaled(30))


def test_chunks_in_any_order_make_the_file_atomically(node):
    url = f"{node.url}/upload"
    data = _data(3 * 1024 * 1024 + 123, 1)
    size = 1024 * 1024
    final = node.dir / "uploaded" / "a.bin"
    for n in (3, 1):
        assert send_chunk(url, "a.bin", data, n, size).status_code == 200
        assert not final.exists()     # nothing in the folder before the last chunk
    # resumable: the GET test says which chunks are there
    q = {"resumableFilename": "a.bin", "resumableChunkNumber": "1"}
    assert requests.get(url, params=q, timeout=scaled(10)).status_code == 200
    q["resumableChunkNumber"] = "2"
    assert requests.get(url, params=q, timeout=scaled(10)).status_code == 404
    assert send_chunk(url, "a.bin", data, 2, size).status_code == 200
    assert final.read_bytes() == data
    assert oct(final.stat().st_mode & 0o777) == "0o640"
    assert list((node.dir / "temp").iterdir()) == []


def test_progress_events_on_the_clients_topic(node):
    wamp = SyncClient(node.port)
    try:
        events = wamp.subscribe("com.example.progress")
        url = f"{node.url}/upload"
        data = _data(2 * 65536 + 7, 2)
        for n in (1, 2):
            r = send_chunk(url, "p.bin", data, n, 65536, topic="com.example.progress",
                           chunk_extra='{"c": 1}', finish_extra='{"f": 2}')
            assert r.status_code == 200
        got = [events.get(timeout=scaled(10))[0][0] for _ in range(4)]
        assert [e["status"] for e in got] == ["started", "progress", "progress", "finished"]
        assert got[-1]["finish_extra"] == {"f": 2} and got[1]["chunk_extra"] == {"c": 1}
        assert got[-1]["total"] == len(data) and got[-1]["remaining"] == 0
        assert got[1]["remaining"] == len(data) - 65536
    finally:
        wamp.close()


def test_concurrent_uploads(node):
    url = f"{node.url}/upload"
    blobs = {f"c{i}.bin": _data(600_000 + i, 10 + i) for i in range(6)}
    errors: list = []

    def upload(name: str, data: bytes) -> None:
        try:
            for n in range(max(len(data) // 100_000, 1), 0, -1):
                r = send_chunk(url, name, data, n, 100_000)
                assert r.status_code == 200, r.text
        except Exception as e:   # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=upload, args=kv) for kv in blobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(60))
    assert not errors
    for name, data in blobs.items():
        assert (node.dir / "uploaded" / name).read_bytes() == data


@pytest.mark.parametrize("name", ["../evil.bin", "a/../../evil.bin", "..", ".hidden",
                                  "dir\\evil.bin", "/etc/evil.bin", "nul\x00.bin"])
def test_path_traversal_in_the_file_name_refused(node, name):
    r = send_chunk(f"{node.url}/upload", name, b"x" * 10, 1, 10)
    assert r.status_code == 400 and "plain file name" in r.text
    assert not list(node.dir.parent.glob("**/evil.bin"))
    assert list((node.dir / "temp").iterdir()) == []


@pytest.mark.parametrize("number,size,total,status", [
    (0, 10, 30, 400), (4, 10, 30, 400), (99999999999, 10, 30, 400),
    (1, 10, MAX + 1, 413), (1, 0, 30, 400)])
def test_chunk_out_of_range_refused(node, number, size, total, status):
    fields = {"resumableFilename": "r.bin", "resumableType": "x",
              "resumableTotalSize": str(total), "resumableChunkNumber": str(number),
              "resumableChunkSize": str(size),
              "resumableTotalChunks": str(max(total // max(size, 1), 1))}
    r = requests.post(f"{node.url}/upload", data=fields, files={"file": ("b", b"x" * 10)},
                      timeout=scaled(10))
    assert r.status_code == status, r.text


def test_chunk_of_the_wrong_size_or_totals_refused(node):
    url = f"{node.url}/upload"
    data = _data(40, 3)
    # chunk 1 of 4 must be 10 bytes: 11 is refused, nothing recorded
    fields = {"resumableFilename": "w.bin", "resumableType": "x", "resumableTotalSize": "40",
              "resumableChunkNumber": "1", "resumableChunkSize": "10",
              "resumableTotalChunks": "4"}
    r = requests.post(url, data=fields, files={"file": ("b", data[:11])}, timeout=scaled(10))
    assert r.status_code == 400
    # totals that do not add up
    r = requests.post(url, data={**fields, "resumableTotalChunks": "9"},
                      files={"file": ("b", data[:10])}, timeout=scaled(10))
    assert r.status_code == 400
    # other totals for a pending upload of the same name: 409
    assert send_chunk(url, "w.bin", data, 1, 10).status_code == 200
    r = send_chunk(url, "w.bin", _data(50, 3), 1, 10)
    assert r.status_code == 409
    # not multipart, a bad extra: 400
    assert requests.post(url, data=b"x", timeout=scaled(10)).status_code == 400
    r = send_chunk(url, "w.bin", data, 2, 10, chunk_extra="{not json")
    assert r.status_code == 400
    # and the upload completes afterwards
    for n in (2, 3, 4):
        assert send_chunk(url, "w.bin", data, n, 10).status_code == 200
    assert (node.dir / "uploaded" / "w.bin").read_bytes() == data


def test_interrupted_upload_resumed_after_a_restart(start_node):
    folder_node = start_node(config(), FILES)
    url = f"{folder_node.url}/upload"
    data = _data(5 * 65536, 4)
    for n in (1, 2, 4):
        assert send_chunk(url, "r.bin", data, n, 65536).status_code == 200
    folder_node.stop()
    from support.nodes import launch

    again = launch(config(), folder_node.dir)
    try:
        url = f"{again.url}/upload"
        have = [requests.get(url, params={"resumableFilename": "r.bin",
                                          "resumableChunkNumber": str(n)},
                             timeout=scaled(10)).status_code for n in range(1, 6)]
        assert have == [200, 200, 404, 200, 404]
        for n in (3, 5):
            assert send_chunk(url, "r.bin", data, n, 65536).status_code == 200
        assert (again.dir / "uploaded" / "r.bin").read_bytes() == data
        again.wait_log("1 pending upload(s) can be resumed")
    finally:
        again.stop()


# -- a real browser: headless Chromium driving Resumable.js --------------------------------------

PAGE = """<!DOCTYPE html><html><head><script src="resumable.js"></script></head><body>
<input type="file" id="pick" multiple>
<script>
window.log = [];
window.r = new Resumable({target: '/upload', chunkSize: %d, simultaneousUploads: 3,
                          testChunks: true, forceChunkSize: false,
                          query: {on_progress: 'com.example.browser'}});
r.assignBrowse(document.getElementById('pick'));
r.on('fileAdded', function () { r.upload(); });
r.on('fileSuccess', function (f) { window.log.push('ok ' + f.fileName); });
r.on('fileError', function (f, m) { window.log.push('error ' + f.fileName + ' ' + m); });
</script></body></html>"""


def test_resumablejs_in_headless_chromium(start_node, tmp_path):
    if not RESUMABLE_JS.exists():   # checked before it is read (a checkout without node_modules)
        pytest.skip("resumable.js not installed (tests/js/install.sh)")
    chunk = 256 * 1024
    files = {**FILES, "www/index.html": PAGE % chunk,
             "www/resumable.js": RESUMABLE_JS.read_text()}
    node = start_node(config(), files)
    browser = chromium()
    wamp = SyncClient(node.port)
    try:
        events = wamp.subscribe("com.example.browser")
        src = {"one.bin": _data(3 * chunk + 1000, 7), "two.txt": _data(chunk // 3, 8)}
        for name, data in src.items():
            (tmp_path / name).write_bytes(data)
        browser.get(f"{node.url}/")
        pick = browser.find_element("id", "pick")
        pick.send_keys("\n".join(str(tmp_path / n) for n in src))
        wait_for(lambda: len(browser.execute_script("return window.log")) == 2, scaled(60),
                 "Resumable.js reports both files done")
        assert sorted(browser.execute_script("return window.log")) == \
            ["ok one.bin", "ok two.txt"]
        for name, data in src.items():
            assert (node.dir / "uploaded" / name).read_bytes() == data
        statuses = []
        while len([s for s in statuses if s == "finished"]) < 2:
            statuses.append(events.get(timeout=scaled(10))[0][0]["status"])
        assert statuses.count("started") == 2
        # a second time, the same files: every chunk is sent again (a complete upload is
        # repeated, as Crossbar), and lands the same
        browser.execute_script("window.log = []; r.cancel();")
        pick.send_keys(str(tmp_path / "one.bin"))
        wait_for(lambda: browser.execute_script("return window.log") == ["ok one.bin"],
                 scaled(60), "second upload done")
        assert (node.dir / "uploaded" / "one.bin").read_bytes() == src["one.bin"]
    finally:
        wamp.close()
        browser.quit()


def test_check_agrees_with_start(tmp_path):
    import json
    import subprocess

    from support.nodes import geonode_cmd

    cfg = config()
    paths = cfg["workers"][0]["transports"][0]["paths"]
    paths["upload"]["directory"] = "missing"
    paths["upload"]["realm"] = "nope1"
    paths["upload"]["options"]["file_permissions"] = "rw"
    paths["zip"] = {"type": "archive", "archive": "none.zip"}
    paths["wap"] = {"type": "wap", "templates": "tpl", "routes": [],
                    "wamp": {"realm": "realm1", "authrole": "anonymous"}}
    paths["wsp"] = {"type": "websocket-reverseproxy", "backend": {
        "type": "websocket", "url": "http://x/",
        "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 9}}}
    (tmp_path / "www").mkdir()
    p = tmp_path / "node.json"
    p.write_text(json.dumps(cfg).replace("$PORT", "18999").replace('"18999"', "18999"))
    check = subprocess.run(geonode_cmd("check", str(p)), capture_output=True, text=True,
                           timeout=scaled(60))
    start = subprocess.run(geonode_cmd("start", str(p)), capture_output=True, text=True,
                           timeout=scaled(60))
    lines = [ln.strip() for ln in check.stderr.splitlines() if ln.startswith("  ")]
    assert lines == [ln.strip() for ln in start.stderr.splitlines() if ln.startswith("  ")]
    got = "\n".join(lines)
    T = "workers[0].transports[0].paths"
    for expected in (f"{T}.upload.options.file_permissions: invalid value 'rw'",):
        assert expected in got, got
    # the schema error hides nothing else here; now a schema-valid config
    paths["upload"]["options"]["file_permissions"] = "0644"
    p.write_text(json.dumps(cfg).replace('"$PORT"', "18999"))
    check = subprocess.run(geonode_cmd("check", str(p)), capture_output=True, text=True,
                           timeout=scaled(60))
    start = subprocess.run(geonode_cmd("start", str(p)), capture_output=True, text=True,
                           timeout=scaled(60))
    lines = [ln.strip() for ln in check.stderr.splitlines() if ln.startswith("  ")]
    assert lines == [ln.strip() for ln in start.stderr.splitlines() if ln.startswith("  ")]
    got = "\n".join(lines)
    for expected in (f"{T}.upload.realm: realm 'nope1' is not defined",
                     f"{T}.upload.directory: folder 'missing' not found",
                     f"{T}.zip.archive: file 'none.zip' not found",
                     f"{T}.wap.templates: folder 'tpl' not found",
                     f"{T}.wsp.backend.url: 'http://x/' is not a ws:// or wss:// URL"):
        assert expected in got, got
    assert os.path.exists(tmp_path / "www")
