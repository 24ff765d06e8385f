"""The HTTP bridge, both directions (Crossbar's semantics; see docs/bridge.md).

HTTP → WAMP path services: ``publisher``, ``caller``, ``webhook`` (shared checks in ``common``,
signed requests in ``signing``). WAMP → HTTP router components: ``forwarder.MessageForwarder``
(HTTP subscriber) and ``restcallee.RESTCallee`` (HTTP callee), over ``httpclient``.
"""
