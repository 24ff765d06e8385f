"""The reloading dev server: ``geonode dev node.json`` / ``python -m geonode --reload node.json``.

Two processes, the split werkzeug's reloader uses:

* the *supervisor* (this module's ``main``) imports no app code and never monkey-patches. It
  watches the files that make up the node (the config, ``.py`` files under the worker's
  ``pythonpath`` entries and the WSGI modules' folders, every file of their ``templates``
  folders) with watchdog's inotify observer, or werkzeug's stat reloader loop when watchdog is
  not installed, and restarts the node on a change;
* the *node* runs in a child process (``python -m geonode.dev --child``) in dev mode: debug
  logging, ``display_tracebacks`` on for every web transport, so an exception in a view shows
  its traceback in the browser.

An edit that breaks the app (a syntax error) only kills the child: the supervisor keeps
watching, answers on the node's HTTP ports with the child's output (the traceback) as a 500
page, and starts a fresh node once the file is saved again. The old child has exited before
the new one binds, and every server here binds with SO_REUSEADDR, so the ports are free.

A restart takes an interpreter start plus the imports of gevent, geonode and Flask, most of a
second on a busy machine; so a *standby* child is kept that has done those already and waits
for "go" on its stdin before it reads the config and imports the app.
"""

from __future__ import annotations

import argparse
import collections
import importlib.machinery
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from geonode.config import Config

log = logging.getLogger("geonode.dev")

#: editors save in several steps (write temp file, rename, chmod): restart once per burst
DEBOUNCE = 0.05
#: how long a stopping node may say goodbye (close listeners, WAMP GOODBYE) before it is
#: killed: dev restarts favour speed, interpreter teardown alone can take longer than this
STOP_GRACE = 0.1
#: lines of the node's output kept for the error page
OUTPUT_LINES = 200
#: a standby node process is started this long after a node starts (not competing with it)
STANDBY_DELAY = 1.0
#: werkzeug's stat loop interval when watchdog is not installed
STAT_INTERVAL = 0.3
#: folders whose events never matter (caches, VCS, environments)
IGNORED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".tox", ".nox", ".venv", "venv",
                          ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules"})


@dataclass
class WatchSpec:
    """What to watch for one config: derived from the config text, no app is imported."""

    config: Path
    trees: set[Path] = field(default_factory=set)      # every .py below, recursively
    folders: set[Path] = field(default_factory=set)    # .py files directly inside
    templates: set[Path] = field(default_factory=set)  # every file below
    #: (interface, port) of the plain-TCP web transports: where the error page answers
    endpoints: list[tuple[str, int]] = field(default_factory=list)

    def matches(self, path: str) -> bool:
        p = Path(path)
        if p == self.config:
            return True
        if any(part in IGNORED_DIRS for part in p.parts) or _is_editor_temp(p.name):
            return False
        if any(_is_under(p, t) for t in self.templates):
            return True
        # Templates deeper in a package (Django's app/templates/...) count too.
        if "templates" in p.parts[:-1] and any(_is_under(p, t) for t in self.trees):
            return True
        if p.suffix != ".py":
            return False
        return p.parent in self.folders or any(_is_under(p, t) for t in self.trees)

    def directories(self) -> list[tuple[Path, bool]]:
        """(directory, recursive) pairs to hand to the observer, nested trees dropped."""
        trees = {t for t in self.trees | self.templates if t.is_dir()}
        trees = {t for t in trees if not any(o != t and _is_under(t, o) for o in trees)}
        flat = {f for f in self.folders | {self.config.parent} if f.is_dir()}
        flat = {f for f in flat if not any(_is_under(f, t) for t in trees)}
        return sorted((d, True) for d in trees) + sorted((d, False) for d in flat)

    def files(self) -> set[str]:
        """Every matching file that exists now (for werkzeug's stat loop)."""
        found = {str(self.config)}
        for root, recursive in self.directories():
            walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
            for folder, dirs, names in walker:
                dirs[:] = [d for d in dirs if d not in IGNORED_DIRS]
                found.update(p for n in names if self.matches(p := os.path.join(folder, n)))
        return found


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_editor_temp(name: str) -> bool:
    return name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp"))


def watch_spec(config_path: str | Path) -> WatchSpec:
    """Read the config (just the JSON/YAML, unvalidated) and list what a change restarts."""
    config = Path(config_path).resolve()
    spec = WatchSpec(config=config)
    try:
        from geonode.config import read

        data = read(config)
    except Exception:  # a broken config: watch the file itself until it is fixed
        return spec
    if not isinstance(data, dict):
        return spec
    roots: list[Path] = []
    for worker in data.get("workers") or []:
        if not isinstance(worker, dict):
            continue
        for entry in (worker.get("options") or {}).get("pythonpath") or []:
            if isinstance(entry, str):
                roots.append((config.parent / entry).resolve())
        for transport in worker.get("transports") or []:
            if not isinstance(transport, dict) or transport.get("type") != "web":
                continue
            _wsgi_modules(transport.get("paths"), roots, spec)
            endpoint = transport.get("endpoint") or {}
            port = endpoint.get("port")
            if endpoint.get("type") == "tcp" and not endpoint.get("tls") and isinstance(port, int):
                spec.endpoints.append((endpoint.get("interface") or "0.0.0.0", port))
    spec.trees.update(roots)
    for root in list(spec.trees) + list(spec.folders):
        if (root / "templates").is_dir():
            spec.templates.add(root / "templates")
    return spec


def _wsgi_modules(paths: object, roots: list[Path], spec: WatchSpec) -> None:
    """Add the folder (or package tree) of every ``wsgi`` service's module to ``spec``."""
    if not isinstance(paths, dict):
        return
    for service in paths.values():
        if not isinstance(service, dict):
            continue
        if service.get("type") == "path":
            _wsgi_modules(service.get("paths"), roots, spec)
        module = service.get("module")
        if service.get("type") != "wsgi" or not isinstance(module, str) or not module:
            continue
        # Locate the top-level module without importing (executing) anything of the app.
        top = module.split(".")[0]
        search = [str(r) for r in roots] + [str(spec.config.parent)]
        found = importlib.machinery.PathFinder.find_spec(top, search)
        if found is None or not found.origin or found.origin in ("built-in", "frozen"):
            continue
        origin = Path(found.origin).resolve()
        if found.submodule_search_locations:  # a package: its whole tree
            spec.trees.add(origin.parent)
        else:
            spec.folders.add(origin.parent)


class Watcher:
    """Calls ``on_change(path)`` from a background thread when a watched file changes."""

    def __init__(self, on_change) -> None:
        self.on_change = on_change
        self.spec: WatchSpec | None = None
        self.kind = "watchdog"
        try:
            if os.environ.get("GEONODE_RELOADER") == "stat":  # force the fallback
                raise ImportError("GEONODE_RELOADER=stat")
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            self.kind = "stat"
            self._start_stat()
            return
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type not in ("created", "deleted", "modified", "moved",
                                            "attrib"):  # attrib: `touch` to force a restart
                    return  # opened/closed-no-write: the node reading its own files
                if event.is_directory:
                    return
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    path = os.fsdecode(path)
                    if path and watcher.spec is not None and watcher.spec.matches(path):
                        watcher.on_change(path)
                        return

        # watchdog logs every inotify event at debug level: not what a developer is after.
        logging.getLogger("watchdog").setLevel(logging.WARNING)
        self.handler = Handler()
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.start()
        self.watches: dict[tuple[Path, bool], Any] = {}  # watchdog's ObservedWatch

    def update(self, spec: WatchSpec) -> None:
        """Watch what ``spec`` lists (again: the config may have changed its pythonpath)."""
        self.spec = spec
        if self.kind == "stat":
            self.stat_loop.extra_files = spec.files()
            self.stat_loop.mtimes = {}
            self.stat_loop.run_step()  # new baseline
            return
        # Only the difference: unscheduling a watch that has events queued makes watchdog
        # complain, and re-adding inotify watches on every restart costs time.
        wanted = set(spec.directories())
        for key in set(self.watches) - wanted:
            self.observer.unschedule(self.watches.pop(key))
        for key in wanted - set(self.watches):
            directory, recursive = key
            try:
                self.watches[key] = self.observer.schedule(self.handler, str(directory),
                                                           recursive=recursive)
            except OSError as e:
                log.warning("cannot watch %s: %s", directory, e)
        log.debug("watching (watchdog): %s",
                  ", ".join(f"{d}{'/**' if r else '/*'}" for d, r in sorted(wanted)))

    def _start_stat(self) -> None:
        # werkzeug's own stat loop, run in a thread; its trigger_reload would sys.exit(3), ours
        # records the new mtime (so the change fires once) and reports it.
        from werkzeug._reloader import StatReloaderLoop

        watcher = self

        class Loop(StatReloaderLoop):
            def trigger_reload(self, filename: str) -> None:
                try:
                    self.mtimes[filename] = os.stat(filename).st_mtime
                except OSError:
                    self.mtimes.pop(filename, None)
                watcher.on_change(filename)

        self.stat_loop = Loop(interval=STAT_INTERVAL)
        self.stat_loop.__enter__()
        threading.Thread(target=self.stat_loop.run, name="geonode-dev-stat", daemon=True).start()

    def stop(self) -> None:
        if self.kind == "watchdog":
            # Stopping drops queued events; watchdog reports that as an error nobody can act on.
            logging.getLogger("watchdog").setLevel(logging.CRITICAL)
            self.observer.stop()


def _drop_bytecode(source: str) -> None:
    """Remove the cached bytecode of an edited module before the node restarts.

    A .pyc is trusted when the source's mtime (whole seconds) and size match what it recorded,
    so an edit saved within the same second at the same size ("version 1" -> "version 2")
    would otherwise bring back the old code.
    """
    try:
        os.remove(importlib.util.cache_from_source(source))
    except (OSError, ValueError, NotImplementedError):
        pass  # no cache written (yet), or bytecode caching is off


class Supervisor:
    """Runs the node in a child process and restarts it when a watched file changes."""

    def __init__(self, config_path: str, loglevel: str) -> None:
        self.config_path = str(Path(config_path).resolve())
        self.loglevel = loglevel
        self.changed = threading.Event()
        self.last_change = ""
        self.child: subprocess.Popen | None = None
        self.standby: subprocess.Popen | None = None
        self.lock = threading.Lock()  # self.child and the error page change under it
        self.error_page: ErrorPage | None = None
        self.watcher = Watcher(self._on_change)

    def _on_change(self, path: str) -> None:
        if path.endswith(".py"):
            _drop_bytecode(path)
        self.last_change = path
        self.changed.set()

    def run(self) -> int:
        self.watcher.update(watch_spec(self.config_path))
        log.info("dev server: watching %s (%s); Ctrl-C to stop", self.config_path,
                 self.watcher.kind)
        self.start_child()
        try:
            while True:
                if self.standby is None:
                    # Let the new node start alone first, then warm the next one up.
                    if not self.changed.wait(STANDBY_DELAY):
                        self.standby = self._spawn(standby=True)
                        continue
                else:
                    self.changed.wait()
                time.sleep(DEBOUNCE)
                self.changed.clear()
                log.info("change in %s: restarting the node", self.last_change)
                with self.lock:
                    self.stop_child()
                    self.start_child()
                # The config may name other folders now (after the start: it is not urgent).
                self.watcher.update(watch_spec(self.config_path))
        except KeyboardInterrupt:
            return 0
        finally:
            with self.lock:
                self.stop_child()
            if self.standby is not None:
                self.standby.kill()
                self.standby.wait()
            self.watcher.stop()

    def _spawn(self, standby: bool) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "geonode.dev", "--child", "--loglevel", self.loglevel,
               self.config_path]
        if standby:
            cmd.insert(-1, "--standby")
        # Own session: a Ctrl-C reaches the supervisor only, which then stops the node in order.
        child = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent,
                                 stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # The node's output goes on to ours; its tail is kept for the error page.
        child.output_tail = collections.deque(maxlen=OUTPUT_LINES)  # type: ignore[attr-defined]
        threading.Thread(target=_pump, args=(child,), daemon=True).start()
        return child

    def start_child(self) -> None:
        # A restart costs an interpreter start and the imports of gevent, geonode and Flask
        # (most of a second on a busy machine): a standby child has done that already and
        # only waits for "go" to read the config and import the app.
        child, self.standby = self.standby, None
        if child is not None:
            try:
                stdin = cast(IO[bytes], child.stdin)  # a standby child is made with a pipe
                stdin.write(b"go\n")
                stdin.close()
            except (OSError, ValueError):
                child = None
        self.child = child or self._spawn(standby=False)
        log.debug("node started (pid %s, %s)", self.child.pid,
                  "from standby" if child else "cold")
        threading.Thread(target=self._reap, args=(self.child,), daemon=True).start()

    def _reap(self, child: subprocess.Popen) -> None:
        # Tell the developer when the node died on its own (a broken edit, an import error):
        # nothing restarts it until the next change. Meanwhile the browser gets the error.
        code = child.wait()
        with self.lock:
            if child is not self.child:
                return
            log.error("the node exited (code %s); fix the error and save: it restarts on "
                      "the next change", code)
            time.sleep(0.05)  # the pump thread has the last lines
            endpoints = watch_spec(self.config_path).endpoints  # the config may be new
            self.error_page = ErrorPage(endpoints, code,
                                        list(child.output_tail))  # type: ignore[attr-defined]

    def stop_child(self) -> None:
        """Stop the node (or take down the error page standing in for it); hold self.lock."""
        if self.error_page is not None:
            self.error_page.close()
            self.error_page = None
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _pump(child: subprocess.Popen) -> None:
    out = sys.stderr.buffer
    for line in child.stdout:  # type: ignore[union-attr]
        child.output_tail.append(line.decode(errors="replace"))  # type: ignore[attr-defined]
        try:
            out.write(line)
            out.flush()
        except (OSError, ValueError):
            pass


class ErrorPage:
    """While the node is down after a failed start, its HTTP endpoints answer 500 with the
    node's output (the traceback), so the browser shows why instead of "connection refused"."""

    def __init__(self, endpoints: list[tuple[str, int]], code: int | None,
                 lines: list[str]) -> None:
        import html
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = (
            "<!doctype html><title>geonode dev: the node is not running</title>"
            "<h1>The node is not running</h1>"
            f"<p>It exited with code {code}. Fix the error and save: the dev server restarts "
            "it on the next change.</p><pre>" + html.escape("".join(lines)) + "</pre>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.send_response(500)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True  # SO_REUSEADDR: the node binds again right after
            daemon_threads = True

        self.servers = []
        for host, port in endpoints:
            try:
                server = Server((host, port), Handler)
            except OSError as e:
                log.debug("error page: cannot bind %s:%s: %s", host, port, e)
                continue
            threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
            self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies (Linux), never orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(config_path: str, loglevel: str = "debug") -> int:
    """Run the dev server for ``config_path`` until SIGINT/SIGTERM; return the exit code.

    Runs in a process that is not monkey-patched: watchdog's observer blocks in read() on a
    real thread. The node, in its child process, patches itself.
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)
    return Supervisor(config_path, loglevel).run()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _child_loglevel(loglevel: str) -> str:
    # Dev mode logs at debug level unless asked to be quieter than the default.
    return loglevel if loglevel in ("warning", "error") else "debug"


def run_child(config_path: str, loglevel: str) -> int:
    """The node, in dev mode (called in the child process, already monkey-patched)."""
    from geonode.node import main

    # Flask answers a view's exception with its own bare 500 unless in debug mode, where it
    # lets it propagate to geonode's display_tracebacks page (the app's code is unchanged).
    os.environ.setdefault("FLASK_DEBUG", "1")
    return main(config_path, _child_loglevel(loglevel), adjust=_show_tracebacks)


def _show_tracebacks(cfg: Config) -> None:
    for worker in cfg.model.workers:
        for transport in worker.transports:
            if transport.type == "web":
                transport.options["display_tracebacks"] = True


#: what a standby child imports ahead: the node's machinery and common frameworks, never app code
WARM_IMPORTS = ("geonode.node", "geonode.config", "geonode.web.server",
                "geonode.web.dispatch", "geonode.web.options", "geonode.web.wsgi_host",
                "geonode.web.handler", "geonode.web.services.static",
                "geonode.web.services.websocket", "geonode.router", "flask")


def _wait_for_go(loglevel: str) -> bool:
    """Standby child: import ahead, then block until the supervisor says go (False: EOF)."""
    import importlib

    from geonode import logs

    logs.setup(_child_loglevel(loglevel))
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # not installed / not built yet: imported (or reported) for real later
            pass
    # Nothing else runs in this process yet, so a blocking read cannot stall a greenlet.
    return sys.stdin.readline().strip() == "go"


def _child(argv: list[str] | None = None) -> int:
    """``python -m geonode.dev [--standby] --loglevel L CONFIG``: a node process of the dev
    server (its supervisor is ``main``, started by ``geonode dev``)."""
    parser = argparse.ArgumentParser(prog="python -m geonode.dev")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # for ps
    parser.add_argument("--standby", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loglevel", default="debug")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    from gevent import monkey

    monkey.patch_all()
    if args.standby and not _wait_for_go(args.loglevel):
        return 0
    return run_child(args.config, args.loglevel)


if __name__ == "__main__":
    raise SystemExit(_child())
