"""WAMP error and close URIs: the one vocabulary of the router, the transports, ``geonode.wamp``
and the bridge. Import a name from here rather than spelling a URI again.

Where autobahn names a URI (``ApplicationError``'s constants) its constant is used, so a URI is
spelled once in the whole process. WAMP close reasons (GOODBYE/ABORT ``reason``) are prefixed
``CLOSE_``; WebSocket close *codes* are integers and live in ``geonode.websocket.frames``.
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError as _AE

#: every URI of the WAMP spec's own errors starts so (a router's answer, not an app's)
WAMP_ERROR_PREFIX = "wamp.error."

# -- authentication and joining (ABORT) --------------------------------------------------------
NOT_AUTHORIZED = _AE.NOT_AUTHORIZED
AUTHENTICATION_FAILED = _AE.AUTHENTICATION_FAILED
NO_SUCH_REALM = _AE.NO_SUCH_REALM
NO_SUCH_ROLE = _AE.NO_SUCH_ROLE
NO_AUTH_METHOD = _AE.NO_AUTH_METHOD
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"

# -- requests (ERROR) -------------------------------------------------------------------------
INVALID_URI = _AE.INVALID_URI
INVALID_ARGUMENT = _AE.INVALID_ARGUMENT
INVALID_PAYLOAD = _AE.INVALID_PAYLOAD
PAYLOAD_SIZE_EXCEEDED = _AE.PAYLOAD_SIZE_EXCEEDED
NO_SUCH_PROCEDURE = _AE.NO_SUCH_PROCEDURE
NO_SUCH_REGISTRATION = _AE.NO_SUCH_REGISTRATION
NO_SUCH_SUBSCRIPTION = _AE.NO_SUCH_SUBSCRIPTION
NO_SUCH_SESSION = _AE.NO_SUCH_SESSION
PROCEDURE_ALREADY_EXISTS = _AE.PROCEDURE_ALREADY_EXISTS
POLICY_CONFLICT = _AE.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT
CANCELED = _AE.CANCELED
TIMEOUT = _AE.TIMEOUT
LIMIT_EXCEEDED = "wamp.error.limit_exceeded"
#: an invocation's callee unregistered (or was revoked) before it answered
UNREGISTERED = "wamp.error.unregistered"
TESTAMENT_ERROR = "wamp.error.testament_error"
HISTORY_UNAVAILABLE = "wamp.error.history_unavailable"
#: Crossbar's URI for a call refused by a registration's concurrency limit
MAX_CONCURRENCY = "crossbar.error.max_concurrency_reached"
#: the backplane (docs/scaling.md) is down or its queue full: a call to another node's callee
#: or an acknowledged publish could not be delivered (never a false success)
UNAVAILABLE = "wamp.error.unavailable"
#: an endpoint raised something other than ApplicationError (autobahn's convention)
RUNTIME_ERROR = "wamp.error.runtime_error"

# -- geonode.wamp, the in-process session ------------------------------------------------------
#: publish/call before any router runs in this process
NO_ROUTER = "wamp.error.no_router"
#: a thread waited too long for room in the session's queue to the router
OVERLOADED = "wamp.error.overloaded"

# -- close reasons (GOODBYE, ABORT) ------------------------------------------------------------
CLOSE_NORMAL = "wamp.close.normal"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
CLOSE_KILLED = "wamp.close.killed"
#: a client's GOODBYE reason that also ends its cookie login (Crossbar)
CLOSE_LOGOUT = "wamp.close.logout"
#: the in-process session's peer went away without a GOODBYE
CLOSE_TRANSPORT_LOST = "wamp.close.transport_lost"
