"""A tiny stand-in for ``geonode.router.Router`` (attach/receive/detach only).

Used by ``tests/test_inprocess.py`` to exercise the in-process session's threading and message
flow in the test process itself; the end-to-end tests go through the real router in a node.
Exact-match topics and procedures only; role "denied" may not publish or call.
"""

from __future__ import annotations

import itertools

import txaio

txaio.use_asyncio()

from autobahn.wamp import message, role  # noqa: E402

_ROLES = {"broker": role.RoleBrokerFeatures(publisher_exclusion=True),
          "dealer": role.RoleDealerFeatures(call_canceling=True)}

_ids = itertools.count(1)


class StandinRouter:
    def __init__(self) -> None:
        self.sessions: dict[int, _RS] = {}
        self.subs: dict[str, tuple[int, set]] = {}
        self.regs: dict[str, tuple[int, _RS]] = {}
        self.calls: dict[int, tuple[_RS, int]] = {}
        self.detached = 0

    def attach(self, peer, auth=None):
        return _RS(self, peer, auth or {})


class _RS:
    def __init__(self, router: StandinRouter, peer, auth: dict) -> None:
        self.router, self.peer, self.auth = router, peer, auth
        self.id = next(_ids)

    def receive(self, msg) -> None:
        r = self.router
        t = type(msg)
        if t is message.Hello:
            r.sessions[self.id] = self
            self.peer.send(message.Welcome(self.id, _ROLES,
                                           authid=self.auth.get("authid"),
                                           authrole=self.auth.get("authrole"),
                                           authmethod="trusted", authprovider="geonode"))
        elif t is message.Subscribe:
            sid, members = r.subs.setdefault(msg.topic, (next(_ids), set()))
            members.add(self)
            self.peer.send(message.Subscribed(msg.request, sid))
        elif t is message.Publish:
            if self.auth.get("authrole") == "denied":
                self.peer.send(message.Error(message.Publish.MESSAGE_TYPE, msg.request,
                                             "wamp.error.not_authorized"))
                return
            pub = next(_ids)
            sid, members = r.subs.get(msg.topic, (0, set()))
            for s in members:
                if s is not self or msg.exclude_me is False:
                    s.peer.send(message.Event(sid, pub, args=msg.args, kwargs=msg.kwargs))
            if msg.acknowledge:
                self.peer.send(message.Published(msg.request, pub))
        elif t is message.Register:
            r.regs[msg.procedure] = (next(_ids), self)
            self.peer.send(message.Registered(msg.request, r.regs[msg.procedure][0]))
        elif t is message.Call:
            if msg.procedure not in r.regs:
                self.peer.send(message.Error(message.Call.MESSAGE_TYPE, msg.request,
                                             "wamp.error.no_such_procedure"))
                return
            rid, callee = r.regs[msg.procedure]
            inv = next(_ids)
            r.calls[inv] = (self, msg.request)
            callee.peer.send(message.Invocation(inv, rid, args=msg.args, kwargs=msg.kwargs))
        elif t is message.Yield:
            caller, req = r.calls.pop(msg.request)
            caller.peer.send(message.Result(req, args=msg.args, kwargs=msg.kwargs))
        elif t is message.Error:
            caller, req = r.calls.pop(msg.request)
            caller.peer.send(message.Error(message.Call.MESSAGE_TYPE, req, msg.error,
                                           args=msg.args, kwargs=msg.kwargs))
        elif t is message.Cancel:
            pass
        elif t is message.Goodbye:
            self.peer.send(message.Goodbye())
        else:
            raise AssertionError(f"stand-in router got {msg!r}")

    def detach(self) -> None:
        self.router.detached += 1
        self.router.sessions.pop(self.id, None)
