"""``geonode check`` says ok only to a config ``geonode start`` can build, and refuses the rest
with the line ``start`` refuses it with (issue 10: check said ok to ``"flatbuffers"``, to an
interface like ``127.0.0.999`` and to a WSGI module that does not exist; start then failed).

Good configs: every sample, the repo's node.json, ``geonode init``'s starter and the configs
the tests build most; each passes check, then starts and serves every endpoint. Bad configs:
each is refused by check and by start, and every line check prints is in start's output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ROOT, SAMPLES, free_port, geonode_cmd, launch, scaled
from support.config import rawsocket_transport, realm, web_node, wsgi

APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
COMPONENT = "class Backend:\n    def on_join(self, session):\n        pass\n"


def _on_free_ports(cfg: dict) -> dict:
    """Every tcp endpoint of ``cfg`` on loopback and a free port."""
    cfg = copy.deepcopy(cfg)
    for worker in cfg.get("workers", []):
        for transport in worker.get("transports", []) + [worker.get("transport", {})]:
            ep = transport.get("endpoint", {})
            if ep.get("type", "tcp") == "tcp":
                ep.update(port=free_port(), interface="127.0.0.1")
    return cfg


def _sample(name: str) -> Callable[[Path], dict]:
    def make(folder: Path) -> dict:
        shutil.copytree(SAMPLES / name, folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        return json.loads((folder / "node.json").read_text())
    return make


def _root_node(folder: Path) -> dict:
    cfg = json.loads((ROOT / "node.json").read_text())
    for worker in cfg.get("workers", []):
        for entry in worker.get("options", {}).get("pythonpath", []):
            # the repo's node.json names folders relative to the repo: keep them reachable
            src = (ROOT / entry).resolve()
            worker["options"]["pythonpath"] = [str(src) if e == entry else e
                                               for e in worker["options"]["pythonpath"]]
    return cfg


def _starter(folder: Path) -> dict:
    from geonode.init_template import write_starter

    write_starter(folder)
    return json.loads((folder / "node.json").read_text())


def _built(folder: Path) -> dict:
    """A node as the tests build them: wsgi + websocket + static + rawsocket + a component."""
    (folder / "app.py").write_text(APP + COMPONENT)
    (folder / "web").mkdir()
    cfg = web_node({"/": wsgi("app"), "ws": {"type": "websocket"},
                    "s": {"type": "static", "directory": "web"},
                    "pkg": {"type": "static", "package": "geonode", "resource": "init_template"}},
                   realms=[realm()], worker_options={"pythonpath": ["."]},
                   components=[{"type": "class", "classname": "app.Backend",
                                "realm": "realm1", "extra": {"a": 1}}])
    cfg["workers"][0]["transports"].append(rawsocket_transport(0, serializers=["json"]))
    return cfg


def _new_transports(folder: Path) -> dict:
    """Every transport, service and worker issue 12 and 14 added, in one node."""
    (folder / "app.py").write_text(APP)
    cfg = web_node({"/": wsgi("app"), "lp": {"type": "longpoll"}}, realms=[realm()],
                   worker_options={"pythonpath": ["."]})
    tcp = {"type": "tcp", "port": 0}
    cfg["workers"][0]["transports"] += [
        {"type": "websocket", "endpoint": dict(tcp), "serializers": ["json"]},
        {"type": "universal", "endpoint": dict(tcp), "rawsocket": {"serializer": "json"},
         "websocket": {"ws": {}}, "web": {"paths": {"/": wsgi("app")}}},
        {"type": "mqtt", "endpoint": dict(tcp), "options": {"realm": "realm1"}},
    ]
    cfg["workers"].append({"type": "websocket-testee",
                           "transport": {"type": "websocket", "endpoint": dict(tcp)}})
    return cfg


def _newer_services(folder: Path) -> dict:
    """Every service typed in geonode.config.services (and longpoll's, testee's options),
    with the keys the checks of this file refuse when wrong, given right."""
    (folder / "app.py").write_text(APP)
    with zipfile.ZipFile(folder / "site.zip", "w") as z:
        z.writestr("index.html", "<p>hello</p>")
    digest = hashlib.sha256((folder / "site.zip").read_bytes()).hexdigest()
    (folder / "templates").mkdir()
    (folder / "templates" / "page.html").write_text("<p>{{ result }}</p>")
    (folder / "uploads").mkdir()
    fields = {k: k for k in ("file_name", "mime_type", "total_size", "chunk_number",
                             "chunk_size", "total_chunks", "content")}
    bridge = {"realm": "realm1", "role": "anonymous"}
    paths = {
        "/": wsgi("app"),
        "ws": {"type": "websocket", "cookie": {"store": {"type": "file",
                                                         "filename": "cookies.dat"}},
               "auth": {"anonymous": {"type": "static"}, "cookie": {}}},
        "page": {"type": "wap", "templates": "templates", "timeout": 5,
                 "routes": [{"path": "/", "render": "page.html"}],
                 "wamp": {"realm": "realm1", "authrole": "anonymous"}},
        "arc": {"type": "archive", "archive": "site.zip", "hashes": [digest.upper()],
                "options": {"default_file": "index.html"}},
        "up": {"type": "upload", "directory": "uploads", "temp_directory": "scratch/up",
               "form_fields": fields, "options": {"file_permissions": "0644"}, **bridge},
        "proxy": {"type": "websocket-reverseproxy", "backend": {
            "type": "websocket", "url": "ws://127.0.0.1:9/",
            "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 9}}},
        "st": {"type": "status", "realm": "realm1", "role": "anonymous",
               "auth": {"anonymous": {"type": "static"}}},
        "st2": {"type": "status", "realm": "realm1"},
        "metrics": {"type": "metrics"}, "health": {"type": "health"},
        "pub": {"type": "publisher", **bridge,
                "options": {"require_ip": ["127.0.0.1", "10.0.0.0/8"], "timeout": 2}},
        "call": {"type": "caller", **bridge, "options": {"post_body_limit": 1000}},
        "hook": {"type": "webhook", **bridge, "options": {"topic": "com.example.hook"}},
        "lp": {"type": "longpoll", "options": {"session_timeout": 0,
                                               "queue_limit_messages": 10}},
        "echo": {"type": "websocket-testee", "options": {"max_message_size": 1000}},
    }
    return web_node(paths, realms=[realm()], worker_options={"pythonpath": ["."]})


GOOD: dict[str, Callable[[Path], dict]] = {
    **{f"samples/{p.name}": _sample(p.name) for p in sorted(SAMPLES.iterdir())
       if (p / "node.json").is_file()},
    "node.json": _root_node,
    "geonode init": _starter,
    "tests' node": _built,
    "new transports": _new_transports,
    "newer services": _newer_services,
}


def check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(geonode_cmd("check", str(folder / "node.json")), cwd=folder,
                          capture_output=True, text=True, timeout=scaled(60))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_good_config_passes_check_and_starts(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    folder.mkdir()
    cfg = _on_free_ports(GOOD[name](folder))
    (folder / "node.json").write_text(json.dumps(cfg))
    r = check(folder)
    assert r.returncode == 0 and "ok:" in r.stdout, r.stderr
    if name == "tests' node":  # what check cannot know, it says
        assert ("not verified: workers[0].components[0].extra: checked by app.Backend() when "
                "the node starts") in r.stderr
    node = launch(cfg, folder)  # ready when every endpoint of the config accepts
    try:
        assert node.proc.poll() is None, node.log()
    finally:
        node.stop()


def _good(folder: Path) -> dict:
    """The base of every bad config: good as it is (the app and the component exist; an
    archive, and templates of which one does not compile, for the changes to name)."""
    (folder / "app.py").write_text(APP + COMPONENT + "not_callable = 1\n")
    with zipfile.ZipFile(folder / "site.zip", "w") as z:
        z.writestr("index.html", "<p>hello</p>")
    (folder / "templates").mkdir()
    (folder / "templates" / "broken.html").write_text("{% if %}never closed")
    cfg = web_node({"/": wsgi("app"), "ws": {"type": "websocket"}}, realms=[realm()],
                   worker_options={"pythonpath": ["."]}, port=free_port())
    return cfg


def _paths(cfg: dict) -> dict:
    return cfg["workers"][0]["transports"][0]["paths"]


def _endpoint(cfg: dict) -> dict:
    return cfg["workers"][0]["transports"][0]["endpoint"]


def _add_component(cfg: dict, classname: str) -> None:
    cfg["workers"][0]["components"] = [{"type": "class", "classname": classname,
                                        "realm": "realm1"}]


def _bad_certificate(cfg: dict) -> None:
    # files that exist (the semantic check finds them) but hold no certificate: only loading
    # them tells, which start does when it binds and check when it verifies
    _endpoint(cfg)["tls"] = {"certificate": "app.py", "key": "app.py"}


P = 'workers[0].transports[0].paths'
# (id, change to the good config, a line both must print)
BAD: list[tuple[str, Callable[[dict], None], str]] = [
    ("flatbuffers", lambda c: _paths(c)["ws"].update(serializers=["json", "flatbuffers"]),
     f"{P}.ws.serializers[1]: serializer 'flatbuffers' is not supported by geonode"),
    ("rawsocket-flatbuffers", lambda c: c["workers"][0]["transports"].append(
        rawsocket_transport(free_port(), serializers=["flatbuffers"])),
     "workers[0].transports[1].serializers[0]: serializer 'flatbuffers' is not supported"),
    ("interface-not-an-address", lambda c: _endpoint(c).update(interface="127.0.0.999"),
     "workers[0].transports[0].endpoint.interface: '127.0.0.999' is neither an IPv4 address "
     "nor a host name that resolves"),
    ("interface-wrong-version", lambda c: _endpoint(c).update(interface="::1"),
     "workers[0].transports[0].endpoint.interface: '::1' is an IPv6 address, the endpoint is "
     "IPv4"),
    ("wsgi-module-missing", lambda c: _paths(c)["/"].update(module="no_such_module"),
     f"{P}[\"/\"].module: cannot import WSGI module 'no_such_module': ModuleNotFoundError"),
    ("wsgi-object-missing", lambda c: _paths(c)["/"].update(object="nothing"),
     f"{P}[\"/\"].object: module 'app' ("),
    ("wsgi-object-not-callable", lambda c: _paths(c)["/"].update(object="not_callable"),
     f"{P}[\"/\"].object: app.not_callable is not callable"),
    ("nested-wsgi-module-missing", lambda c: _paths(c).update(
        api={"type": "path", "paths": {"v1": wsgi("gone.app")}}),
     f"{P}.api.paths.v1.module: cannot import WSGI module 'gone.app'"),
    ("component-module-missing", lambda c: _add_component(c, "nowhere.Backend"),
     "workers[0].components[0].classname: cannot import 'nowhere': ModuleNotFoundError"),
    ("component-class-missing", lambda c: _add_component(c, "app.Nothing"),
     "workers[0].components[0].classname: module 'app' has no class 'Nothing'"),
    ("component-without-on-join", lambda c: _add_component(c, "json.JSONDecoder"),
     "workers[0].components[0].classname: json.JSONDecoder has no on_join(session) method"),
    ("static-package-missing", lambda c: _paths(c).update(
        s={"type": "static", "package": "no_such_pkg", "resource": "web"}),
     f"{P}.s.package: cannot import 'no_such_pkg'"),
    ("websocket-without-router", lambda c: c["workers"][0].update(realms=[]),
     f"{P}.ws: a websocket path needs a router worker"),
    ("redirect-control-characters", lambda c: _paths(c).update(
        go={"type": "redirect", "url": "https://x/\r\nSet-Cookie: a=b"}),
     f"{P}.go.url: control characters are not allowed"),
    ("tls-certificate-not-pem", _bad_certificate,
     "workers[0].transports[0].endpoint.tls: cannot load certificate/key"),
    ("realm-unknown", lambda c: _paths(c)["/"].update(wamp={"realm": "nope", "role": "r"}),
     f"{P}[\"/\"].wamp.realm: realm 'nope' is not defined"),
    # the transports, services and workers issue 12 and 14 added
    ("websocket-transport-without-router", lambda c: (
        c["workers"][0].update(realms=[]), _paths(c).pop("ws"),
        _add_transport(c, {"type": "websocket"})),
     "workers[0].transports[1]: a websocket transport needs a router worker with realms"),
    ("universal-rawsocket-flatbuffers", lambda c: _add_transport(
        c, {"type": "universal", "rawsocket": {"serializer": "flatbuffers"}}),
     "workers[0].transports[1].rawsocket.serializer: serializer 'flatbuffers' is not "
     "supported by geonode"),
    ("universal-websocket-flatbuffers", lambda c: _add_transport(
        c, {"type": "universal", "websocket": {"ws": {"serializers": ["flatbuffers"]}}}),
     "workers[0].transports[1].websocket.ws.serializers[0]: serializer 'flatbuffers' is not "
     "supported"),
    ("universal-interface-wrong-version", lambda c: _add_transport(
        c, {"type": "universal", "web": {"paths": {}}}, interface="::1"),
     "workers[0].transports[1].endpoint.interface: '::1' is an IPv6 address"),
    ("longpoll-without-router", lambda c: (
        c["workers"][0].update(realms=[]), _paths(c).pop("ws"),
        _paths(c).update(lp={"type": "longpoll"})),
     f"{P}.lp: a longpoll path needs a router worker with realms"),
    ("longpoll-flatbuffers", lambda c: _paths(c).update(
        lp={"type": "longpoll", "serializers": ["flatbuffers"]}),
     f"{P}.lp.serializers[0]: serializer 'flatbuffers' is not supported"),
    ("mqtt-realm-unknown", lambda c: _add_transport(
        c, {"type": "mqtt", "options": {"realm": "nope"}}),
     "workers[0].transports[1].options.realm: realm 'nope' is not defined"),
    ("mqtt-role-unknown", lambda c: _add_transport(
        c, {"type": "mqtt", "options": {"realm": "realm1", "role": "nobody"}}),
     "workers[0].transports[1].options.role: role 'nobody' is not defined on realm 'realm1'"),
    ("testee-interface-not-an-address", lambda c: c["workers"].append(
        {"type": "websocket-testee", "transport": {"type": "websocket", "endpoint": {
            "type": "tcp", "port": free_port(), "interface": "127.0.0.999"}}}),
     "workers[1].transport.endpoint.interface: '127.0.0.999' is neither an IPv4 address"),
    ("container-restart-never-happens", lambda c: c["workers"].append(
        {"type": "container", "options": {"restart": "restart-always",
                                          "shutdown": "shutdown-on-any-component-stopped"}}),
     "workers[1].options.restart: 'restart-always' won't work with shutdown "
     "'shutdown-on-any-component-stopped'"),
    ("controller-shutdown-unknown", lambda c: c.update(
        controller={"options": {"shutdown": ["shutdown_on_tuesday"]}}),
     "controller.options.shutdown[0]: 'shutdown_on_tuesday' is not one of"),
    # the keys procs, production, services, backplane and auth added
    ("backplane-timeout-under-two-heartbeats", lambda c: c["workers"][0]["options"].update(
        backplane={"type": "redis", "url": "redis://127.0.0.1:1/0", "heartbeat": 2,
                   "timeout": 3}),
     "workers[0].options.backplane.timeout: 3 is less than two heartbeats"),
    ("backplane-tls-ca-missing", lambda c: c["workers"][0]["options"].update(
        backplane={"type": "redis", "url": "rediss://127.0.0.1:1/0",
                   "tls": {"ca_certificates": ["no-ca.crt"]}}),
     "workers[0].options.backplane.tls.ca_certificates[0]: certificate file 'no-ca.crt' not "
     "found"),
    ("forwarded-allow-ips-not-an-address", lambda c: c["workers"][0]["transports"][0].update(
        options={"forwarded_allow_ips": ["10.0.0.0/8", "proxy.example"]}),
     "workers[0].transports[0].options.forwarded_allow_ips[1]: 'proxy.example' is not an IP "
     "address or CIDR"),
    ("universal-forwarded-allow-ips", lambda c: _add_transport(
        c, {"type": "universal", "web": {"paths": {}, "options": {
            "forwarded_allow_ips": "127.0.0.1, 300.1.1.1"}}}),
     "workers[0].transports[1].web.options.forwarded_allow_ips[1]: '300.1.1.1' is not"),
    ("auth-cookie-without-tracking", lambda c: _paths(c)["ws"].update(
        auth={"cookie": {"type": "static"}}),
     f"{P}.ws.auth.cookie: cookie authentication needs cookie tracking"),
    ("wap-templates-missing", lambda c: _paths(c).update(page={
        "type": "wap", "templates": "no_templates", "routes": [{"path": "/", "render": "a.html"}],
        "wamp": {"realm": "realm1", "authrole": "anonymous"}}),
     f"{P}.page.templates: folder 'no_templates' not found"),
    ("upload-directory-missing", lambda c: _paths(c).update(up={
        "type": "upload", "realm": "realm1", "role": "anonymous", "directory": "no_uploads",
        "form_fields": {k: k for k in ("file_name", "mime_type", "total_size", "chunk_number",
                                       "chunk_size", "total_chunks", "content")}}),
     f"{P}.up.directory: folder 'no_uploads' not found"),
    # identical workers on one shared port are served by one (tests/test_crossbar_habits.py)
    ("shared-port-workers-that-differ", lambda c: (
        _endpoint(c).update(shared=True), c["workers"].append(copy.deepcopy(c["workers"][0])),
        c["workers"][1]["realms"][0].update(name="realm2")),
     "workers[1].transports[0].endpoint.shared: port "),
    ("universal-mqtt-realm-unknown", lambda c: _add_transport(
        c, {"type": "universal", "mqtt": {"options": {"realm": "nope"}}}),
     "workers[0].transports[1].mqtt.options.realm: realm 'nope' is not defined"),
    # the keys of the newer path services (typed in geonode.config.services)
    ("status-role-without-auth", lambda c: _paths(c).update(
        st={"type": "status", "realm": "realm1", "role": "ops"}),
     f"{P}.st: 'role' and 'auth' go together (viewers authenticate with 'auth' and must "
     "get 'role')"),
    ("status-auth-without-role", lambda c: _paths(c).update(
        st={"type": "status", "realm": "realm1", "auth": {"anonymous": {"type": "static"}}}),
     f"{P}.st: 'role' and 'auth' go together"),
    ("status-without-router", lambda c: (
        c["workers"][0].update(realms=[]), _paths(c).pop("ws"),
        _paths(c).update(st={"type": "status", "realm": "realm1"})),
     f"{P}.st: a status path needs a router worker (realms)"),
    ("status-realm-without-meta-api", lambda c: (
        c["workers"][0].update(realms=[realm(enable_meta_api=False)]),
        _paths(c).update(st={"type": "status", "realm": "realm1"})),
     f"{P}.st.realm: realm 'realm1' has the meta API off (options.enable_meta_api)"),
    ("cookie-store-folder-missing", lambda c: _paths(c)["ws"].update(
        cookie={"store": {"type": "file", "filename": "no_such_folder/cookies.dat"}}),
     f"{P}.ws.cookie.store.filename: cannot use the cookie file: folder "),
    ("cookie-store-is-a-directory", lambda c: _paths(c)["ws"].update(
        cookie={"store": {"type": "file", "filename": "."}}),
     f"{P}.ws.cookie.store.filename: cannot use the cookie file: "),
    ("cookie-store-under-a-file", lambda c: c["workers"][0]["transports"].append(
        {"type": "websocket", "endpoint": {"type": "tcp", "port": free_port(),
                                           "interface": "127.0.0.1"},
         "cookie": {"store": {"type": "file", "filename": "app.py/cookies.dat"}}}),
     "workers[0].transports[1].cookie.store.filename: cannot use the cookie file: "),
    ("publisher-require-ip-not-a-network", lambda c: _paths(c).update(pub={
        "type": "publisher", "realm": "realm1", "role": "anonymous",
        "options": {"require_ip": ["127.0.0.1", "10.0.0.0/33"]}}),
     f"{P}.pub.options.require_ip[1]: '10.0.0.0/33' is not an IP network"),
    ("caller-require-ip-not-a-network", lambda c: _paths(c).update(call={
        "type": "caller", "realm": "realm1", "role": "anonymous",
        "options": {"require_ip": ["proxy.example"]}}),
     f"{P}.call.options.require_ip[0]: 'proxy.example' is not an IP network"),
    ("archive-not-a-zip", lambda c: _paths(c).update(
        arc={"type": "archive", "archive": "app.py"}),
     f"{P}.arc.archive: "),
    ("archive-hash-mismatch", lambda c: _paths(c).update(
        arc={"type": "archive", "archive": "site.zip", "hashes": ["0" * 64]}),
     f"{P}.arc.hashes: archive "),
    ("upload-temp-directory-under-a-file", lambda c: _paths(c).update(up={
        "type": "upload", "realm": "realm1", "role": "anonymous", "directory": ".",
        "temp_directory": "app.py/scratch",
        "form_fields": {k: k for k in ("file_name", "mime_type", "total_size", "chunk_number",
                                       "chunk_size", "total_chunks", "content")}}),
     f"{P}.up.temp_directory: cannot create "),
    ("wap-template-does-not-compile", lambda c: _paths(c).update(page={
        "type": "wap", "templates": "templates",
        "routes": [{"path": "/", "render": "broken.html"}],
        "wamp": {"realm": "realm1", "authrole": "anonymous"}}),
     f"{P}.page.routes[0].render: "),
    ("wsproxy-url-not-websocket", lambda c: _paths(c).update(proxy={
        "type": "websocket-reverseproxy", "backend": {
            "type": "websocket", "url": "http://127.0.0.1:1/",
            "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 1}}}),
     f"{P}.proxy.backend.url: 'http://127.0.0.1:1/' is not a ws:// or wss:// URL"),
    ("wsproxy-ca-certificate-not-pem", lambda c: _paths(c).update(proxy={
        "type": "websocket-reverseproxy", "backend": {
            "type": "websocket", "url": "wss://127.0.0.1:1/",
            "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": 1,
                         "tls": {"ca_certificates": ["app.py"]}}}}),
     f"{P}.proxy.backend.endpoint.tls.ca_certificates[0]: cannot load "),
]


def _add_transport(cfg: dict, transport: dict, interface: str = "127.0.0.1") -> None:
    """A second transport on a free loopback port."""
    transport["endpoint"] = {"type": "tcp", "port": free_port(), "interface": interface}
    cfg["workers"][0]["transports"].append(transport)


def _lines(stderr: str) -> list[str]:
    """The error lines check printed (each led by its JSON path), first line of each."""
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")
            and not line.startswith("  sys.path")]


@pytest.mark.parametrize("change,line", [(c, s) for _, c, s in BAD], ids=[b[0] for b in BAD])
def test_a_bad_config_is_refused_by_check_and_start_alike(change, line, tmp_path):
    folder = tmp_path / "node"
    folder.mkdir()
    cfg = _good(folder)
    change(cfg)
    _refused_alike(cfg, folder, line)


def _refused_alike(cfg: dict, folder: Path, line: str) -> None:
    (folder / "node.json").write_text(json.dumps(cfg))
    r = check(folder)
    assert r.returncode == 1 and "ok:" not in r.stdout, r.stdout + r.stderr
    assert line in r.stderr, r.stderr
    try:
        s = subprocess.run(geonode_cmd("start", str(folder / "node.json")), cwd=folder,
                           capture_output=True, text=True, timeout=scaled(60))
    except subprocess.TimeoutExpired:
        pytest.fail(f"check refused it, start served it:\n{r.stderr}")
    assert s.returncode == 1, s.stderr
    for said in _lines(r.stderr):
        assert said in s.stderr, f"check said {said!r}; start said:\n{s.stderr}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: no permission to take")
@pytest.mark.parametrize("mode,what", [(0o500, "create files in"),
                                       (0o700, "read and write")])
def test_a_cookie_store_without_permission_is_refused_alike(mode, what, tmp_path):
    folder = tmp_path / "node"
    folder.mkdir()
    cfg = _good(folder)
    store = folder / "store"
    store.mkdir()
    (store / "cookies.dat").write_text("")
    (store / "cookies.dat").chmod(0o000 if mode == 0o700 else 0o600)
    store.chmod(mode)
    _paths(cfg)["ws"]["cookie"] = {"store": {"type": "file", "filename": "store/cookies.dat"}}
    try:
        _refused_alike(cfg, folder, f"{P}.ws.cookie.store.filename: cannot use the cookie "
                                    f"file: no permission to {what}")
    finally:
        store.chmod(0o700)


def test_the_corpus_is_not_empty():
    assert len(GOOD) >= 6 and len(BAD) >= 46
