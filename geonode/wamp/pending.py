"""A session's state, named: what it keeps alive across re-joins (``Want``), what it awaits from
the router (``Request``), what callers hand its hub greenlet besides WAMP messages
(``WantChange``, ``Reply``) and what its handlers run (``Job``).

Plain records with ``__slots__``: thousands may be in flight, and a name reads better than a
tuple's position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autobahn.wamp import message
from autobahn.wamp.message import Message  # (the method message() hides the module below)

if TYPE_CHECKING:
    from geonode.wamp.waiters import Waiter

SUBSCRIBE, REGISTER = "subscribe", "register"


class Want:
    """A subscription or registration the session keeps alive across re-joins."""

    __slots__ = ("kind", "uri", "fn", "on_hub", "match", "invoke", "wamp_id", "details")

    def __init__(self, kind: str, uri: str, fn: Callable, on_hub: bool,
                 match: str | None, invoke: str | None, details: bool = False) -> None:
        self.kind, self.uri, self.fn, self.on_hub = kind, uri, fn, on_hub
        self.match, self.invoke, self.details = match, invoke, details
        #: the router's subscription/registration id while joined and made, else None
        self.wamp_id: int | None = None

    def message(self, request: int) -> message.Message:
        """The SUBSCRIBE or REGISTER that makes it."""
        if self.kind == SUBSCRIBE:
            return message.Subscribe(request, self.uri, match=self.match)
        return message.Register(request, self.uri, match=self.match, invoke=self.invoke)

    def undo(self, request: int, wamp_id: int) -> Message:
        """The UNSUBSCRIBE or UNREGISTER of the router's ``wamp_id`` for it."""
        if self.kind == SUBSCRIBE:
            return message.Unsubscribe(request, wamp_id)
        return message.Unregister(request, wamp_id)


@dataclass(slots=True)
class Request:
    """A message sent to the router whose answer is awaited, by its request id.

    ``kind``: "publish" (acknowledged), "call", "subscribe", "register", "unsubscribe",
    "unregister". ``waiter`` gets the answer (None: nobody waits, failures are logged);
    ``want`` is the subscription or registration being made or undone."""

    kind: str
    waiter: Waiter | None
    want: Want | None = None


@dataclass(slots=True)
class WantChange:
    """From a thread calling subscribe/register (``add``) or unsubscribe/unregister (not
    ``add``) to the session's hub greenlet; ``waiter`` gets the router's answer."""

    want: Want
    add: bool
    waiter: Waiter


@dataclass(slots=True)
class Reply:
    """An endpoint's YIELD or ERROR, for the router session its INVOCATION came from (never
    a later one: after a re-join the old request ids mean nothing)."""

    message: message.Message
    router_session: Any


@dataclass(slots=True)
class Job:
    """One run of a handler (an EVENT) or an endpoint (``invocation``: the INVOCATION it
    answers) of ``want``."""

    want: Want
    args: Sequence = ()
    kwargs: dict = field(default_factory=dict)
    invocation: message.Invocation | None = None
