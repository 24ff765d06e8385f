"""geonode's MQTT transport vs Crossbar's and vs Debian's mosquitto: ``python bench/mqtt/run.py``.

Messages per second through the broker, one publisher to one subscriber, QoS 0 and QoS 1:

- ``mqtt-mqtt``: MQTT publisher, MQTT subscriber (geonode, Crossbar, mosquitto: the C broker
  is the ceiling for MQTT alone);
- ``mqtt-wamp``: MQTT publisher, WAMP subscriber over RawSocket (geonode, Crossbar);
- ``wamp-mqtt``: WAMP publisher over RawSocket, MQTT subscriber (geonode, Crossbar).

QoS 1: the MQTT publisher waits for PUBACKs, the MQTT subscriber acknowledges every message, a
WAMP publisher asks for acknowledgements; at most ``--window`` messages unacknowledged or
undelivered (loads.py). The load generator is lean (wire.py: pre-built packets, headers
parsed, nothing decoded); its CPU is printed beside each rate.

All servers get the same topics and mapping: ``passthrough`` for the MQTT publisher's topic,
``native`` json for the WAMP publisher's (Crossbar's passthrough cannot carry a WAMP event with
arguments to MQTT). mosquitto runs with ``set_tcp_nodelay true`` (without it Nagle's algorithm
caps it at ~1/2 of its rate here) and no persistence. The servers take turns round by round,
so a noisy moment on the shared machine hits all; the ratios reported are medians of each
round's ratios. Configs and logs: bench/.work/mqtt/<time>-<pid>/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import common  # noqa: E402
import loads  # noqa: E402

#: flow name -> (publisher kind, subscriber kind)
FLOWS = {"mqtt-mqtt": ("mqtt", "mqtt"), "mqtt-wamp": ("mqtt", "wamp"),
         "wamp-mqtt": ("wamp", "mqtt")}
TARGETS = {"crossbar": 3.0, "mosquitto": 0.5}


def node_config(mqtt_port: int, rs_port: int) -> dict:
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{"name": loads.REALM, "roles": [{
                "name": "anonymous",
                "permissions": [{"uri": "", "match": "prefix",
                                 "allow": {"call": True, "register": True, "publish": True,
                                           "subscribe": True},
                                 "disclose": {"caller": False, "publisher": False},
                                 "cache": True}],
            }]}],
            "transports": [
                {"type": "mqtt",
                 "endpoint": {"type": "tcp", "port": mqtt_port, "interface": "127.0.0.1"},
                 "options": {"realm": loads.REALM, "role": "anonymous", "payload_mapping": {
                     "": {"type": "passthrough"},
                     loads.NATIVE_PREFIX: {"type": "native", "serializer": "json"},
                     # Crossbar looks an exact subscription's events up by the MQTT topic
                     # (not the WAMP URI): this entry makes it find "native" (docs/mqtt.md)
                     loads.MQTT_NATIVE.rsplit("/", 1)[0] + "/": {"type": "native",
                                                                 "serializer": "json"}}}},
                {"type": "rawsocket",
                 "endpoint": {"type": "tcp", "port": rs_port, "interface": "127.0.0.1"},
                 "serializers": ["msgpack"]},
            ],
        }],
    }


class Broker:
    """One server under test: its MQTT port, its RawSocket port (None: MQTT only)."""

    def __init__(self, name: str, server: common.Server, mqtt_port: int,
                 rs_port: int | None) -> None:
        self.name, self.server, self.mqtt_port, self.rs_port = name, server, mqtt_port, rs_port

    def port(self, kind: str) -> int | None:
        return self.mqtt_port if kind == "mqtt" else self.rs_port


def mosquitto_exe() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None)


def start(name: str, tmp: Path, crossbar: str | None) -> Broker:
    d = tmp / name
    mqtt_port, rs_port = common.free_port(), common.free_port()
    if name == "mosquitto":
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nset_tcp_nodelay true\n")
        server = common.Server(name, [mosquitto_exe(), "-c", str(conf)], d, mqtt_port,
                               tmp / f"{name}.log")
        server.start()
        return Broker(name, server, mqtt_port, None)
    cfg = node_config(mqtt_port, rs_port)
    if name == "geonode":
        path = common.write_config(d, "node.json", cfg)
        cmd = common.geonode_cmd(path, "--loglevel", "warning")
    else:
        common.write_config(d, "config.json", cfg)
        cmd = common.crossbar_cmd(common.crossbar_exe(crossbar), d)
    server = common.Server(name, cmd, d, mqtt_port, tmp / f"{name}.log")
    server.start(ready=lambda: common.port_open(mqtt_port) and common.port_open(rs_port))
    time.sleep(0.5)  # Crossbar opens its ports before its realm is fully up
    return Broker(name, server, mqtt_port, rs_port)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_crossbar_option(p)
    p.add_argument("--no-mosquitto", action="store_true", help="no mosquitto ceiling")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--window", type=int, default=2000,
                   help="most messages unacknowledged/undelivered at a time")
    p.add_argument("--flows", default=",".join(FLOWS), help=f"of {', '.join(FLOWS)}")
    p.add_argument("--summary", help="write run_all's summary rows (JSON) here")
    args = p.parse_args()
    flows = [f for f in args.flows.split(",") if f]
    if unknown := [f for f in flows if f not in FLOWS]:
        p.error(f"unknown flow(s) {', '.join(unknown)}: choose of {', '.join(FLOWS)}")
    names = ["geonode"]
    if not args.no_crossbar:
        names.append("crossbar")
    if not args.no_mosquitto:
        if mosquitto_exe() is None:
            raise SystemExit("mosquitto not found (apt-get install mosquitto), or --no-mosquitto")
        names.append("mosquitto")
    tmp = common.WORK / "mqtt" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    common.raise_nofile()
    brokers = [start(n, tmp, args.crossbar) for n in names]
    results: dict[tuple[str, str, int], list[loads.Result]] = {}
    try:
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            for flow in flows:
                pub_kind, sub_kind = FLOWS[flow]
                for qos in (0, 1):
                    # a different order each round: no server always runs right after another
                    order = brokers[rnd % len(brokers):] + brokers[:rnd % len(brokers)]
                    for b in order:
                        pub_port, sub_port = b.port(pub_kind), b.port(sub_kind)
                        if pub_port is None or sub_port is None:
                            continue
                        r = loads.flow(pub_port, sub_port, pub_kind, sub_kind, qos,
                                       args.duration, b.server.pids, window=args.window,
                                       tag=f"{rnd}{qos}")
                        results.setdefault((b.name, flow, qos), []).append(r)
                        # nothing delivered (a server starved on the busy machine, or
                        # broken): a 0 in this round's cell, no ratio from it; see its log
                        print(f"  {b.name:9} {flow} QoS {qos}: {r.rate:9.0f} msg/s   "
                              f"server cpu {r.server_cpu:4.0%}  load generator cpu "
                              f"{r.client_cpu:4.0%}"
                              + ("" if r.delivered else f"   NOTHING DELIVERED (in all: sent {r.sent}, "
                                                     f"acknowledged {r.acked}, got {r.got})"),
                              flush=True)
                        time.sleep(0.2)
    finally:
        for b in brokers:
            b.server.stop()
    rows = report(results, names, flows, args.rounds)
    common.write_summary(args.summary, "mqtt", rows,
                         client_cpu=max((r.client_cpu for rs in results.values() for r in rs),
                                        default=0.0))
    print(f"\nconfigs and logs: {tmp}")


def report(results: dict, names: list[str], flows: list[str], rounds: int) -> list[dict]:
    print("\n| flow | QoS | " + " | ".join(f"{n} msg/s" for n in names) + " | "
          + " | ".join(f"geonode/{n}" for n in names[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(names) - 1))
    rows = []
    for flow in flows:
        for qos in (0, 1):
            g = results.get(("geonode", flow, qos))
            if not g:
                continue
            cells, ratios = [], []
            for n in names:
                rs = results.get((n, flow, qos))
                cells.append(f"{statistics.median(r.rate for r in rs):.0f}" if rs else "-")
            for n in names[1:]:
                rs = results.get((n, flow, qos))
                if not rs:
                    ratios.append("-")
                    continue
                # the median of each round's ratio: both measured within seconds of each other
                per_round = [a.rate / b.rate for a, b in zip(g, rs, strict=False) if b.rate]
                if not per_round:
                    ratios.append(f"- ({n} delivered nothing)")
                    continue
                ratio = statistics.median(per_round)
                ratios.append(f"{ratio:.2f}x (target {TARGETS[n]:g}x)")
                rows.append({**common.compare(f"MQTT {flow} QoS {qos}", "msg/s",
                                              statistics.median(r.rate for r in g), n,
                                              statistics.median(r.rate for r in rs),
                                              target=TARGETS[n]), "ratio": ratio,
                             "ok": ratio >= TARGETS[n]})
            print(f"| {flow} | {qos} | " + " | ".join(cells) + " | " + " | ".join(ratios)
                  + " |")
    cpu = max((r.client_cpu for rs in results.values() for r in rs), default=0.0)
    print(f"\nload generator CPU at most {cpu:.0%} of a core ({rounds} rounds)")
    return rows


if __name__ == "__main__":
    main()
