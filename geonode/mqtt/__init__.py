"""MQTT 3.1.1 as a face of the WAMP router (Crossbar's MQTT transport, docs/mqtt.md).

``codec``    the wire format: fixed header, packet bodies in and out, protocol checks
``topics``   MQTT topic names and filters <-> WAMP URIs and subscriptions
``payload``  payload mapping (passthrough, native, dynamic) between MQTT bytes and WAMP events
``session``  an MQTT session: the router's Peer, kept across connections when not clean
``service``  one transport's options, sessions and CONNECT handling
``transport`` the sockets: connections on a StreamServer, ``serve_connection`` (one accepted
             socket, the universal transport's seam); the only module here that touches one

Above ``geonode.transport`` (layers: docs/ARCHITECTURE.md): MQTT sessions are Peers built on
its queue and serializers.
"""
