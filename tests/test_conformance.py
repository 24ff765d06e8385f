"""Autobahn|Testsuite (kosoku) against a real node's ``websocket-testee``: a representative subset.

The full suite runs with ``python conformance/run.py`` (minutes); this keeps the suite fast while
covering framing, pings, reserved bits/opcodes, fragmentation, UTF-8, close handling, limits and
permessage-deflate.
"""

from __future__ import annotations

import importlib.util
import subprocess

import pytest
from support import ROOT, scaled, web_node

_spec = importlib.util.spec_from_file_location("conformance_run", ROOT / "conformance" / "run.py")
conformance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance)

SUBSET = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*",
          "9.1.1", "9.1.2", "9.2.1", "9.2.2", "9.3.1", "9.4.1", "9.5.1", "9.6.1", "9.7.1",
          "9.8.1", "12.1.1", "12.1.2", "12.1.3", "12.2.1", "12.5.1", "13.1.1", "13.2.1",
          "13.3.1", "13.4.1", "13.5.1", "13.6.1", "13.7.1"]


@pytest.mark.timeout(scaled(180))
def test_autobahn_subset_all_pass(start_node, tmp_path):
    node = start_node(web_node({"/": {"type": "websocket-testee"}}), args=("--loglevel", "warning"))
    outdir = tmp_path / "reports"
    cmd = conformance.kosoku_cmd() + ["-m", "fuzzingclient", "-p", "4", "-o", str(outdir)]
    for pattern in SUBSET:
        cmd += ["-i", pattern]
    proc = subprocess.run(cmd + [f"127.0.0.1:{node.port}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=scaled(170))
    counts, bad = conformance.summarize(outdir)
    assert sum(counts.values()) > 250, (counts, proc.stdout[-2000:])
    assert not bad, {case: (r["behavior"], r.get("behaviorClose"), r.get("result"))
                     for case, r in bad.items()}
    assert counts["OK"] >= 250
    assert "Traceback" not in node.log()
