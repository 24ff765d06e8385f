"""Fixtures: real geonode nodes in subprocesses, on free loopback ports (thin wrappers over
``support``, which benchmarks and conformance runs share).

A test describes a node as a config dict (Crossbar v2 format) with the placeholder
``"$PORT"`` wherever the listening port goes; ``start_node`` writes it to a temporary folder
(next to any extra files the test gives), starts ``python -m geonode`` on it and waits until
the port answers. The node is stopped (SIGTERM, then SIGKILL) when the test or module ends.

Tests marked ``inprocess`` (``pytest -m inprocess``) start no process: this file fails one
that tries.
"""

from __future__ import annotations

import subprocess

import pytest
from support.nodes import Node, launch
from support.timing import scaled


def pytest_collection_modifyitems(config, items):
    """pytest-timeout's per-test bound (``timeout`` in pyproject.toml) scaled like every other
    bound; a test's own ``@pytest.mark.timeout(scaled(...))`` stays as it is."""
    try:
        default = float(config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not installed
        return
    if not default:
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(scaled(default)))


@pytest.fixture
def start_node(tmp_path):
    """Start nodes for one test: ``node = start_node(config, files={...})``."""
    nodes: list[Node] = []

    def _start(config: dict, files: dict[str, str] | None = None, **kw) -> Node:
        node = launch(config, tmp_path / f"node{len(nodes)}", files, **kw)
        nodes.append(node)
        return node

    yield _start
    for n in nodes:
        n.stop()


@pytest.fixture(scope="module")
def start_module_node(tmp_path_factory):
    """Like ``start_node`` but the nodes live for the whole test module (cheaper)."""
    nodes: list[Node] = []

    def _start(config: dict, files: dict[str, str] | None = None, **kw) -> Node:
        node = launch(config, tmp_path_factory.mktemp("node"), files, **kw)
        nodes.append(node)
        return node

    yield _start
    for n in nodes:
        n.stop()


@pytest.fixture(autouse=True)
def _inprocess_starts_no_process(request, monkeypatch):
    """An ``inprocess`` test that starts a subprocess is mismarked: fail it, so the fast
    selection (``pytest -m inprocess``) stays fast and honest."""
    if request.node.get_closest_marker("inprocess") is None:
        return

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} is marked inprocess but starts a "
                             f"process: {args[0] if args else kwargs.get('args')}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def pytest_terminal_summary(terminalreporter):
    # The WSGI pools' watchdog repairs a lost thread-to-hub wake-up with a log line that a
    # passing test's captured output hides: the suite's own pools are counted here, so a run
    # with two CPU burners (.ci/stress) shows whether it ever fired.
    from geonode.web import wsgi_host

    pools = list(wsgi_host._pools or ())
    rescued = sum(pool.rescued for pool in pools)
    terminalreporter.write_line(
        f"WSGI pool watchdog: {rescued} lost wake-up(s) repaired in this process's "
        f"{len(pools)} pools")
