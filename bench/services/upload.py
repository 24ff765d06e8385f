#!/usr/bin/env python3
"""The ``upload`` path service: MiB/s of a resumable upload (Resumable.js's requests: one
multipart POST per chunk, keep-alive connections) and the node's memory while it runs.

    PYTHONPATH=<checkout> python bench/services/upload.py              # 200 MiB, 1 MiB chunks
    python bench/services/upload.py --size-mib 50 --rounds 1           # quick

Each round uploads a fresh file of ``--size-mib`` in ``--chunk-mib`` chunks, with 1 and then
``--simultaneous`` connections sending chunks at once (Resumable.js's ``simultaneousUploads``,
3 by default), checks the file that lands byte for byte (SHA-256), and samples the node's RSS
every 50 ms: "memory flat" means the peak during the upload stays within a few MiB of the RSS
before it, whatever the file's size. The client is lean (prebuilt multipart bodies over
http.client), so its CPU is not the bottleneck; both CPUs are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

MiB = 1024 * 1024
BOUNDARY = "geonodebenchboundary7d3a"


def node_config(port: int) -> dict:
    fields = {"file_name": "resumableFilename", "mime_type": "resumableType",
              "total_size": "resumableTotalSize", "chunk_number": "resumableChunkNumber",
              "chunk_size": "resumableChunkSize", "total_chunks": "resumableTotalChunks",
              "content": "file"}
    return {"version": 2, "workers": [{"type": "router", "realms": [
        {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
            {"uri": "", "match": "prefix",
             "allow": {"call": True, "register": True, "publish": True, "subscribe": True}}]}]}],
        "transports": [{"type": "web", "endpoint": {"type": "tcp", "port": port,
                                                     "interface": "127.0.0.1"},
                        "paths": {"upload": {
                            "type": "upload", "realm": "realm1", "role": "anonymous",
                            "directory": "uploaded", "temp_directory": "temp",
                            "form_fields": fields,
                            "options": {"max_file_size": 4096 * MiB}}}}]}]}


def body(name: str, total: int, chunk_size: int, chunks: int, number: int,
         data: memoryview) -> bytes:
    fields = {"resumableFilename": name, "resumableType": "application/octet-stream",
              "resumableTotalSize": total, "resumableChunkNumber": number,
              "resumableChunkSize": chunk_size, "resumableTotalChunks": chunks}
    head = "".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                   for k, v in fields.items())
    head += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    return head.encode() + bytes(data) + f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(port: int, name: str, data: bytes, chunk_size: int, simultaneous: int) -> float:
    """Seconds to upload ``data`` (chunks handed out in order to ``simultaneous`` senders)."""
    chunks = max(len(data) // chunk_size, 1)
    view = memoryview(data)
    lock = threading.Lock()
    next_chunk = [1]
    errors: list[str] = []

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                n = next_chunk[0]
                next_chunk[0] += 1
            if n > chunks or errors:
                break
            start = (n - 1) * chunk_size
            end = len(data) if n == chunks else start + chunk_size
            payload = body(name, len(data), chunk_size, chunks, n, view[start:end])
            conn.request("POST", "/upload", payload,
                         {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            resp = conn.getresponse()
            text = resp.read()
            if resp.status != 200:
                errors.append(f"chunk {n}: {resp.status} {text[:200]!r}")
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=sender) for _ in range(simultaneous)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return elapsed


class RssSampler(threading.Thread):
    def __init__(self, server: common.Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.stop_flag = server, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, self.server.rss_mb())
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--chunk-mib", type=float, default=1.0)
    ap.add_argument("--simultaneous", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--summary", help="write the summary rows (JSON) here")
    args = ap.parse_args()

    work = common.WORK / "upload"
    shutil.rmtree(work, ignore_errors=True)
    (work / "uploaded").mkdir(parents=True)
    port = common.free_port()
    cfg = common.write_config(work, "node.json", node_config(port))
    server = common.Server("geonode", common.geonode_cmd(cfg), work, port, work / "node.log")
    server.start()
    size = args.size_mib * MiB
    chunk = int(args.chunk_mib * MiB)
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    results: dict[int, list[float]] = {1: [], args.simultaneous: []}
    growth: list[float] = []
    try:
        for r in range(args.rounds):
            for sim in results:
                name = f"round{r}-{sim}.bin"
                before = server.rss_mb()
                cpu0, client0 = server.cpu_s(), time.process_time()
                sampler = RssSampler(server)
                sampler.start()
                seconds = upload(port, name, data, chunk, sim)
                sampler.stop_flag.set()
                sampler.join()
                cpu, client = server.cpu_s() - cpu0, time.process_time() - client0
                landed = work / "uploaded" / name
                ok = hashlib.sha256(landed.read_bytes()).hexdigest() == digest
                landed.unlink()
                rate = args.size_mib / seconds
                results[sim].append(rate)
                growth.append(sampler.peak - before)
                print(f"round {r} simultaneous={sim}: {rate:7.1f} MiB/s  {seconds:6.2f} s  "
                      f"node RSS {before:.1f} -> peak {sampler.peak:.1f} MiB "
                      f"(+{sampler.peak - before:.1f})  node CPU {cpu:.2f} s  "
                      f"client CPU {client:.2f} s  file {'ok' if ok else 'CORRUPT'}",
                      flush=True)
                if not ok:
                    return 1
    finally:
        server.stop()
    rows = [common.absolute(f"upload {args.size_mib} MiB, {args.chunk_mib:g} MiB chunks, "
                            f"{sim} at once", "MiB/s", common.median(v))
            for sim, v in results.items()]
    rows.append(common.absolute("node RSS growth during an upload (max)", "MiB", max(growth),
                                limit=32.0))
    for row in rows:
        print(f"{row['metric']}: {common.fmt(row['geonode'])} {row['unit']}")
    common.write_summary(args.summary, "upload", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
