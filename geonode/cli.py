"""The ``geonode`` command line.

    geonode [start] [--loglevel L] [--reload] [CONFIG]   run a node (default command)
    geonode dev CONFIG                                   run it, restarting on code changes
    geonode check CONFIG                                 validate a config, no side effects
    geonode init [DIR]                                   write a starter node
    geonode version                                      versions of geonode and its stack

Heavy modules (gevent, the config schema, the node) are imported inside the commands, and
``start``/``dev`` monkey-patch with gevent before importing anything else of weight, so that
every later import (the user's app included) sees the patched stdlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geonode.logs import LEVELS as LOGLEVELS

COMMANDS = ("start", "dev", "check", "init", "version")
DEFAULT_CONFIG = "node.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geonode",
        description="A Crossbar.io-style application node (WSGI apps + WAMP router) in one "
                    "gevent process. 'geonode node.json' is short for 'geonode start node.json'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--loglevel", choices=LOGLEVELS, default="info",
                       help="log level (default: info)")

    p = sub.add_parser("start", help="run the node described by CONFIG (the default command)")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                   help=f"node config, .json or .yaml (default: {DEFAULT_CONFIG})")
    p.add_argument("--reload", action="store_true",
                   help="restart the node when a Python file or the config changes (dev mode)")
    common(p)

    p = sub.add_parser("dev", help="run the node and restart it when code or config changes")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="node config")
    common(p)

    p = sub.add_parser("check", help="validate CONFIG: 'ok' (exit 0) or every error (exit 1)")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="node config")
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
        if a == "--loglevel":
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        if a in COMMANDS:
            return [a, *argv[:i], *argv[i + 1:]]
        return ["start", *argv]
    if any(a in ("-h", "--help") for a in argv):
        return argv
    return ["start", *argv] if argv else argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(_normalize(argv))
    if args.command == "dev" or (args.command == "start" and args.reload):
        # Not monkey-patched: the dev supervisor watches files with real threads and runs
        # the node in a child process (which patches itself).
        return _dev(args)
    if args.command == "start":
        # First thing, before anything imports socket/threading/ssl for real. patch_all() also
        # scans every installed package's entry points for gevent monkey plugins (25 scans,
        # ~40 ms here); gevent documents no way to skip that, and plugins such as psycogreen
        # rely on it, so it stays.
        from gevent import monkey

        monkey.patch_all()
        from geonode import node

        return node.main(args.config, args.loglevel)
    if args.command == "check":
        return _check(args)
    if args.command == "init":
        return _init(args)
    if args.command == "version":
        return _version()
    parser.print_help()
    return 2


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
