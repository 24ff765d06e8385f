"""What pyproject.toml promises: one version source, bounded private-API dependencies,
``cryptography`` only where it is imported, the license it names."""

from __future__ import annotations

import ast
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from support import ROOT

import geonode

pytestmark = pytest.mark.inprocess

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

#: dependencies whose private APIs geonode uses (tests/test_private_apis.py checks them)
PRIVATE_API_DEPS = {"gevent", "gevent-websocket", "werkzeug", "gunicorn"}


def requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for the dependencies and every extra."""
    out = [("dependencies", Requirement(r)) for r in PROJECT["dependencies"]]
    for extra, reqs in PROJECT["optional-dependencies"].items():
        out += [(f"optional-dependencies.{extra}", Requirement(r)) for r in reqs]
    return out


def test_version_has_one_source():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "geonode.__version__"}
    # the installed distribution (tox's build, or an editable install) agrees
    assert metadata.version("geonode") == geonode.__version__


@pytest.mark.parametrize("where,req", requirements(), ids=lambda x: str(x))
def test_private_api_dependencies_have_an_upper_bound(where, req):
    if req.name not in PRIVATE_API_DEPS:
        return
    ops = {spec.operator for spec in req.specifier}
    assert ops & {"<", "<=", "==", "~="}, f"{where}: {req} has no upper bound"
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return
    assert req.specifier.contains(installed, prereleases=True), \
        f"{where}: the installed {req.name} {installed} is outside {req.specifier}"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_cryptography_only_where_it_is_imported():
    package = ROOT / "geonode"
    importers = [p for p in package.rglob("*.py") if "cryptography" in _imports(p)]
    runtime = {Requirement(r).name for r in PROJECT["dependencies"]}
    test_extra = {Requirement(r).name for r in PROJECT["optional-dependencies"]["test"]}
    if importers:
        assert "cryptography" in runtime, importers
    else:
        assert "cryptography" not in runtime, "no geonode module imports cryptography"
    assert "cryptography" in test_extra  # tests/support/certs.py


def test_license_file_is_the_one_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == {"text": "MIT"}
    assert text.startswith("MIT License") and "the geonode authors" in text
