#!/usr/bin/env python3
"""`geonode check` over every node config of crossbar-examples, tabulated (issue 12 "Measured").

    python bench/compat/corpus.py --repo /path/to/crossbar-examples          # a checkout
    python bench/compat/corpus.py --repo /path/to/crossbar-examples.git      # or a bare/git dir
    python bench/compat/corpus.py --repo ... --details                       # every config's lines

The corpus is every ``.crossbar/config.json`` / ``config.yaml`` of the repository (172 at commit
of 2026-12). The repository's tree is materialized from git into a scratch folder (file contents
for configs and small text files, every other path as an empty file: ``check`` only looks at
whether folders and files exist, it never imports), so a blob the mirror lacks costs nothing.
Each environment variable a config names (``${VAR}`` / ``"$VAR"``) is set to a dummy (``12345``:
digits, so a port variable still reads as a port).

Each config lands in one bucket:
  ok            ``geonode check`` exits 0
  missing       every error is a file, folder or executable the example itself does not
                ship: a folder it leaves out, a binary it builds first (``../hello``), an
                interpreter it runs (``php``) that this machine lacks
  unsupported   some error names a feature ``... is not supported by geonode``; tabulated by
                feature (worker type, transport type, path service, key)
  other         anything else (a geonode bug or a config the example gets wrong): listed

``--pending FEATURE,...`` (features being built in parallel, e.g. ``worker type 'xbrmm'``)
also counts the configs whose only unsupported features are those: "ok once they land".
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_RE = re.compile(r"(^|/)\.crossbar/config\.(json|yaml)$")
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\"\$([A-Za-z_][A-Za-z0-9_]*)\"")
CONTENT_EXT = (".json", ".yaml", ".yml", ".py", ".pem", ".crt", ".key", ".txt")
MAX_CONTENT = 1 << 20
NOT_SUPPORTED = "is not supported by geonode"
MISSING_RE = re.compile(r": (folder|file|TLS \w+ file|certificate file) '.*' not found")
# a guest's executable: "missing" only when the file it names is not in the example (a shipped
# file that is not executable is the example's fault: "other")
EXECUTABLE_RE = re.compile(r"\.executable: '.*' not found or not executable "
                           r"\(looked for (.*) and on PATH\)$")
# the feature an unsupported-line names: "worker type 'container'", "authentication method
# 'tls'", "'fabric' (...)", else the clause before "is not supported"
KIND_RE = re.compile(r"\b(\w+ (?:type|method) '[^']+')")
KEY_RE = re.compile(r"^\S+: '([^']+)'")
DEFAULT_PENDING = ""


def git(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, **kw)


def materialize(repo: Path, dest: Path, rev: str) -> list[str]:
    """Write ``rev``'s tree under ``dest``; return the config paths (relative)."""
    listing = git(repo, "ls-tree", "-r", "-z", "-l", rev).stdout.split(b"\0")
    wanted: list[tuple[str, str]] = []
    configs: list[str] = []
    for entry in listing:
        if not entry:
            continue
        meta, path_b = entry.split(b"\t", 1)
        mode, kind, sha, size = meta.split()
        path = path_b.decode("utf-8", "replace")
        if kind != b"blob":
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
        if mode == b"100755":  # a guest's script the example ships stays runnable
            target.chmod(0o755)
        if CONFIG_RE.search(path):
            configs.append(path)
        if path.endswith(CONTENT_EXT) and size.isdigit() and int(size) <= MAX_CONTENT:
            wanted.append((sha.decode(), path))
    # One cat-file process for every blob; a blob the mirror lacks stays an empty file.
    batch = "".join(f"{sha}\n" for sha, _ in wanted).encode()
    out = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch"], input=batch,
                         capture_output=True, check=True).stdout
    pos = 0
    for _, path in wanted:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        pos = nl + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        n = int(header[2])
        (dest / path).write_bytes(out[pos:pos + n])
        pos += n + 1
    return sorted(configs)


def run_check(config: Path) -> tuple[int, list[str]]:
    text = config.read_text(errors="replace")
    env = dict(os.environ)
    for m in VAR_RE.finditer(text):
        name = m.group(1) or m.group(2)
        if name != "schema":
            env.setdefault(name, "12345")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "geonode", "check", str(config)], env=env,
                       capture_output=True, text=True, timeout=120)
    lines = [ln.strip() for ln in p.stderr.splitlines()
             if ln.startswith("  ") and not ln.startswith("  Traceback")]
    if p.returncode != 0 and not lines:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()][-3:] or ["(no output)"]
    return p.returncode, lines


def feature(line: str) -> str:
    m = KIND_RE.search(line) or KEY_RE.match(line)
    if m:
        return m.group(1)
    before = line.split(NOT_SUPPORTED, 1)[0]
    return before.rsplit(": ", 1)[-1].strip()[:80]


def not_shipped(line: str) -> bool:
    """A file, folder or executable the example does not ship (run while the tree exists)."""
    exe = EXECUTABLE_RE.search(line)
    if exe:
        return not os.path.lexists(exe.group(1))
    return bool(MISSING_RE.search(line))


def classify(rc: int, lines: list[str]) -> tuple[str, list[str]]:
    if rc == 0:
        return "ok", []
    unsupported = [feature(ln) for ln in lines if NOT_SUPPORTED in ln]
    if unsupported:
        return "unsupported", sorted(set(unsupported))
    if all(not_shipped(ln) for ln in lines):
        return "missing", []
    return "other", lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, help="crossbar-examples: a checkout or git dir")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--details", action="store_true", help="print each config's verdict")
    ap.add_argument("--pending", default=DEFAULT_PENDING,
                    help="features being built elsewhere: also count 'ok once they land'")
    args = ap.parse_args()
    pending = {p.strip() for p in args.pending.split(",") if p.strip()}
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        dest = Path(tmp)
        configs = materialize(Path(args.repo), dest, args.rev)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_check(dest / c), configs))
        # while the tree exists: whether an executable a guest names is in the example
        verdicts = [classify(rc, lines) for rc, lines in results]
    buckets: collections.Counter = collections.Counter()
    features: collections.Counter = collections.Counter()
    only_pending = 0
    others: list[tuple[str, list[str]]] = []
    for config, (_rc, lines), (bucket, why) in zip(configs, results, verdicts, strict=True):
        buckets[bucket] += 1
        if bucket == "unsupported":
            features.update(why)
            if set(why) <= pending and not [ln for ln in lines if NOT_SUPPORTED not in ln
                                            and not not_shipped(ln)]:
                only_pending += 1
        if bucket == "other":
            others.append((config, why))
        if args.details:
            print(f"{bucket:12} {config}" + (f"  {'; '.join(why)}" if why else ""))
    total = len(configs)
    good = buckets["ok"] + buckets["missing"]

    def pct(n: int) -> str:
        return f"{100 * n / total:.0f}%" if total else "-"

    print(f"\nconfigs: {total}")
    meaning = {"ok": "geonode check passes",
               "missing": "fails only for files, folders or executables the example does "
                          "not ship",
               "unsupported": "names a feature geonode does not have",
               "other": "anything else (listed below)"}
    for bucket, what in meaning.items():
        print(f"  {bucket:12} {buckets[bucket]:4}  {what}")
    print(f"ok or failing only for files, folders or executables the examples do not ship: "
          f"{good}/{total} = {pct(good)}")
    if pending:
        print(f"... plus those needing only {sorted(pending)}: {good + only_pending}/{total} = "
              f"{pct(good + only_pending)}")
    if features:
        print("\nrejected for (configs naming each feature):")
        for name, n in features.most_common():
            print(f"  {n:4}  {name}")
    if others:
        print("\nother failures:")
        for config, lines in others:
            print(f"  {config}")
            for ln in lines[:4]:
                print(f"      {ln}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
