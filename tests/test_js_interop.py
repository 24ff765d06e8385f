"""autobahn|js (Node) against geonode, json/msgpack/cbor, side by side with autobahn-python."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import router_config, scaled, web_transport
from support.wamp import leave, ws_session

JS = Path(__file__).resolve().parent / "js"

pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node/npm not installed")


@pytest.fixture(scope="module")
def node(start_module_node):
    if not (JS / "node_modules" / "autobahn").is_dir():
        subprocess.run(["bash", str(JS / "install.sh")], check=True, timeout=scaled(300))
    return start_module_node(router_config([web_transport({"ws": {"type": "websocket"}})]))


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_autobahn_js(node, serializer):
    async def main():
        loop = asyncio.get_running_loop()
        py = await ws_session(node.port, "cbor")
        await py.register(lambda *args: list(args), "com.py.echo")
        got = loop.create_future()
        await py.subscribe(lambda *a: got.done() or got.set_result(list(a)), "com.py.topic")
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS / "interop.js"), f"{node.ws_url}/ws", serializer,
            str(int(scaled(20) * 1000)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=JS)
        out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
        assert proc.returncode == 0, err.decode()
        seen = json.loads(out.decode().strip().splitlines()[-1])
        assert seen["protocol"] == f"wamp.2.{serializer}"
        assert seen["sum"] == 15
        assert seen["event"] == {"args": [1, "two", {"three": 3}], "kwargs": {"k": "v"}}
        assert seen["error"] == "wamp.error.no_such_procedure"
        assert seen["py"] == ["hi", 42]
        assert await asyncio.wait_for(got, scaled(5)) == ["from js", serializer]
        await leave(py)

    asyncio.run(asyncio.wait_for(main(), scaled(60)))
