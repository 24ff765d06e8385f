#!/usr/bin/env python3
"""geonode's own tests against a library adapter: which pass, which fail and why.

    python bench/libs/tests.py                       # every item, ours and the library's
    python bench/libs/tests.py --only wsproto,h11    # some items
    python bench/libs/tests.py --only h11 --no-ours  # the library's run alone

For each item the listed test files run twice, with geonode's own code and with the adapter
(``bench/libs/shim`` on ``PYTHONPATH`` and ``GEONODE_LIBS=<item>``: see its sitecustomize.py),
and the summary names every test that failed with the adapter and the first line of its
assertion. The adapters need the libraries: ``pip install wsproto h11 urllib3`` (werkzeug is
already a geonode dependency). JUnit files: ``bench/.work/libs/tests/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "bench" / "libs" / "shim"
OUT = ROOT / "bench" / ".work" / "libs" / "tests"

ITEMS: dict[str, list[str]] = {
    "wsproto": ["tests/test_websocket.py", "tests/test_conformance.py",
                "tests/test_transport_websocket.py"],
    "h11": ["tests/test_http_hardening.py", "tests/test_web.py"],
    "urllib3": ["tests/test_bridge.py", "tests/test_bridge_keepalive.py"],
    "urllib3-nopool": ["tests/test_bridge.py", "tests/test_bridge_keepalive.py"],
    "urllib3-proxy": ["tests/test_reverseproxy.py"],
    "send_file": ["tests/test_static.py"],
    "shareddata": ["tests/test_static.py"],
}


def run(item: str, files: list[str], lib: bool) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    xml = OUT / f"{item}-{'lib' if lib else 'ours'}.xml"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("GEONODE_LIBS", None)
    if lib:
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{SHIM}"
        env["GEONODE_LIBS"] = item
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", *files], cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    total = failed = skipped = 0
    failures: list[tuple[str, str]] = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        total += 1
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if case.find("skipped") is not None:
            skipped += 1
        elif bad is not None:
            failed += 1
            text = (bad.get("message") or bad.text or "").strip().splitlines()
            failures.append((f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                             text[0][:160] if text else ""))
    return {"total": total, "failed": failed, "skipped": skipped, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated items: " + ", ".join(ITEMS))
    ap.add_argument("--no-ours", action="store_true", help="skip the run with geonode's code")
    args = ap.parse_args()
    items = args.only.split(",") if args.only else list(ITEMS)
    for item in items:
        files = ITEMS[item]
        print(f"== {item}: {' '.join(files)}", flush=True)
        for lib in ((True,) if args.no_ours else (False, True)):
            r = run(item, files, lib)
            who = item if lib else "geonode"
            passed = r["total"] - r["failed"] - r["skipped"]
            print(f"  {who:14} {passed}/{r['total'] - r['skipped']} passed, "
                  f"{r['failed']} failed, {r['skipped']} skipped", flush=True)
            for name, why in r["failures"]:
                print(f"      FAIL {name}: {why}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
