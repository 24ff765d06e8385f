"""The ``geonode`` command line.

    geonode [start] [OPTIONS] [CONFIG]   run a node (default command; --processes N, --port P,
                                         --shutdown-timeout S, --loglevel L, --logformat F)
    geonode dev CONFIG                   run it, restarting on code changes
    geonode check CONFIG                 validate a config, no side effects
    geonode stop / status [--cbdir D]    stop / ask about the node running from a directory
    geonode init [DIR]                   write a starter node
    geonode version                      versions of geonode and its stack (--version: ours)

CONFIG defaults to ``node.json``, else (as ``crossbar start``) ``.crossbar/config.yaml`` or
``.crossbar/config.json``; ``--cbdir D`` looks in D instead. The node directory (``--cbdir``, else
the config's folder) holds the pid file ``node.pid`` that ``stop`` and ``status`` read.

Heavy modules (gevent, the config schema, the node) are imported inside the commands, and
``start``/``dev`` monkey-patch with gevent before importing anything else of weight, so that
every later import (the user's app included) sees the patched stdlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from geonode.logs import FORMATS as LOGFORMATS
from geonode.logs import LEVELS as LOGLEVELS
from geonode.logs import level_name

COMMANDS = ("start", "dev", "check", "init", "version", "stop", "status")
DEFAULT_CONFIG = "node.json"
#: Crossbar's node directory and the config names it looks for there, in its order
CROSSBAR_DIR = ".crossbar"
CROSSBAR_CONFIGS = ("config.yaml", "config.json")
#: options that take a value: _normalize skips the value when it looks for the command
_VALUED = ("--loglevel", "--logformat", "--processes", "--port", "--shutdown-timeout",
           "--cbdir", "--config", "--assert")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geonode",
        description="A Crossbar.io-style application node (WSGI apps + WAMP router) in one "
                    "gevent process. 'geonode node.json' is short for 'geonode start node.json'.",
    )
    parser.add_argument("--version", action="store_true",
                        help="print geonode's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--loglevel", type=level_name, choices=LOGLEVELS, default="info",
                       help="log level, any case (default: info)")

    def located(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", default=None,
                       help=f"node config, .json or .yaml (default: {DEFAULT_CONFIG}, else "
                            f"{CROSSBAR_DIR}/config.yaml or config.json)")
        p.add_argument("--config", dest="config_opt", metavar="CONFIG", default=None,
                       help="node config (as crossbar's --config: relative to --cbdir)")
        p.add_argument("--cbdir", default=None,
                       help="node directory: where the config is looked for and the pid file "
                            "node.pid is kept (default: the config's folder)")

    p = sub.add_parser("start", help="run the node described by CONFIG (the default command)")
    located(p)
    p.add_argument("--reload", action="store_true",
                   help="restart the node when a Python file or the config changes (dev mode)")
    p.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                   help="serve with N processes sharing every endpoint (default: 1); a router "
                        "that serves WAMP needs options.backplane for N > 1")
    p.add_argument("--port", type=_port, default=os.environ.get("GEONODE_PORT") or None,
                   help="the first TCP endpoint's port instead of the config's "
                        "(default: $GEONODE_PORT)")
    p.add_argument("--shutdown-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="the whole graceful stop after SIGTERM (default: "
                        "controller.options.shutdown_timeout, else 8)")
    p.add_argument("--logformat", choices=LOGFORMATS, default="standard",
                   help="standard: one text line per event; json: one JSON object per line")
    common(p)

    p = sub.add_parser("dev", help="run the node and restart it when code or config changes")
    located(p)
    common(p)

    p = sub.add_parser("check", help="validate CONFIG: 'ok' (exit 0) or every error (exit 1)")
    located(p)
    p.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                   help="also check that the config can be served by N processes")
    common(p)

    p = sub.add_parser("stop", help="stop the node running from the node directory (SIGTERM)")
    located(p)
    p.add_argument("--shutdown-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="how long to wait for it to stop before SIGKILL (default: 8 + 2)")
    common(p)

    p = sub.add_parser("status", help="whether a node runs from the node directory")
    located(p)
    p.add_argument("--assert", dest="assert_state", choices=("running", "stopped"),
                   default=None, help="exit 1 unless the node is in this state")
    common(p)

    p = sub.add_parser("init", help="write a starter node (node.json, a Flask app, static files)")
    p.add_argument("dir", nargs="?", default=".", help="target folder (default: .)")
    common(p)

    p = sub.add_parser("version", help="print the versions of geonode and its stack")
    common(p)
    return parser


def _normalize(argv: list[str]) -> list[str]:
    """Put the command first, inserting ``start`` when none is given.

    ``geonode node.json`` and ``geonode --loglevel debug check x.json`` both work this way.
    """
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUED:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        if a in COMMANDS:
            return [a, *argv[:i], *argv[i + 1:]]
        return ["start", *argv]
    if any(a in ("-h", "--help", "--version") for a in argv):
        return argv
    return ["start", *argv] if argv else argv


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return n


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: a port is 0-65535")
    return n


def _seconds(value: str) -> float:
    x = float(value)
    if not 0 <= x <= 3600:
        raise argparse.ArgumentTypeError(f"{value}: 0-3600 seconds")
    return x


def config_path(args: argparse.Namespace) -> Path:
    """The config a command works on: the positional CONFIG or --config (relative to
    --cbdir when given and not found as it is), else node.json, else Crossbar's
    ``.crossbar/config.yaml|json`` (in --cbdir when given)."""
    given = args.config or args.config_opt
    cbdir = Path(args.cbdir) if args.cbdir else None
    if given:
        p = Path(given)
        if cbdir is not None and not p.is_absolute() and not p.exists():
            p = cbdir / p
        return p
    if cbdir is None:
        if Path(DEFAULT_CONFIG).is_file():
            return Path(DEFAULT_CONFIG)
        cbdir = Path(CROSSBAR_DIR)
    for name in CROSSBAR_CONFIGS:
        if (cbdir / name).is_file():
            return cbdir / name
    return Path(DEFAULT_CONFIG) if args.cbdir is None else cbdir / CROSSBAR_CONFIGS[1]


def node_dir(args: argparse.Namespace, config: Path) -> Path:
    """The node directory: --cbdir, else the config's folder (the config itself when it is
    a folder: ``geonode start .crossbar``)."""
    if args.cbdir:
        return Path(args.cbdir)
    return config if config.is_dir() else config.parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(_normalize(argv))
    if args.version:
        from geonode import __version__

        print(f"geonode {__version__}")
        return 0
    if args.command in ("start", "dev", "check", "stop", "status"):
        args.config = str(config_path(args))
    if args.command == "dev" or (args.command == "start" and args.reload):
        # Not monkey-patched: the dev supervisor watches files with real threads and runs
        # the node in a child process (which patches itself).
        return _dev(args)
    if args.command == "start":
        return _start(args, argv)
    if args.command == "stop":
        return _stop(args)
    if args.command == "status":
        return _status(args)
    if args.command == "check":
        return _check(args)
    if args.command == "init":
        return _init(args)
    if args.command == "version":
        return _version()
    parser.print_help()
    return 2


def _start(args: argparse.Namespace, argv: list[str]) -> int:
    from geonode import pidfile
    from geonode.sdnotify import SUPERVISOR_ENV

    supervised = SUPERVISOR_ENV in os.environ
    process = int(os.environ[SUPERVISOR_ENV].rsplit(":", 1)[1]) if supervised else None
    cbdir = node_dir(args, Path(args.config))
    pid_written = False
    if not supervised:
        running = pidfile.read_running(cbdir)
        if running:
            print(f"error: a geonode node is already running from node directory {cbdir} "
                  f"(pid {running['pid']}): 'geonode stop --cbdir {cbdir}' stops it",
                  file=sys.stderr)
            return 1
        try:
            pidfile.write(cbdir, argv, Path(args.config), args.shutdown_timeout)
            pid_written = True
        except OSError as e:
            # A read-only config folder (/etc, an image layer): the node runs without one.
            print(f"warning: cannot write {cbdir / pidfile.FILENAME} ({e.strerror or e}): "
                  "'geonode stop/status' will not find this node; use --cbdir", file=sys.stderr)
    try:
        if args.processes > 1 and not supervised:
            return _supervise(args, argv)
        # First thing, before anything imports socket/threading/ssl for real. patch_all() also
        # scans every installed package's entry points for gevent monkey plugins (25 scans,
        # ~40 ms here); gevent documents no way to skip that, and plugins such as psycogreen
        # rely on it, so it stays.
        from gevent import monkey

        monkey.patch_all()
        if supervised:
            from geonode.supervisor import child_setup

            child_setup()
        from geonode import node

        return node.main(args.config, args.loglevel, logformat=args.logformat,
                         shutdown_timeout=args.shutdown_timeout,
                         port=None if supervised else args.port, process=process)
    finally:
        if pid_written:
            pidfile.remove(cbdir)


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """``--processes N``: the parent; each child is ``geonode start`` with the same options."""
    import logging

    from geonode import logs

    logs.setup(args.loglevel, args.logformat)
    from geonode import node, supervisor
    from geonode.config import ConfigError, load, print_errors

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print_errors(args.config, e.errors)
        return 1
    if args.port is not None:
        where = node.apply_port(cfg, args.port)
        logging.getLogger("geonode.supervisor").info(
            "%s = %d (--port / %s)", where or "no TCP endpoint: --port ignored", args.port,
            node.PORT_ENV)
    timeout = node.shutdown_timeout_of(cfg, args.shutdown_timeout)
    child = [sys.executable, "-m", "geonode", "start", args.config,
             "--loglevel", args.loglevel, "--logformat", args.logformat,
             "--shutdown-timeout", str(timeout)]
    return supervisor.run(cfg, child, args.processes, timeout)


def _stop(args: argparse.Namespace) -> int:
    import signal
    import time

    from geonode import pidfile

    cbdir = node_dir(args, Path(args.config))
    running = pidfile.read_running(cbdir)
    if not running:
        print(f"no geonode node is running from node directory {cbdir}")
        return 1
    pid = int(running["pid"])
    os.kill(pid, signal.SIGTERM)
    print(f"SIGTERM sent to geonode node (pid {pid}) in {cbdir}; waiting for it to stop ...")
    wait = _stop_timeout(args, running) + 2.0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if pidfile.read_running(cbdir) is None:
            print("stopped")
            return 0
        time.sleep(0.05)
    print(f"still running after {wait:.0f} s: SIGKILL sent to pid {pid}")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 1


def _stop_timeout(args: argparse.Namespace, running: dict) -> float:
    """How long the running node's stop may take: ``stop --shutdown-timeout``, else what the
    node was started with (its ``--shutdown-timeout``, else its config's controller option),
    else the default."""
    from geonode.node import DEFAULT_SHUTDOWN_TIMEOUT, shutdown_timeout_of

    if args.shutdown_timeout is not None:
        return float(args.shutdown_timeout)
    if running.get("shutdown_timeout") is not None:
        return float(running["shutdown_timeout"])
    if running.get("config"):
        from geonode.config import ConfigError, load

        try:
            return shutdown_timeout_of(load(running["config"]))
        except (ConfigError, OSError, ValueError, TypeError):
            pass  # edited since: the default
    return DEFAULT_SHUTDOWN_TIMEOUT


def _status(args: argparse.Namespace) -> int:
    from geonode import pidfile

    cbdir = node_dir(args, Path(args.config))
    running = pidfile.read_running(cbdir)
    state = "running" if running else "stopped"
    where = f" (pid {running['pid']})" if running else ""
    print(f"{state}: node directory {cbdir}{where}")
    if args.assert_state is not None and args.assert_state != state:
        print(f"assert {args.assert_state} failed: the node is {state}", file=sys.stderr)
        return 1
    return 0


def _dev(args: argparse.Namespace) -> int:
    from geonode import logs

    logs.setup(args.loglevel)
    from geonode import dev

    return int(dev.main(args.config, args.loglevel) or 0)


def _check(args: argparse.Namespace) -> int:
    from geonode.config import ConfigError, load, print_errors, verify, warnings

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print_errors(args.config, e.errors)
        return 1
    # what start resolves while it builds (imports of the app's code), resolved the same way;
    # the workers' code is imported in a child process, as each worker's process imports it
    from geonode.workers.check import errors as worker_errors

    errors = verify(cfg) + worker_errors(cfg.model, cfg.dir)
    if errors:
        print_errors(args.config, errors)
        return 1
    for line in warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    from geonode.config.imports import unverified

    for line in unverified(cfg):
        print(f"not verified: {line}", file=sys.stderr)
    if args.processes > 1:
        from geonode.supervisor import backplane_refusal

        refusal = backplane_refusal(cfg.model, args.processes)
        if refusal:
            print(f"error: {args.config}: {refusal}", file=sys.stderr)
            return 1
    print(f"ok: {args.config} looks good")
    return 0


def _init(args: argparse.Namespace) -> int:
    from geonode.init_template import InitError, write_starter

    target = Path(args.dir)
    try:
        written = write_starter(target)
    except InitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for p in written:
        print(f"wrote {p}")
    cfg = target / "node.json"
    print(f"\nstart it with:  geonode start {cfg}\nthen open http://127.0.0.1:8080/")
    return 0


def _version() -> int:
    import platform
    from importlib import metadata

    from geonode import __version__

    print(f"geonode   {__version__}")
    print(f"Python    {platform.python_version()} ({platform.python_implementation()})")
    for dist in ("gevent", "autobahn", "werkzeug"):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v = "not installed"
        print(f"{dist:<9} {v}")
    return 0
