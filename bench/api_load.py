"""Job submissions per second and latency of the API, against PostgreSQL on loopback.

Serves the API with ``python -m services.api`` (uvicorn, N workers) in a subprocess, on a fresh
PostgreSQL schema and a local-directory artifacts store, with a storage access policy that lets
the bench team read the spec's dataset, then drives ``POST /v1/jobs`` (each with its own
Idempotency-Key, as the client sends them) from this process:

1. saturation: ``--requests`` submissions from ``--concurrency`` concurrent connections →
   submissions/s, p50, p99;
2. paced, open loop → p50, p99: at ``--rate`` per second (default 150, half the 300/s
   target), then at half the throughput phase 1 measured (the "half load" of this box);
3. the CPU each submission costs the API and its PostgreSQL backends (from /proc; backends
   told from other clients of the server by their application_name), and the rate two idle
   cores could sustain at that cost.

Bounded: at most ``--requests`` per phase and ``--max-seconds`` per phase. The load generator
shares the machine's cores with the server; figures are for this whole box. Any status other
than 201 is printed by code: figures of a run with errors measure refusals, not submissions.
The team's jobs are never run, so its unfinished jobs (which each submission counts, for the
active-job limit) grow through the run, to about 4 x ``--requests`` in the last phase.

Usage: ``PYTHONPATH=. python bench/api_load.py [--requests 3000] [--workers 2] [--smoke]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _smoke import parse_args  # noqa: E402

from services.store import Database, tokens, upgrade  # noqa: E402

PG = os.environ.get("TRAINFORGE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPEC = {"name": "bench-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"},
        "train": {"epochs": 10, "imgsz": 640}}
BODY = json.dumps({"spec": SPEC}).encode()
TARGET_RATE = 300.0
TARGET_P99_S = 0.050
#: Submissions sent before measuring (pools, caches), at most.
WARMUP_REQUESTS = 200

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"ratio to the 300/s target: \d+\.\d\d",
                     r"ratio to GET /healthz on the same server and box \(\d+/s\): \d+\.\d\d",
                     r"ratio of p99 to the 50 ms target: \d+\.\d\d")
#: It serves the API (uvicorn) against the PostgreSQL server.
SMOKE_MARKS = ("slow", "postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each live pid (Linux /proc); a vanished pid is left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *map(int, found.split())]


def _postgres_pids(admin: Engine, application_name: str) -> list[int]:
    """The PostgreSQL backends serving the API under test (other clients of the same server,
    such as tests running beside the bench, are left out)."""
    with admin.connect() as conn:
        return list(conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        ).scalars())


def cpu_per_request(before: dict[int, float], after: dict[int, float], n: int) -> float:
    """CPU milliseconds per request of the processes alive at the end of the phase (one that
    started during it counts whole; one that ended during it is missed)."""
    return 1000 * sum(after[p] - before.get(p, 0.0) for p in after) / max(n, 1)


def _statuses(errors: list[int]) -> str:
    """``0``, or how many of each unexpected status (figures with errors measure refusals)."""
    if not errors:
        return "0"
    counts = Counter(errors)
    return f"{len(errors)} (" + ", ".join(f"{n}x {s}" for s, n in sorted(counts.items())) + ")"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for this benchmark.

    httpx's async client costs more CPU per request than the API itself on a 2-core box, so
    the load generator writes requests and parses responses by hand (Content-Length bodies).
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def submit(self) -> int:
        """POST /v1/jobs with a fresh Idempotency-Key; returns the status code."""
        return await self._exchange((
            f"POST /v1/jobs HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY)

    async def healthz(self) -> int:
        """GET /healthz: the framework's floor on this machine, for the ratio."""
        return await self._exchange(
            f"GET /healthz HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        )

    async def _exchange(self, request: bytes, *, retry: bool = True) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line and retry:
            # The server closed an idle keep-alive connection: reconnect once.
            await self.close()
            self.reader = self.writer = None
            return await self._exchange(request, retry=False)
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def _timed(connection: Connection, latencies: list[float], errors: list[int],
                 probe: bool = False) -> None:
    start = time.perf_counter()
    status = await (connection.healthz() if probe else connection.submit())
    latencies.append(time.perf_counter() - start)
    if status != (200 if probe else 201):
        errors.append(status)


async def saturate(port: int, token: str, n: int, concurrency: int, max_s: float,
                   probe: bool = False) -> tuple[float, list[float], list[int]]:
    """``n`` submissions over ``concurrency`` connections, each sending as fast as answered."""
    latencies: list[float] = []
    errors: list[int] = []
    remaining = [n]
    deadline = time.monotonic() + max_s

    async def worker() -> None:
        connection = Connection("127.0.0.1", port, token)
        try:
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                await _timed(connection, latencies, errors, probe)
        finally:
            await connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - start), latencies, errors


async def paced(port: int, token: str, n: int, rate: float, max_s: float
                ) -> tuple[float, list[float], list[int]]:
    """``n`` submissions started at ``rate`` per second (open loop), on a pool of connections."""
    latencies: list[float] = []
    errors: list[int] = []
    idle: list[Connection] = []
    opened: list[Connection] = []

    async def one() -> None:
        connection = idle.pop() if idle else Connection("127.0.0.1", port, token)
        if connection not in opened:
            opened.append(connection)
        await _timed(connection, latencies, errors)
        idle.append(connection)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        due = start + i / rate
        if due - start > max_s:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in opened:
        await connection.close()
    return len(latencies) / elapsed, latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per phase (bounded)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--rate", type=float, default=TARGET_RATE / 2,
                        help="paced phase rate (a second paced phase runs at half the measured "
                        "maximum)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per phase")
    args = parse_args(parser, requests=40, concurrency=4, workers=1, max_seconds=5.0)

    schema = f"tf_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    # application_name tells the API's backends from other clients of the server (CPU below).
    url_db = f"{PG}?options=-csearch_path%3D{schema}&application_name={schema}"
    server: subprocess.Popen[bytes] | None = None
    home = Path(tempfile.mkdtemp(prefix="tf-bench-api-"))  # the API's artifacts store
    try:
        db = Database(url_db, pool_size=1)
        upgrade(db.engine)
        with db.transaction() as session:
            token = tokens.create_token(session, "bench")[1]
        db.dispose()
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TRAINFORGE_HOME": str(home),
            "TRAINFORGE_DATABASE_URL": url_db,
            "TRAINFORGE_SECRET_KEY": "bench-secret-key-0123456789",
            "TRAINFORGE_ARTIFACTS_URI": f"file://{home}/artifacts",
            "TRAINFORGE_DEFAULT_LIMITS": '{"max_active_jobs": 100000000}',
            # The bench team may read the spec's dataset (without a policy every submission is
            # a 403, which measures the refusal, not a submission).
            "TRAINFORGE_STORAGE_POLICY": json.dumps(
                {"teams": {"bench": {"datasets": ["s3://datasets/"]}}}),
            "TRAINFORGE_API_HOST": "127.0.0.1",
            "TRAINFORGE_API_PORT": str(port),
            "TRAINFORGE_API_WORKERS": str(args.workers),
            "TRAINFORGE_API_ACCESS_LOG": "false",
            "TRAINFORGE_LOG_LEVEL": "warning",
            "TRAINFORGE_MIGRATE_ON_STARTUP": "false",
        }
        server = subprocess.Popen([sys.executable, "-m", "services.api"], env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the API did not start")
            time.sleep(0.2)
        asyncio.run(saturate(port, token, min(WARMUP_REQUESTS, args.requests), args.concurrency,
                             20))  # warm-up (pools, caches)
        floor, _, _ = asyncio.run(
            saturate(port, token, args.requests, args.concurrency, args.max_seconds, probe=True))

        server_pids = _children(server.pid)
        cpu_before = (_cpu_seconds(server_pids), _cpu_seconds(_postgres_pids(admin, schema)),
                      time.process_time())
        rate, lat, errors = asyncio.run(
            saturate(port, token, args.requests, args.concurrency, args.max_seconds))
        cpu_after = (_cpu_seconds(server_pids), _cpu_seconds(_postgres_pids(admin, schema)),
                     time.process_time())
        print(f"saturation: {len(lat)} submissions, {args.concurrency} concurrent, "
              f"{args.workers} uvicorn workers, PostgreSQL on loopback")
        print(f"  throughput {rate:.0f}/s  p50 {percentile(lat, .5) * 1000:.1f} ms  "
              f"p99 {percentile(lat, .99) * 1000:.1f} ms  errors {_statuses(errors)}")
        api_ms = cpu_per_request(cpu_before[0], cpu_after[0], len(lat))
        pg_ms = cpu_per_request(cpu_before[1], cpu_after[1], len(lat))
        gen_ms = 1000 * (cpu_after[2] - cpu_before[2]) / max(len(lat), 1)
        print(f"  CPU per submission: API {api_ms:.2f} ms, PostgreSQL {pg_ms:.2f} ms, "
              f"load generator {gen_ms:.2f} ms -> at most "
              f"{2000 / (api_ms + pg_ms + gen_ms):.0f}/s on 2 idle cores")
        print(f"  ratio to the {TARGET_RATE:.0f}/s target: {rate / TARGET_RATE:.2f}")
        print(f"  ratio to GET /healthz on the same server and box ({floor:.0f}/s): "
              f"{rate / floor:.2f}")

        errors2: list[int] = []
        for pace in (args.rate, rate / 2):
            count = min(args.requests, int(pace * args.max_seconds))
            got_rate, lat2, failed = asyncio.run(
                paced(port, token, count, pace, args.max_seconds))
            errors2 += failed
            p99 = percentile(lat2, .99)
            print(f"paced at {pace:.0f}/s: {len(lat2)} submissions, achieved {got_rate:.0f}/s")
            print(f"  p50 {percentile(lat2, .5) * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  "
                  f"mean {statistics.fmean(lat2) * 1000:.1f} ms  errors {_statuses(failed)}")
            print(f"  ratio of p99 to the {TARGET_P99_S * 1000:.0f} ms target: "
                  f"{p99 / TARGET_P99_S:.2f} (≤ 1 meets it)")
        return 0 if not errors and not errors2 else 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
