"""issue 14: cookie authentication in a real browser (headless Chromium, autobahn|js).

Crossbar's flow, as a person's browser goes through it: a page served by the node connects
with ``authmethods: ["cookie", "ticket"]``; without a login on its cookie it authenticates by
ticket, and the node's 101 response has set the tracking cookie (HttpOnly here: the page's
script never sees it). The page loaded again, offering only ``cookie``, is joined by the
cookie alone as the same principal. Another browser profile, and a forged cookie value, are
not. The page reports its session's details into the DOM; the test reads them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from support import realm, role, scaled, web_node
from support.browser import chromium, wait_js

from geonode.router.errors import AUTHENTICATION_FAILED as FAILED
from geonode.web.services.status import STATIC

# autobahn|js from the page; what to offer comes in the query string
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pending</title>
<script src="autobahn.min.js"></script></head>
<body><pre id="out"></pre>
<script>
const q = new URLSearchParams(location.search);
let done = false;
function report(result) {
  if (done) return;
  done = true;
  document.getElementById('out').textContent = JSON.stringify(result);
  document.title = result.state;
}
const conn = new autobahn.Connection({
  url: 'ws://' + location.host + '/ws', realm: 'realm1', max_retries: 0,
  authmethods: q.get('methods').split(','), authid: q.get('authid') || undefined,
  onchallenge: (session, method) => method === 'ticket' ? q.get('ticket') : null,
});
conn.onopen = (session, d) => report({
  state: 'joined', session: session.id, authid: d.authid, authrole: d.authrole,
  authmethod: d.authmethod, authprovider: d.authprovider, document_cookie: document.cookie});
conn.onclose = (reason, d) => {
  report({state: 'refused', reason: d.reason || reason, message: d.message || ''});
  return true;
};
conn.open();
</script></body></html>
"""

PRINCIPALS = {"joe": {"ticket": "t1", "role": "user"}, "ann": {"ticket": "t2", "role": "staff"}}


@pytest.fixture(scope="module")
def node(start_module_node):
    auth = {"ticket": {"type": "static", "principals": PRINCIPALS}, "cookie": {}}
    cfg = web_node({"/": {"type": "static", "directory": "web"},
                    "ws": {"type": "websocket", "auth": auth,
                           "cookie": {"max_age": 3600, "http_strict": True}}},
                   realms=[realm(roles=[role("user"), role("staff")])])
    # autobahn|js: the browser build the status page serves (geonode/static/status)
    return start_module_node(cfg, files={
        "web/index.html": PAGE,
        "web/autobahn.min.js": (STATIC / "autobahn.min.js").read_text(encoding="utf-8")})


@pytest.fixture
def profiles(tmp_path):
    """Browsers with a profile (cookie jar) each: ``profiles("a")``; quit at the end."""
    drivers: list[Any] = []

    def make(name: str) -> Any:
        drivers.append(chromium(tmp_path / f"profile-{name}"))
        return drivers[-1]

    yield make
    for d in drivers:
        d.quit()


def visit(driver: Any, node: Any, **query: str) -> dict:
    """Load the page with ``query`` and wait for it to report its join (or refusal)."""
    driver.get(f"{node.url}/?{urlencode(query)}")
    text, _ = wait_js(driver, "return document.title !== 'pending' && "
                              "document.getElementById('out').textContent",
                      scaled(20), f"the page's WAMP session ({query})")
    return json.loads(text)


def tracking_cookie(driver: Any) -> dict:
    (cookie,) = [c for c in driver.get_cookies() if c["name"] == "cbtid"]
    return cookie


def login(driver: Any, node: Any, authid: str) -> dict:
    joined = visit(driver, node, methods="cookie,ticket", authid=authid,
                   ticket=PRINCIPALS[authid]["ticket"])
    assert joined["state"] == "joined", joined
    assert (joined["authid"], joined["authrole"], joined["authmethod"],
            joined["authprovider"]) == (authid, PRINCIPALS[authid]["role"], "ticket", "static")
    return joined


def assert_cookie_join(driver: Any, node: Any, authid: str) -> dict:
    again = visit(driver, node, methods="cookie")
    assert again["state"] == "joined", again
    assert (again["authid"], again["authrole"], again["authmethod"],
            again["authprovider"]) == (authid, PRINCIPALS[authid]["role"], "ticket", "cookie")
    return again


def test_login_then_reload_joins_by_cookie_alone(node, profiles):
    browser = profiles("a")
    first = login(browser, node, "joe")
    # the 101 response set the cookie: the browser keeps it, the page's script cannot read it
    cookie = tracking_cookie(browser)
    assert len(cookie["value"]) == 24 and cookie["httpOnly"] is True, cookie
    assert "cbtid" not in first["document_cookie"]
    # the page again, offering only cookie: the same principal, in a new session
    again = assert_cookie_join(browser, node, "joe")
    assert again["session"] != first["session"]
    assert tracking_cookie(browser)["value"] == cookie["value"]   # no new cookie issued
    # and again: the login stays on the cookie
    assert_cookie_join(browser, node, "joe")


def test_other_profile_and_forged_cookie_refused(node, profiles):
    a, b = profiles("a"), profiles("b")
    login(a, node, "joe")
    joes = tracking_cookie(a)["value"]
    # another profile shares nothing: without a login on its own cookie, cookie alone fails
    refused = visit(b, node, methods="cookie")
    assert refused["state"] == "refused" and refused["reason"] == FAILED, refused
    own = tracking_cookie(b)["value"]   # the refusal handed b a cookie of its own
    assert own != joes
    refused = visit(b, node, methods="cookie")
    assert refused["reason"] == FAILED and "no login" in refused["message"], refused
    # a forged value (joe's with one character changed), planted in b's jar, is no login
    forged = joes[:-1] + ("A" if joes[-1] != "A" else "B")
    b.delete_all_cookies()
    b.add_cookie({"name": "cbtid", "value": forged, "path": "/", "httpOnly": True})
    refused = visit(b, node, methods="cookie")
    assert refused["reason"] == FAILED and "unknown or expired" in refused["message"], refused
    assert tracking_cookie(b)["value"] not in (forged, joes)   # replaced by a fresh one
    # b logs in as someone else: each profile's cookie carries its own login
    login(b, node, "ann")
    assert_cookie_join(b, node, "ann")
    assert_cookie_join(a, node, "joe")
