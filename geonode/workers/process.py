"""One supervised child process: spawn, pump its output into the node's log, restart with
backoff, stop (SIGTERM, then SIGKILL after a grace). Runs on the node's gevent hub.

Every child is waited for (gevent's child watcher reaps it: no zombies) and runs in its own
session (process group), so a Ctrl-C on the node's terminal reaches the node only, which then
stops its workers in order; ``stop`` signals the whole group, so a guest's own children (a
``/usr/bin/env php`` wrapper, a shell script) go too. On Linux each child also gets
``PR_SET_PDEATHSIG``: if the node itself is killed with SIGKILL, its workers die with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event

log = logging.getLogger("geonode.workers")

RESTART_ALWAYS, RESTART_ON_FAILED, RESTART_NEVER = "restart-always", "restart-on-failed", \
    "restart-never"
RESTART_MODES = (RESTART_ALWAYS, RESTART_ON_FAILED, RESTART_NEVER)

#: First restart delay; doubles per quick failure up to ``BACKOFF_MAX`` (never a tight loop).
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
#: A child that ran this long before exiting starts its backoff afresh.
STABLE_AFTER = 10.0
#: Seconds between SIGTERM and SIGKILL when a worker is stopped.
STOP_GRACE = 5.0
#: Longest output line passed to the log (a longer one is cut: the log stays line-bounded).
MAX_LINE = 16384

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "WARN": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the node's stop() still ends its workers
        pass


def describe_status(code: int) -> str:
    """``exited with status 3`` / ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Launch:
    """What one start of a child needs (made afresh for every restart by ``Spec.prepare``)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    stdin: bytes | None = None          # written, then stdin closed; None: closed at once
    close_stdin: bool = True            # False: keep stdin open (a guest's "close": false)
    pass_fds: tuple[int, ...] = ()
    after_spawn: Callable[[], None] | None = None   # e.g. close the child's end of a socketpair
    after_exit: Callable[[], None] | None = None
    gate: Any = None                    # an Event: ``b"start\n"`` follows stdin once it is set


@dataclass
class Spec:
    """A worker process as the node supervises it."""

    name: str                           # the worker id: log prefix (logger ``worker.<name>``)
    kind: str                           # "container", "guest", "components"
    prepare: Callable[[], Launch]       # raises LaunchError: logged, counts as a failed start
    restart: str = RESTART_NEVER
    stdout: str = "log"                 # log | drop | close
    stderr: str = "log"
    on_final_exit: Callable[[int | None], None] | None = None   # not restarted: status/None
    # overrides ``restart``'s reading of an exit status (a container's own orderly exits)
    should_restart: Callable[[int | None], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LaunchError(Exception):
    """The child cannot be started (a missing executable, ...): one log line, no traceback."""


class Supervised:
    """Runs ``spec`` until ``stop()``: restarts per ``spec.restart`` with backoff."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = Event()
        self._done = Event()
        self._loop: gevent.Greenlet | None = None
        self._restart_now = False
        self._out = logging.getLogger(f"worker.{spec.name}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def start(self) -> None:
        self._loop = gevent.spawn(self._run)

    # ---- the supervision loop -------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        status: int | None = None
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                status = self._run_once()
                if self._stopping.is_set():
                    break
                if self._restart_now:  # asked for (a watched file changed): at once
                    self._restart_now = False
                    failures = 0
                    continue
                failed = status is None or status != 0
                if self.spec.should_restart is not None:
                    restart = self.spec.should_restart(status)
                else:
                    restart = self.spec.restart == RESTART_ALWAYS or (
                        self.spec.restart == RESTART_ON_FAILED and failed)
                if not restart:
                    if status is not None:
                        log.info("%s worker %r will not be restarted (%s)", self.spec.kind,
                                 self.spec.name, self.spec.restart)
                    break
                failures = 0 if time.monotonic() - started > STABLE_AFTER else failures + 1
                delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** max(0, failures - 1))
                log.warning("%s worker %r: restarting in %.1f s (%s)", self.spec.kind,
                            self.spec.name, delay, self.spec.restart)
                if self._stopping.wait(delay):
                    break
        finally:
            self._done.set()
        if not self._stopping.is_set() and self.spec.on_final_exit is not None:
            self.spec.on_final_exit(status)

    def _run_once(self) -> int | None:
        """One life of the child: its exit status, or None when it could not be started."""
        try:
            launch = self.spec.prepare()
        except LaunchError as e:
            log.error("%s", e)
            return None
        out = {"log": subprocess.PIPE, "drop": subprocess.DEVNULL, "close": subprocess.DEVNULL}
        try:
            proc = subprocess.Popen(
                launch.argv, cwd=launch.cwd, env=launch.env,
                stdin=subprocess.PIPE if launch.stdin is not None or not launch.close_stdin
                else subprocess.DEVNULL,
                stdout=out[self.spec.stdout], stderr=out[self.spec.stderr],
                pass_fds=launch.pass_fds, start_new_session=True,
                preexec_fn=_die_with_parent)
        except OSError as e:
            log.error("%s worker %r: cannot start %s: %s", self.spec.kind, self.spec.name,
                      launch.argv[0], e.strerror or e)
            if launch.after_exit is not None:
                launch.after_exit()
            return None
        finally:
            if launch.after_spawn is not None:
                launch.after_spawn()
        self.proc = proc
        self.starts += 1
        log.info("%s worker %r started (pid %d)", self.spec.kind, self.spec.name, proc.pid)
        pumps = [gevent.spawn(self._pump, stream) for stream in (proc.stdout, proc.stderr)
                 if stream is not None]
        if proc.stdin is not None:
            gevent.spawn(self._feed, proc, launch.stdin, launch.close_stdin, launch.gate)
        status = proc.wait()
        gevent.joinall(pumps, timeout=1.0)
        if launch.after_exit is not None:
            launch.after_exit()
        level = logging.INFO if status == 0 or self._stopping.is_set() else logging.ERROR
        log.log(level, "%s worker %r (pid %d) %s", self.spec.kind, self.spec.name, proc.pid,
                 describe_status(status))
        return status

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes | None, close: bool, gate: Any) -> None:
        stdin = proc.stdin
        assert stdin is not None  # spawned with stdin=PIPE
        try:
            if data:
                stdin.write(data)
                stdin.flush()
            if gate is not None:
                gate.wait()
                stdin.write(b"start\n")
                stdin.flush()
            if close:
                stdin.close()
        except OSError:
            pass  # the child went away or closed its stdin: nothing to hand over

    def _pump(self, stream: Any) -> None:
        """Each output line → one log line of logger ``worker.<id>`` (a leading level word,
        as geonode's container runner writes, sets the line's level)."""
        try:
            while True:
                raw = stream.readline(MAX_LINE)
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                word, _, rest = line.partition(" ")
                level = _LEVELS.get(word)
                if level is not None:
                    self._out.log(level, "%s", rest)
                else:
                    self._out.info("%s", line)
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    # ---- stop -----------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                proc.send_signal(sig)

    def restart_now(self) -> None:
        """Stop the running child (SIGTERM); the loop starts it again without backoff."""
        self._restart_now = True
        self.signal(signal.SIGTERM)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the worker's process group, SIGKILL after ``grace``; returns once the
        child is reaped and the supervision loop is over."""
        self._stopping.set()
        if self._loop is None:
            return  # never started
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s worker %r (pid %d) still running %.0f s after SIGTERM: SIGKILL",
                            self.spec.kind, self.spec.name, proc.pid, grace)
                self.signal(signal.SIGKILL)
                proc.wait()
            if proc.returncode is not None:
                # the group leader is gone: its leftovers (a guest's own children) go too
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._done.wait(timeout=grace + 2)
