"""geonode's shared serializers against autobahn's own (the wire format real clients use)."""

from __future__ import annotations

import pytest
import txaio

txaio.use_asyncio()  # before autobahn.wamp.serializer is imported

from autobahn.wamp import message as M  # noqa: E402
from autobahn.wamp import serializer as AS  # noqa: E402
from support import scaled  # noqa: E402

from geonode.transport import serializers as ser  # noqa: E402

AUTOBAHN = {"json": AS.JsonSerializer, "msgpack": AS.MsgPackSerializer,
            "cbor": AS.CBORSerializer, "ubjson": AS.UBJSONSerializer}
NAMES = [f"{b}{s}" for b in AUTOBAHN for s in ("", ".batched")]


def _event() -> M.Event:
    return M.Event(2**52 + 7, 4242, args=[1, "hellö", {"a": 1.5, "n": None}, b"\x00\x01bin",
                                          -(2**40)],
                   kwargs={"x": [True, False], "big": 2**60})


def _autobahn(name: str):
    base, _, batched = name.partition(".")
    return AUTOBAHN[base](batched=bool(batched))


@pytest.mark.inprocess
@pytest.mark.parametrize("name", NAMES)
def test_autobahn_reads_what_we_write(name):
    ours, theirs = ser.get(name), _autobahn(name)
    ev = _event()
    one = ours.serialize(ev)
    payload = ours.join([one, one]) if ours.batched else one
    if isinstance(payload, str):
        payload = payload.encode()
    msgs = theirs.unserialize(payload, isBinary=ours.binary)
    assert len(msgs) == (2 if ours.batched else 1)
    for m in msgs:
        assert m.args == ev.args and m.kwargs == ev.kwargs and m.publication == 4242


@pytest.mark.inprocess
@pytest.mark.parametrize("name", NAMES)
def test_we_read_what_autobahn_writes(name):
    ours, theirs = ser.get(name), _autobahn(name)
    msg = M.Publish(77, "com.example.topic", args=[b"\xff", "ü", 3.25], kwargs={"k": [1, 2]},
                    acknowledge=True)
    data, is_binary = theirs.serialize(msg)
    assert is_binary == ours.binary
    got = ours.unserialize(data if is_binary else data.decode())
    assert got == [msg] and got[0].args == msg.args and got[0].kwargs == msg.kwargs


@pytest.mark.inprocess
def test_one_encoding_per_message_and_serializer():
    """An EVENT sent to many subscribers is encoded once per serializer type."""
    ev = _event()
    first = ser.get("json").serialize(ev)
    assert ser.get("json").serialize(ev) is first
    assert ser.get("msgpack").serialize(ev) is ser.get("msgpack").serialize(ev)
    assert ser.get("json.batched").serialize(ev) == first + "\x18"


@pytest.mark.inprocess
@pytest.mark.parametrize("name,payload", [
    ("json", ""), ("json", "[1, 2"), ("json", "{}"), ("json", "[]"), ("json", "[999]"),
    ("json", '["HELLO"]'), ("json", "[16]"), ("json", "[16, 1, {}, 5]"),
    ("json.batched", "\x18"), ("msgpack", b"\xc1"), ("msgpack", "text"),
    ("msgpack.batched", b"\x00\x00\x00\x09\x91"), ("cbor", b"\xff"),
])
def test_garbage_is_a_protocol_error(name, payload):
    with pytest.raises(ser.ProtocolError):
        ser.get(name).unserialize(payload)


@pytest.mark.inprocess
def test_json_binary_convention_only_when_present():
    js = ser.get("json")
    [m] = js.unserialize('[16, 1, {}, "a.b", ["\\u0000AAE=", "plain"]]')
    assert m.args == [b"\x00\x01", "plain"]


@pytest.mark.inprocess
def test_lookup_helpers():
    assert ser.by_subprotocol("wamp.2.cbor.batched") is ser.get("cbor.batched")
    assert ser.by_subprotocol("wamp.2.xml") is None
    assert ser.by_rawsocket_id(2) is ser.get("msgpack")
    assert ser.available()[-1] == "json"


@pytest.mark.inprocess
def test_message_table_matches_autobahn():
    assert ser.MESSAGE_CLASSES == AS.Serializer.MESSAGE_TYPE_MAP


def test_import_leaves_numpy_until_first_ubjson_message():
    """bjdata (and numpy behind it) is ~10 MB a node without ubjson clients never needs."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from geonode.transport import serializers as ser\n"
        "loaded = lambda m: type(sys.modules.get(m)).__name__ == 'module'\n"
        "heavy = ('numpy', 'bjdata', 'autobahn.wamp.serializer', 'autobahn.flatbuffers')\n"
        "print(sorted(m for m in heavy if loaded(m)))\n"
        "from autobahn.wamp import message as M\n"
        "ub = ser.get('ubjson')\n"
        "[m] = ub.unserialize(ub.serialize(M.Event(1, 2, args=[2**40, 'x'])))\n"
        "print(m.args, loaded('bjdata'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=scaled(60), check=True).stdout.splitlines()
    assert out == ["[]", "[1099511627776, 'x'] True"]


# -- the join's shared messages (issue 16: a HELLO parsed once per distinct payload) ----------

HELLO = ('[1,"realm1",{"roles":{"subscriber":{"features":{"payload_transparency":true}},'
         '"publisher":{},"caller":{},"callee":{}},"authmethods":["anonymous"]}]')


@pytest.mark.inprocess
def test_identical_hello_and_subscribe_payloads_share_one_parsed_message():
    s = ser.get("json")
    first, again = s.unserialize(HELLO)[0], s.unserialize(HELLO)[0]
    assert again is first   # decoded and validated once (fails without the cache)
    assert first == M.Hello.parse(__import__("json").loads(HELLO))
    assert sorted(first.roles) == ["callee", "caller", "publisher", "subscriber"]
    sub = '[32,1,{},"com.example.topic"]'
    assert s.unserialize(sub)[0] is s.unserialize(sub)[0]
    # per-client credentials and other messages are parsed every time
    with_authid = HELLO[:-2] + ',"authid":"alice"}]'
    assert s.unserialize(with_authid)[0] is not s.unserialize(with_authid)[0]
    call = '[48,1,{},"com.example.proc"]'
    assert s.unserialize(call)[0] is not s.unserialize(call)[0]
    packed = ser.get("msgpack")
    raw = __import__("msgpack").packb([1, "realm1", {"roles": {"caller": {}}}])
    assert packed.unserialize(raw)[0] is packed.unserialize(raw)[0]


BAD_HELLOS = [
    '[1,"bad realm!",{"roles":{"caller":{}}}]',               # realm is no URI
    '[1,"realm1",{"roles":{"caller":{}, "broker":{}}}]',      # a router's role
    '[1,"realm1",{"roles":{"caller":{"features":{"progressive_call_results":1}}}}]',
    '[1,"realm1",{"roles":{}}]',
    '[1,"realm1",{}]',
    '[1,"realm1",{"roles":{"caller":{}},"authmethods":"anonymous"}]',
    '[1,"realm1",{"roles":{"caller":{}}},"extra"]',
    '[1,"realm1",{"roles":{"caller":{}},"authid":7}]',
    '[1,"realm1",{"roles":{"caller":{}},"x":"' + "y" * 2_000_000 + '"]',  # huge, and invalid
]


@pytest.mark.inprocess
@pytest.mark.parametrize("bad", BAD_HELLOS, ids=range(len(BAD_HELLOS)))
def test_a_hello_autobahn_refuses_is_refused_the_same_with_the_cache_warm(bad):
    s = ser.get("json")
    s.unserialize(HELLO)   # the common HELLO cached
    with pytest.raises(ser.ProtocolError) as cold:
        s._unserialize(bad)
    for _ in range(2):   # never cached: refused again, with the same words
        with pytest.raises(ser.ProtocolError) as warm:
            s.unserialize(bad)
        assert str(warm.value) == str(cold.value)
    assert bad not in s._parsed


@pytest.mark.inprocess
def test_a_hello_over_the_cache_size_is_parsed_each_time():
    s = ser.get("json")
    big = '[1,"realm1",{"roles":{"caller":{}},"x":"' + "y" * 2000 + '"}]'
    assert s.unserialize(big)[0] is not s.unserialize(big)[0]


@pytest.mark.inprocess
def test_the_parsed_cache_is_bounded():
    s = ser.get("json")
    for i in range(3 * ser._PARSED_MAX):
        s.unserialize(f'[32,1,{{}},"com.example.t{i}"]')
        assert len(s._parsed) <= ser._PARSED_MAX


class _CountingDict(dict):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key, default=None):
        self.gets += 1
        return super().get(key, default)


@pytest.mark.inprocess
@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_only_what_can_be_a_hello_or_subscribe_is_looked_up(name, monkeypatch):
    # every other message would pay for hashing its payload (a PUBLISH, a CALL: the hot path)
    s = ser.get(name)
    parsed = _CountingDict()
    monkeypatch.setattr(s, "_parsed", parsed)
    enc = (lambda m: __import__("json").dumps(m, separators=(",", ":"))) if name == "json" \
        else __import__("msgpack").packb
    for msg in ([16, 7, {}, "com.example.topic", [1, 2]], [48, 9, {}, "com.example.proc"],
                [70, 3, {}, ["ok"]]):
        s.unserialize(enc(msg))
    assert parsed.gets == 0
    for msg in ([1, "realm1", {"roles": {"caller": {}}}], [32, 1, {}, "com.example.topic"],
                [32, 70_000, {}, "com.example.topic"]):
        assert s.unserialize(enc(msg))[0] is s.unserialize(enc(msg))[0]
    assert parsed.gets == 6
