"""issue 13 item 6: the ``status`` page in a real headless Chromium (Debian's ``chromium`` and
``chromedriver``, driven by Selenium): what a person would see, live over WAMP."""

from __future__ import annotations

import json

import pytest
import requests
from support import scaled, web_node
from support.browser import chromium, wait_js
from support.config import realm, wsgi
from support.ws import RawWamp

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]
'''


@pytest.fixture(scope="module")
def node(start_module_node):
    cfg = web_node({"ws": {"type": "websocket"}, "app": wsgi("app"),
                    "status": {"type": "status", "realm": "realm1"}}, realms=[realm()])
    return start_module_node(cfg, files={"app.py": APP})


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def row_of(session_id: int) -> str:
    return (f"const r = document.querySelector('#sessions tr[data-session-id=\"{session_id}\"]');"
            " return r ? [...r.cells].map(c => c.textContent) : null;")


def test_session_appears_and_disappears_live(node, browser):
    from support.wamp import SyncClient

    browser.get(node.url + "/status/")
    wait_js(browser, "return document.getElementById('conn').textContent === 'live'",
            scaled(20), "the page's WAMP session")
    assert "realm1" in browser.find_element("id", "realm").text
    client = SyncClient(node.port)
    sid = client.session._session_id
    try:
        cells, took = wait_js(browser, f"{row_of(sid)}", scaled(2), f"session {sid}'s row")
        print(f"session row appeared after {took:.3f} s")
        assert cells[1] and cells[2] == "anonymous"   # anonymous authids are random
        assert cells[3].startswith("websocket")
        assert cells[4].startswith("tcp4:127.0.0.1:")
        client.register("com.example.add", lambda a, b: a + b)
        wait_js(browser, "return [...document.querySelectorAll('#registrations td')]"
                         ".some(td => td.textContent === 'com.example.add')",
                scaled(5), "the registration listed")
    finally:
        client.close()
    _, took = wait_js(browser, "return !document.querySelector("
                               f"'#sessions tr[data-session-id=\"{sid}\"]')",
                      scaled(2), f"session {sid}'s row gone")
    print(f"session row gone after {took:.3f} s")


def test_rates_and_wsgi_pool_shown(node, browser):
    browser.get(node.url + "/status/")
    wait_js(browser, "return document.getElementById('conn').textContent === 'live'",
            scaled(20), "the page's WAMP session")
    for _ in range(20):
        requests.get(node.url + "/app", timeout=scaled(10))
    wait_js(browser, "return [...document.querySelectorAll('#wsgi-rows td')]"
                     ".some(td => td.textContent === '/app')", scaled(5), "the /app pool row")
    uptime, _ = wait_js(browser, "return document.getElementById('uptime').textContent"
                                 ".includes(':') && document.getElementById('uptime').textContent",
                        scaled(5), "the uptime")
    assert uptime


def test_viewer_endpoint_is_read_only(node):
    viewer = RawWamp(node.port, path="status/ws")
    try:
        welcome = viewer.hello()
        assert welcome[0] == 2 and welcome[2]["authrole"] == "trusted"
        refused = [
            [48, viewer.next_request(), {}, "wamp.session.kill", [welcome[1]]],
            [48, viewer.next_request(), {}, "com.example.anything", []],
            [64, viewer.next_request(), {}, "com.example.mine"],
            [16, viewer.next_request(), {"acknowledge": True}, "com.example.t", []],
            [32, viewer.next_request(), {}, "com.example.t"],
        ]
        for msg in refused:
            viewer.send(msg)
            reply = viewer.recv()
            assert reply[0] == 8 and reply[2] == msg[1] and \
                reply[4] == "wamp.error.not_authorized", (msg, reply)
        viewer.send([48, viewer.next_request(), {}, "geonode.status.get", []])
        result = viewer.recv()
        assert result[0] == 50 and "realm1" in result[3][0]["realms"]
        viewer.send([48, viewer.next_request(), {}, "wamp.session.count", []])
        assert viewer.recv()[0] == 50
    finally:
        viewer.close()


def test_off_unless_configured_and_role_required(start_node):
    cfg = web_node({"ws": {"type": "websocket"}}, realms=[realm()])
    assert requests.get(start_node(cfg).url + "/status/", timeout=scaled(10)).status_code == 404
    auth = {"ticket": {"type": "static", "principals": {
        "op": {"ticket": "s3cret", "role": "ops"}, "guest": {"ticket": "g", "role": "guest"}}}}
    from support.config import role
    cfg = web_node({"status": {"type": "status", "realm": "realm1", "role": "ops",
                               "auth": auth}},
                   realms=[realm(roles=[role("ops"), role("guest")])])
    node = start_node(cfg)
    for who, secret, ok in (("op", "s3cret", True), ("guest", "g", False)):
        v = RawWamp(node.port, path="status/ws")
        try:
            ch = v.hello(authmethods=["ticket"], authid=who)
            assert ch[0] == 4, ch
            v.send([5, secret, {}])
            assert v.recv()[0] == 2
            v.send([48, v.next_request(), {}, "geonode.status.get", []])
            reply = v.recv()
            if ok:
                assert reply[0] == 50
            else:
                assert reply[0] == 6 and reply[2] == "wamp.error.not_authorized", reply
        finally:
            v.close()
    assert json.dumps  # the module's imports stay used


def _readme_block(lang: str) -> str:
    from support import ROOT

    text = (ROOT / "README.md").read_text()
    start = text.index(f"```{lang}\n", text.index("## A WAMP client in five lines"))
    return text[start + len(lang) + 4:text.index("```", start + 3)]


def test_sample_page_and_readme_clients(tmp_path, browser):
    """The README's five-line clients against the Flask sample, and the sample page itself:
    a greeting from the browser reaches the Python client, and the page shows it."""
    import shutil
    import subprocess
    import sys

    from support import SAMPLES, launch, wait_for
    from support.wamp import SyncClient, wait_subscribed

    py = _readme_block("python")
    js = _readme_block("html")
    assert len(py.strip().splitlines()) == 5 and len(js.strip().splitlines()) == 6
    cfg = json.loads((SAMPLES / "flask" / "node.json").read_text())
    cfg["workers"][0]["transports"][0]["endpoint"]["port"] = "$PORT"
    shutil.copytree(SAMPLES / "flask", tmp_path / "flask",
                    ignore=shutil.ignore_patterns("__pycache__", "node.json"))
    node = launch(cfg, tmp_path / "flask")
    listener = subprocess.Popen([sys.executable, "-u", "-c", py.replace("8080", str(node.port))],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    import threading
    threading.Thread(target=lambda: lines.extend(listener.stdout), daemon=True).start()
    watcher = SyncClient(node.port)
    try:
        wait_subscribed(watcher, topics=("com.example.hello",), timeout=20)
        page = tmp_path / "hello.html"
        page.write_text(js.replace("8080", str(node.port)))
        browser.get(page.as_uri())
        wait_for(lambda: any("hello from a web page" in x for x in lines), 10,
                 "the Python client's print")
        # the sample page: a person presses the button and sees the greeting
        browser.get(node.url + "/")
        assert "Hello from" in browser.find_element("tag name", "h1").text
        wait_js(browser, "return !document.getElementById('hello').disabled", scaled(10),
                "the page's WAMP session")
        name = browser.find_element("id", "name")
        name.clear()
        name.send_keys("tab one")
        browser.find_element("id", "hello").click()
        wait_js(browser, "return document.getElementById('log').textContent"
                         ".includes('hello from tab one')", scaled(5), "the greeting shown")
        wait_for(lambda: any("hello from tab one" in x for x in lines), 10,
                 "the Python client's print of the page's greeting")
    finally:
        watcher.close()
        listener.terminate()
        listener.wait(scaled(10))
        node.stop()


@pytest.mark.inprocess
def test_check_names_an_unknown_status_realm(tmp_path):
    from geonode.config import check

    cfg = web_node({"status": {"type": "status", "realm": "nope"}}, realms=[realm()], port=8080)
    path = tmp_path / "node.json"
    path.write_text(json.dumps(cfg))
    errors = check(path)
    assert any(e.startswith("workers[0].transports[0].paths.status.realm: realm 'nope'")
               for e in errors), errors
