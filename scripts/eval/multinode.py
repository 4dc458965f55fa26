#!/usr/bin/env python3
"""Scale figures for several `pulmo serve` nodes sharing one PostgreSQL job store.

Starts a throwaway PostgreSQL 15 (Debian's binaries, `initdb` in a temporary folder, as the
`postgres` user when run as root, on a free loopback port), then for each node count in
--nodes starts that many `pulmo serve` nodes on a fresh database and a shared spool folder,
sends --studies copies of the sample study (new UIDs each; study k to node k % N, by
--uploaders threads) and waits until every study's report is served. Prints, per node count:
throughput, latency from a study's last acknowledged instance to its report, claim latency
(the nodes' `pulmo_store_claim_seconds` histograms), and what the store cost per study
(transactions, rows written, bytes of database) from PostgreSQL's own statistics.

    .venv/bin/python3 scripts/eval/multinode.py --nodes 1 2 3 --studies 12
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from load import Tally, copies, upload  # noqa: E402  (the single-node load test's helpers)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PG_BIN = pathlib.Path(os.environ.get("PULMO_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL server in a temporary folder, stopped by `stop()`."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise SystemExit(f"PostgreSQL is not installed ({PG_BIN}): run scripts/setup/setup.sh --test")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pulmo-pg-"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "pulmo", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def run(self, program: str, *args: str) -> str:
        command = [str(PG_BIN / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def sql(self, database: str, query: str) -> str:
        return subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "pulmo", "-d", database,
             "-At", "-c", query], check=True, capture_output=True, text=True).stdout.strip()

    def url(self, database: str) -> str:
        return f"postgres://pulmo@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def store_stats(pg: Postgres, database: str) -> dict[str, int]:
    row = pg.sql(database, "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, "
                           f"pg_database_size('{database}') FROM pg_stat_database WHERE datname = '{database}'")
    commits, rows, size = (int(x) for x in row.split("|"))
    return {"commits": commits, "rows": rows, "bytes": size}


def claim_histogram(base: str) -> tuple[float, int]:
    text = requests.get(f"{base}/metrics", timeout=30).text
    total = sum(float(m) for m in re.findall(r"^pulmo_store_claim_seconds_sum\{[^}]*\} (\S+)$", text, re.M))
    count = sum(int(float(m)) for m in re.findall(r"^pulmo_store_claim_seconds_count\{[^}]*\} (\S+)$", text, re.M))
    return total, count


def run(args: argparse.Namespace, pg: Postgres, nodes: int, studies: list) -> dict:
    database = f"scale{nodes}"
    pg.sql("postgres", f"CREATE DATABASE {database}")
    shared = pathlib.Path(tempfile.mkdtemp(prefix="pulmo-shared-"))
    servers, bases = [], []
    try:
        for i in range(nodes):
            data = tempfile.mkdtemp(prefix=f"pulmo-node{i}-")
            server = subprocess.Popen(
                [args.binary, "--log", "warn", "serve", "--listen", "127.0.0.1:0", "--data", data,
                 "--store", pg.url(database), "--spool-dir", str(shared), "--node", f"n{i}",
                 "--model", args.model, "--device", "cpu", "--quiet-seconds", str(args.quiet_seconds),
                 "--jobs", str(args.jobs), "--max-uploads", "8", "--max-queued-jobs", "1000"],
                stdout=subprocess.PIPE, text=True)
            servers.append(server)
            bases.append(server.stdout.readline().strip().removeprefix("pulmo listening on "))
        for base in bases:
            while requests.get(f"{base}/readyz", timeout=5).status_code != 200:
                time.sleep(0.1)
        before = store_stats(pg, database)
        tally = Tally()
        work = [queue.Queue() for _ in bases]
        for k, study in enumerate(studies):
            work[k % nodes].put(study)
        started = time.time()
        threads = [threading.Thread(target=upload, args=(bases[t % nodes], work[t % nodes], tally, 27))
                   for t in range(max(args.uploaders, nodes))]
        for t in threads:
            t.start()
        reported: dict[str, float] = {}
        while len(reported) < len(studies):
            for k, (study, instances) in enumerate(studies):
                if study in reported or len(tally.acked.get(study, ())) < len(instances):
                    continue
                reply = requests.get(f"{bases[(k + 1) % nodes]}/api/v1/studies/{study}/report", timeout=30).json()
                if reply.get("reports") and not reply.get("pending"):
                    reported[study] = time.time()
            time.sleep(0.05)
        elapsed = time.time() - started
        for t in threads:
            t.join()
        after = store_stats(pg, database)
        claims = [claim_histogram(b) for b in bases]
        claim_sum, claim_count = sum(c[0] for c in claims), sum(c[1] for c in claims)
        latency = sorted(reported[s] - tally.last_ack[s] for s, _ in studies)
        done = pg.sql(database, "SELECT count(*) FROM jobs WHERE state = 'done'")
        return {
            "nodes": nodes, "studies": len(studies), "jobs_per_node": args.jobs,
            "elapsed_s": round(elapsed, 2),
            "studies_per_hour": round(len(studies) / elapsed * 3600),
            "latency_p50_s": round(statistics.median(latency), 2),
            "claim_mean_ms": round(claim_sum / max(claim_count, 1) * 1000, 2),
            "claims": claim_count,
            "commits_per_study": round((after["commits"] - before["commits"]) / len(studies), 1),
            "rows_written_per_study": round((after["rows"] - before["rows"]) / len(studies), 1),
            "db_kib_per_study": round((after["bytes"] - before["bytes"]) / len(studies) / 1024, 1),
            "jobs_done": int(done),
        }
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=120)
        shutil.rmtree(shared, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--uploaders", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--model", default=str(ROOT / "models/threshold-test"))
    parser.add_argument("--quiet-seconds", type=float, default=1.0)
    parser.add_argument("--binary", default=str(ROOT / "target/release/pulmo"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    studies = copies(args.studies)
    pg = Postgres()
    try:
        figures = [run(args, pg, n, studies) for n in args.nodes]
    finally:
        pg.stop()
    print("| " + " | ".join(figures[0]) + " |")
    print("|" + "---|" * len(figures[0]))
    for row in figures:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
