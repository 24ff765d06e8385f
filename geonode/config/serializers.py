"""Which WAMP serializers a config may name, and which of them this installation has.

Here, below the transports, so that ``geonode check`` refuses what ``geonode start`` could not
serve (``"flatbuffers"``, or ``"cbor"`` without cbor2) with the same line; the transports
(``geonode.transport.serializers``) build exactly the installed ones.
"""

from __future__ import annotations

import functools
import importlib.util

#: the serializer names geonode speaks (Crossbar's, without flatbuffers)
SUPPORTED = ("json", "msgpack", "cbor", "ubjson")
#: Crossbar's names geonode does not speak
UNSUPPORTED = ("flatbuffers",)
#: a transport without ``serializers`` offers every installed one, in this order (Crossbar's)
PREFERENCE = ("cbor", "msgpack", "ubjson", "json")
#: the library behind each binary serializer (json needs none); looked up, not imported: bjdata
#: imports numpy, loaded on the first ubjson message only
LIBRARIES = {"msgpack": "msgpack", "cbor": "cbor2", "ubjson": "bjdata"}


@functools.cache
def installed() -> tuple[str, ...]:
    """The supported serializers whose library is installed, in ``PREFERENCE`` order."""
    out = []
    for name in PREFERENCE:
        library = LIBRARIES.get(name)
        try:
            if library is not None and importlib.util.find_spec(library) is None:
                continue
        except (ImportError, ValueError):
            continue
        out.append(name)
    return tuple(out)
