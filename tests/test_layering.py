"""The layout is the architecture: every import in geonode/ goes down the documented layers.

The order (docs/ARCHITECTURE.md, "Layers"), lowest first; a module may import only from a
strictly lower layer or from inside its own unit (its top-level package or module). Units in
the same layer are siblings and do not import each other.

The imports are read with ``ast`` from the source, so nothing is imported to check them:
module-level and lazy ones (inside functions) alike, ``from geonode import wamp`` resolved to the
submodule, and the strings that name a module for ``importlib`` or ``sys.modules``
(``"geonode.web.wsgi_host:build"``, a list of warm imports) too, since they load it just the
same. Only imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.inprocess

ROOT = Path(__file__).resolve().parent.parent / "geonode"

#: lowest first; each entry: (layer name, its units)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # imported by anything: the version, WAMP URI rules, reason phrases, the thread-to-hub
    # hand-off, log setup
    ("foundation", ("geonode.__version__", "geonode.uri", "geonode.httpstatus",
                    "geonode.handoff", "geonode.gcpolicy", "geonode.logs", "geonode.metrics",
                    "geonode.sdnotify", "geonode.pidfile")),
    # the config model knows no runtime code; the RFC 6455 library knows no config
    ("config", ("geonode.config", "geonode.websocket", "geonode.init_template")),
    # the WAMP router; listening sockets from endpoint configs
    ("router", ("geonode.router", "geonode.endpoints")),
    # peers that carry WAMP to the router (websocket, rawsocket, in-process)
    ("transport", ("geonode.transport",)),
    # the Redis backplane: the router's state seam across processes, on the transports' queue
    ("cluster", ("geonode.cluster",)),
    # MQTT as a face of the router: its sessions are Peers on the transports' queue and
    # serializers
    ("mqtt", ("geonode.mqtt",)),
    # in-process WAMP sessions for WSGI apps and components
    ("wamp", ("geonode.wamp",)),
    # what runs on geonode.wamp: the HTTP bridge, router components, component workers
    ("apps", ("geonode.bridge", "geonode.components", "geonode.workers")),
    # the web transport: server, handler, path services (the bridge's among them)
    ("web", ("geonode.web",)),
    # builds everything from a config and runs it
    ("node", ("geonode.node",)),
    # ways to run a node: the reloading dev server, gunicorn's worker, the process supervisor
    ("hosts", ("geonode.dev", "geonode.gunicorn", "geonode.supervisor")),
    ("cli", ("geonode.cli",)),
    # entry points: ``python -m geonode``, ``geonode.load()`` for gunicorn
    ("entry", ("geonode", "geonode.__main__")),
]

_STRING_MODULE = re.compile(r"geonode(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(root: Path = ROOT) -> dict[str, str]:
    """module name -> its source"""
    return {module_name(p, root): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def imports_of(name: str, source: str, is_package: bool, modules: Iterable[str],
               strings: bool = True) -> Iterator[tuple[str, int]]:
    """(imported geonode module, line) for every runtime import in ``source``; with
    ``strings``, the modules it loads by name too."""
    known = set(modules)
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from geonode import wamp`` imports the submodule; ``from geonode import
                # __version__`` only the version (the foundation, not the entry package)
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known or alias.name == "__version__" else target), node.lineno
    if strings:
        for text, line in _module_strings(tree, skip):
            mod = text.partition(":")[0]
            if mod in known:
                yield mod, line


_LOADERS = ("import_module", "__import__", "find_spec", "modules.get")


def _module_strings(tree: ast.AST, skip: set[int]) -> Iterator[tuple[str, int]]:
    """The strings that name a module to load: ``"module:attr"`` (a registry entry), the
    argument of ``importlib.import_module`` / ``sys.modules.get`` and the like, and the items of
    a tuple or list of module names (a list of imports to make ahead). Other strings that look
    like module names (environ keys such as ``"geonode.wamp"``) load nothing."""
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        candidates: list[ast.expr] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            candidates = [node]
        elif isinstance(node, ast.Call) and node.args and ast.unparse(node.func).endswith(_LOADERS):
            candidates = [node.args[0]]
        elif isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) > 1 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str)
                and re.fullmatch(r"[A-Za-z_][\w.]*", e.value) for e in node.elts):
            candidates = list(node.elts)
        for c in candidates:
            if (isinstance(c, ast.Constant) and isinstance(c.value, str)
                    and _STRING_MODULE.fullmatch(c.value)):
                yield c.value, c.lineno


def unit_of(module: str) -> str | None:
    """The unit (a LAYERS entry) that ``module`` belongs to: the longest matching prefix (the
    root package ``geonode`` only itself: its ``__init__``)."""
    best = None
    for _, units in LAYERS:
        for unit in units:
            inside = module == unit or (unit != "geonode" and module.startswith(unit + "."))
            if inside and (
                    best is None or len(unit) > len(best)):
                best = unit
    return best


def layer_of(unit: str) -> int:
    return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def violations(modules: dict[str, str], packages: set[str]) -> list[str]:
    found = []
    for name, source in sorted(modules.items()):
        src_unit = unit_of(name)
        if src_unit is None:
            found.append(f"{name} is in no layer: place it in LAYERS (tests/test_layering.py) "
                         "and in docs/ARCHITECTURE.md's Layers")
            continue
        for target, line in imports_of(name, source, name in packages, modules):
            if not target.startswith("geonode"):
                continue
            dst_unit = unit_of(target)
            if dst_unit is None or dst_unit == src_unit:
                continue  # in no layer: reported for its own file
            if layer_of(dst_unit) >= layer_of(src_unit):
                found.append(
                    f"{name}:{line} imports {target}: {LAYERS[layer_of(src_unit)][0]} layer "
                    f"({src_unit}) may not import the {LAYERS[layer_of(dst_unit)][0]} layer "
                    f"({dst_unit})")
    return found


def _packages(root: Path = ROOT) -> set[str]:
    return {module_name(p, root) for p in root.rglob("__init__.py")}


def test_every_import_goes_down_the_layers() -> None:
    found = violations(all_modules(), _packages())
    assert not found, "\n".join(found)


def test_no_import_cycle_between_modules() -> None:
    """Not even inside a unit: a cycle means neither module can be read or tested alone.

    Import statements only: a registry entry naming a module (the ``path`` service is
    ``web.dispatch``, which builds the services) is a table lookup at build time, not a
    dependency of the module that holds the table."""
    modules = all_modules()
    packages = _packages()
    graph: dict[str, set[str]] = {}
    for name, source in modules.items():
        deps = set()
        for target, _ in imports_of(name, source, name in packages, modules, strings=False):
            if target == "geonode.__version__":
                continue  # a constant of the root package, whose only import is lazy
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    cycles = _cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


# The checker itself: it must see a back-edge wherever one hides.

@pytest.mark.parametrize("source", [
    "import geonode.web.server\n",
    "from geonode.web import server\n",
    "def f():\n    from geonode.node import Node\n",
    "def f():\n    from geonode import web\n",
    "def f():\n    from .. import node\n",
    "SERVICE = 'geonode.web.wsgi_host:build'\n",
])
def test_a_back_edge_is_found(source: str) -> None:
    modules = all_modules()
    modules["geonode.router.extra"] = source
    found = violations(modules, _packages())
    assert len(found) == 1 and found[0].startswith("geonode.router.extra:"), found


def test_type_checking_imports_and_own_unit_are_not_back_edges() -> None:
    modules = all_modules()
    modules["geonode.router.extra"] = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from geonode.node import Node\n"
        "from geonode.router import errors\nfrom geonode import uri\n")
    assert violations(modules, _packages()) == []


def test_a_module_in_no_layer_is_reported() -> None:
    modules = all_modules()
    modules["geonode.newthing"] = "x = 1\n"
    assert any(v.startswith("geonode.newthing is in no layer") for v in
               violations(modules, _packages()))


def test_a_cycle_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
