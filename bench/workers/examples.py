"""Run crossbar-examples that use container and guest workers under geonode, end to end.

For each example folder: copied out of a crossbar-examples checkout (a git directory, e.g.
``fetch github:crossbario/crossbar-examples``), port 8080 replaced by a free one everywhere
in it, ``geonode check``, then ``geonode start`` from its ``.crossbar`` folder until every
component logged its join (or a deadline), its web page fetched when it has one, and its own
client run when it comes with one. One line per example; docs/workers.md keeps the table.

    python bench/workers/examples.py --repo /work/.mirror/crossbario+crossbar-examples/repo
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

#: example folder → its client (a command run in the folder, {port} filled in), or None
EXAMPLES: dict[str, list[str] | None] = {
    "hello/python": None,
    "disclose": None,
    "serializers": None,
    "userconfig/python": None,
    "work/call_from_handler": None,
    "sharedregs/python": None,
    "authorization/dynamic/container": None,
    "scaling-microservices/simple": None,
    "containers/failures/container/working": None,
    "authentication/wampcra/static": None,
    "rest/caller_performance": None,
    "webservices/wap": None,
    "hello/nodejs": None,
    "demos/votes/nodejs": None,
    "demos/visitors_counter": None,
    "reactjs": None,
    "containers/failures/container/failure1": None,
    "containers/failures/container/failure2": None,
}
JOINED = re.compile(r"joined realm")


def export(repo: Path, folder: str, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    data = subprocess.run(["git", "--git-dir", str(repo), "archive", "HEAD", folder],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / folder


def set_port(root: Path, port: int) -> None:
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".py", ".js", ".html", ".yaml", ""):
            try:
                text = p.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if "8080" in text:
                p.write_text(text.replace("8080", str(port)))


def guests(cfg: dict) -> list[str]:
    return [w.get("id") or f"worker{i:03d}" for i, w in enumerate(cfg.get("workers", []))
            if w.get("type") == "guest"]


def components(cfg: dict) -> int:
    n = 0
    for w in cfg.get("workers", []):
        if w.get("type") in ("container", "router"):
            n += len(w.get("components") or [])
    return n


def run_one(repo: Path, folder: str, work: Path, wait: float, env: dict[str, str]) -> dict:
    root = export(repo, folder, work)
    port = common.free_port()
    set_port(root, port)
    cbdir = root / ".crossbar"
    cfg_path = cbdir / "config.json"
    out: dict = {"example": folder}
    cmd = common.geonode_cmd(cfg_path)[:3] + ["check", str(cfg_path)]
    check = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # folders the examples repo itself lacks (its shared web resources): made empty, noted
    missing = re.findall(r"folder '[^']*' not found \(looked for ([^)]*)\)", check.stderr)
    if missing:
        for m in missing:
            Path(m).mkdir(parents=True, exist_ok=True)
        out["made_missing_folders"] = len(missing)
        check = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out["check"] = "ok" if check.returncode == 0 else check.stderr.strip().splitlines()[1:3]
    cfg = json.loads(cfg_path.read_text())
    want = components(cfg)
    chatty = guests(cfg)
    log = root / "node.log"
    server = common.Server("geonode", common.geonode_cmd(cfg_path), cbdir, port, log, env=env)
    try:
        server.start(timeout=60)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if len(JOINED.findall(text)) >= want and all(
                    f" worker.{g}: " in text for g in chatty):
                break
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        out["joined"] = f"{len(JOINED.findall(text))}/{want}"
        out["guest_output"] = [line.split(" ", 2)[2][:120] for line in text.splitlines()
                               if " worker." in line and "components" not in line][:4]
        out["web"] = common.http_status(f"http://127.0.0.1:{port}/")
        out["errors"] = [line.split(": ", 1)[-1][:160] for line in text.splitlines()
                         if " ERROR " in line][:3]
    except RuntimeError as e:
        out["start"] = str(e)
        out["errors"] = log.read_text(errors="replace").splitlines()[-3:]
    finally:
        server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, help="crossbar-examples git directory")
    ap.add_argument("--wait", type=float, default=20.0)
    ap.add_argument("--only", help="comma-separated example folders")
    ap.add_argument("--work", default="/tmp/geonode-examples",
                    help="where examples are copied (short: unix socket paths are bounded)")
    ap.add_argument("--node-path", help="NODE_PATH for Node.js guests (autobahn-js)")
    args = ap.parse_args()
    work = Path(args.work)
    names = args.only.split(",") if args.only else list(EXAMPLES)
    env = {"NODE_PATH": args.node_path} if args.node_path else {}
    for name in names:
        print(json.dumps(run_one(Path(args.repo), name, work / name.replace("/", "_"),
                                 args.wait, env)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
