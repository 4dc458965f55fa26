#!/usr/bin/env python3
"""Load test for `pulmo serve`: N concurrent STOW-RS uploaders, more than the limits allow.

Starts `pulmo serve` on a free loopback port with a fresh data directory, makes M copies of
the sample study (new Study/Series/SOP UIDs each), and lets N threads upload them in
requests of --per-request instances. A 503 is counted as rejected and retried after its
Retry-After; every instance the server acknowledged (listed in the Referenced SOP Sequence)
must be stored. Prints throughput, p50/p95 from each study's last acknowledged instance to
its report, peak RSS of the server, rejected requests and lost instances (must be 0).

    .venv/bin/python3 scripts/eval/load.py --studies 12 --uploaders 8 --max-uploads 2
"""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import queue
import re
import statistics
import subprocess
import tempfile
import threading
import time

import pydicom
import requests
from pydicom.uid import generate_uid

ROOT = pathlib.Path(__file__).resolve().parents[2]
BOUNDARY = "pulmo-load-boundary"


def copies(count: int) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """`count` copies of the sample study as (study UID, [(SOP UID, Part 10 bytes)])."""
    files = sorted((ROOT / "sample-dicom/phantom-4242").glob("*.dcm"))
    originals = [pydicom.dcmread(f) for f in files]
    studies = []
    for _ in range(count):
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        instances = []
        for ds in originals:
            ds = ds.copy()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            instances.append((ds.SOPInstanceUID, buffer.getvalue()))
        studies.append((study, instances))
    return studies


def body(parts: list[bytes]) -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: dict[str, set[str]] = {}
        self.last_ack: dict[str, float] = {}
        self.rejected = 0
        self.requests = 0

    def ack(self, study: str, uids: list[str]) -> None:
        with self.lock:
            self.acked.setdefault(study, set()).update(uids)
            self.last_ack[study] = time.time()


def upload(base: str, work: queue.Queue, tally: Tally, per_request: int) -> None:
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    while True:
        try:
            study, instances = work.get_nowait()
        except queue.Empty:
            return
        for start in range(0, len(instances), per_request):
            chunk = instances[start:start + per_request]
            while True:
                reply = requests.post(f"{base}/dicomweb/studies", data=body([b for _, b in chunk]),
                                      headers=headers, timeout=300)
                with tally.lock:
                    tally.requests += 1
                if reply.status_code == 503:
                    with tally.lock:
                        tally.rejected += 1
                    time.sleep(min(float(reply.headers.get("Retry-After", "1")), 2.0))
                    continue
                reply.raise_for_status()
                stored = reply.json().get("00081199", {}).get("Value", [])
                tally.ack(study, [item["00081155"]["Value"][0] for item in stored])
                break


def peak_rss_mib(pid: int) -> float:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--uploaders", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=27)
    parser.add_argument("--max-uploads", type=int, default=2)
    parser.add_argument("--max-queued-jobs", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "models/threshold-test"))
    parser.add_argument("--quiet-seconds", type=float, default=1.0)
    parser.add_argument("--binary", default=str(ROOT / "target/release/pulmo"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    studies = copies(args.studies)
    data = tempfile.mkdtemp(prefix="pulmo-load-")
    server = subprocess.Popen(
        [args.binary, "--log", "warn", "serve", "--listen", "127.0.0.1:0", "--data", data,
         "--model", args.model, "--device", "cpu", "--quiet-seconds", str(args.quiet_seconds),
         "--jobs", str(args.jobs), "--max-uploads", str(args.max_uploads),
         "--max-queued-jobs", str(args.max_queued_jobs)],
        stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip().removeprefix("pulmo listening on ")
        while requests.get(f"{base}/readyz", timeout=5).status_code != 200:
            time.sleep(0.1)
        work: queue.Queue = queue.Queue()
        for study in studies:
            work.put(study)
        tally = Tally()
        started = time.time()
        threads = [threading.Thread(target=upload, args=(base, work, tally, args.per_request))
                   for _ in range(args.uploaders)]
        for t in threads:
            t.start()
        reported: dict[str, float] = {}
        while len(reported) < len(studies):
            for study, _ in studies:
                if study in reported or study not in tally.last_ack:
                    continue
                reply = requests.get(f"{base}/api/v1/studies/{study}/report", timeout=30).json()
                if reply.get("reports") and not reply.get("pending") \
                        and len(tally.acked[study]) == len(studies[0][1]):
                    reported[study] = time.time()
            time.sleep(0.05)
        elapsed = time.time() - started
        for t in threads:
            t.join()
        lost = 0
        for study, _ in studies:
            stored = requests.get(f"{base}/api/v1/studies/{study}", timeout=30).json()["instances"]
            lost += len(tally.acked[study]) - stored
        latency = sorted(reported[s] - tally.last_ack[s] for s, _ in studies)
        figures = {
            "studies": len(studies), "instances": sum(len(i) for _, i in studies),
            "uploaders": args.uploaders, "max_uploads": args.max_uploads,
            "max_queued_jobs": args.max_queued_jobs, "jobs": args.jobs,
            "model": pathlib.Path(args.model).name,
            "elapsed_s": round(elapsed, 2),
            "studies_per_hour": round(len(studies) / elapsed * 3600),
            "instances_per_s": round(sum(len(i) for _, i in studies) / elapsed, 1),
            "latency_p50_s": round(statistics.median(latency), 2),
            "latency_p95_s": round(latency[min(len(latency) - 1, int(0.95 * len(latency)))], 2),
            "requests": tally.requests, "rejected_503": tally.rejected, "lost": lost,
            "peak_rss_mib": round(peak_rss_mib(server.pid)),
        }
    finally:
        server.terminate()
        server.wait(timeout=120)
    print("| " + " | ".join(figures) + " |")
    print("|" + "---|" * len(figures))
    print("| " + " | ".join(str(v) for v in figures.values()) + " |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    if lost:
        raise SystemExit(f"{lost} acknowledged instances were lost")


if __name__ == "__main__":
    main()
