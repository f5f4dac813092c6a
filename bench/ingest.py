"""End-to-end ingestion benchmark: the real `tkcloud serve` over TCP, fed pre-signed SDK batches.

    uv run python -m bench.ingest [--requests N] [--concurrency C] [--events-per-batch B]
                                  [--database postgres|sqlite] [--workers W] [--json]

What it does, in order (bench/README.md explains how to read the output):

1. makes a throwaway world: `CREATE DATABASE bench_<random>` (or a temp SQLite file), a Redis key
   prefix of its own, a temp data dir and a fresh `TKCLOUD_SECRET_KEY` (`tkcloud keygen`);
2. `tkcloud db upgrade`, `tkcloud org create --plan enterprise` (no rate limit, no quota) and
   `tkcloud app create --environment production`, each as a subprocess, like an operator would;
3. starts `tkcloud serve --port <free port> --workers W` and waits for `GET /health`;
4. builds and signs every batch first (HMAC-SHA256 over `{ts}:{nonce}:` + body, like the SDK),
   sends a few un-timed warm-up batches, then the timed ones at bounded concurrency;
5. prints requests/s, events/s, latency percentiles, statuses, CPU and the server's peak RSS;
6. checks that the events stored equal the events acknowledged (a direct COUNT and `tkcloud usage`);
7. always stops the server, drops the database, deletes its Redis keys and the temp dir, even on
   Ctrl-C or SIGTERM.

Only 127.0.0.1 is spoken to; the run stops sending after --max-seconds whatever --requests says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from tests.support.sdk import SignedRequest, batch_body, sdk_event, signed_request

from bench.database import Postgres

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RESIGN_AFTER_SECONDS = 480  # the service accepts x-timestamp within 600 s of its clock


@functools.cache
def tkcloud_command() -> list[str]:
    """The `tkcloud` console script of this environment (what `uv run tkcloud` runs, without
    uv's own start-up in every call)."""
    script = Path(sys.executable).parent / "tkcloud"
    found = str(script) if script.exists() else shutil.which("tkcloud")
    if found is None:
        raise SystemExit("`tkcloud` is not installed here: run this with `uv run python -m ...`")
    return [found]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- the world the run owns ------------------------------------------------------------------


def sqlite_count_events(path: Path, app_id: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE app_id = ?", (app_id,)).fetchone()
    return int(row[0])


def redis_ping(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def redis_delete_prefix(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tkcloud(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*tkcloud_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tkcloud {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def tkcloud_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(tkcloud(env, *args, "--json"))


# --- the server and its processes ------------------------------------------------------------


class Server:
    """`tkcloud serve` in a session of its own: Ctrl-C reaches the bench, which stops it."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *tkcloud_command(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"the server was not healthy within {timeout:g} s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        pgid = self.process.pid  # the session leader: its process group holds every worker
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # uvicorn shuts its workers down
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker left behind by its supervisor
            os.killpg(pgid, signal.SIGKILL)
        self._log.close()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn's workers are children of its supervisor)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree = [root]
    for pid in tree:  # grows while iterating: a breadth-first walk
        tree.extend(children.get(pid, []))
    return tree


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _role(pid: int, root: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if pid == root:
        return "server"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "multiprocessing" in cmdline:
        return "worker"
    return cmdline[:40]


@dataclass
class CpuSnapshot:
    """CPU ticks (user + system) per process, by who the process is, and the machine's.

    Groups: the server's processes, Postgres (the backends of the run's database and the
    server's own background processes), Redis, this client, kernel threads (children of
    kthreadd: I/O writeback...) and every other process, other databases' backends included.
    A process counts with its reaped children. What no live process accounts for (interrupts,
    processes whose parent exited too) is `unattributed`. Other processes and unattributed time
    are other people's work on a shared machine: when they're large, that run's figures are low.
    """

    by_group: dict[str, dict[int, int]]
    machine_busy: int
    machine_total: int

    GROUPS = ("server", "postgres", "redis", "client", "kernel", "other_processes")

    @classmethod
    def take(cls, server_pids: list[int], database: str | None = None) -> CpuSnapshot:
        server, me = set(server_pids), os.getpid()
        groups: dict[str, dict[int, int]] = {group: {} for group in cls.GROUPS}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            head, _, tail = stat.rpartition(")")
            comm, fields = head.partition("(")[2], tail.split()
            ppid = int(fields[1])
            # utime, stime, cutime, cstime (fields 14-17): a process's reaped children count
            # with it, so other people's short-lived commands land in their test runner.
            ticks = sum(int(v) for v in fields[11:15])
            if pid in server:
                group = "server"
            elif pid == me:
                group = "client"
            elif comm == "postgres":
                group = "postgres" if _ours_or_shared(pid, database) else "other_processes"
            elif comm.startswith("redis-server"):
                group = "redis"
            elif pid == 2 or ppid == 2:
                group = "kernel"
            else:
                group = "other_processes"
            groups[group][pid] = ticks
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])  # guest time is already counted in user
        return cls(groups, total - idle, total)

    def seconds_since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU seconds each group used since `before` (processes born since count in full)."""
        hz = os.sysconf("SC_CLK_TCK")
        used = {
            group: sum(t - before.by_group[group].get(pid, 0) for pid, t in pids.items()) / hz
            for group, pids in self.by_group.items()
        }
        machine = (self.machine_busy - before.machine_busy) / hz
        used["unattributed"] = max(0.0, machine - sum(used.values()))
        used["machine"] = machine
        used["machine_capacity"] = (self.machine_total - before.machine_total) / hz
        return used


def _ours_or_shared(pid: int, database: str | None) -> bool:
    """A Postgres process serving the run's database, or one serving no client (walwriter,
    checkpointer...). Backends read `postgres: 15/main: <user> <database> <host(port)> <state>`."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    except OSError:
        return False
    if database is not None and database in words:
        return True
    return not any(w == "[local]" or (w.endswith(")") and "(" in w) for w in words)


class PostgresWaits:
    """Samples pg_stat_activity for the run's database: how many backends are active and what
    they wait on (Lock:transactionid is a row lock held by another transaction)."""

    def __init__(self, url: str, database: str, interval: float = 0.2) -> None:
        self.url, self.database, self.interval = url, database, interval
        self.samples = 0
        self.active = 0
        self.waits: Counter[str] = Counter()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()",
                    self.database,
                )
                self.samples += 1
                self.active += len(rows)
                for row in rows:
                    kind = row["wait_event_type"]
                    self.waits[f"{kind}:{row['wait_event']}" if kind else "on CPU"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "mean_active_backends": round(self.active / n, 2),
            "mean_backends_by_wait": {
                name: round(count / n, 2) for name, count in self.waits.most_common(5)
            },
        }


# --- the load --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int = 0
    wall_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # first answer per failing status
    accepted: int = 0
    resigned: int = 0
    unsent: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds by group over the run


async def run_load(
    client: httpx.AsyncClient,
    requests: list[SignedRequest],
    *,
    concurrency: int,
    resign: Callable[[SignedRequest], SignedRequest],
    deadline: float,
    server_pids: Callable[[], list[int]],
    database: str | None = None,
) -> LoadResult:
    result = LoadResult()
    cursor = itertools.count()

    async def sender() -> None:
        for index in cursor:
            if index >= len(requests):
                return
            if time.monotonic() > deadline:
                result.unsent += 1
                continue
            request = requests[index]
            if time.time() - int(request.headers["x-timestamp"]) > RESIGN_AFTER_SECONDS:
                request = resign(request)  # a long run: keep inside the timestamp window
                result.resigned += 1
            started = time.perf_counter()
            try:
                response = await client.post(
                    request.path, content=request.body, headers=request.headers
                )
            except httpx.HTTPError as exc:
                result.transport_errors[type(exc).__name__] += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.sent += 1
            status = response.status_code
            result.statuses[status] += 1
            if status in (200, 207):
                result.accepted += int(json.loads(response.content)["accepted"])
            if status != 200:
                result.samples.setdefault(str(status), response.text[:300])

    pids = server_pids()
    cpu_before = CpuSnapshot.take(pids, database)
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    result.wall_seconds = time.perf_counter() - started
    result.cpu = CpuSnapshot.take(pids, database).seconds_since(cpu_before)
    return result


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0-100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Target:
    org_id: str
    app_id: str
    secret: str
    batch: int

    def sign(self, body: bytes) -> SignedRequest:
        return signed_request(
            self.org_id,
            self.app_id,
            self.secret,
            body,
            now=datetime.now(UTC),
            batch_size=self.batch,
        )

    def build(self, count: int) -> Iterator[SignedRequest]:
        for _ in range(count):
            now = datetime.now(UTC)
            yield self.sign(batch_body([sdk_event(now) for _ in range(self.batch)]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Benchmark the real `tkcloud serve` with pre-signed SDK batches.",
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed batches (2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--events-per-batch", type=int, default=100, help="1-1000 (100)")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--workers", type=int, default=1, help="server processes (1)")
    parser.add_argument(
        "--cache",
        choices=["redis", "memory"],
        help="nonce/rate/quota store: redis (default with postgres) or memory (with sqlite)",
    )
    parser.add_argument("--warmup", type=int, default=20, help="un-timed batches first (20)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after (300)")
    parser.add_argument("--timeout", type=float, default=30, help="per request, seconds (30)")
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("TKCLOUD_BENCH_POSTGRES_DSN", DEFAULT_ADMIN_DSN),
        help="admin DSN; the bench creates and drops a database next to it",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TKCLOUD_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    args.cache = args.cache or ("redis" if args.database == "postgres" else "memory")
    if not 1 <= args.events_per_batch <= 1000:
        parser.error("--events-per-batch: 1 to 1000 (the protocol's limit)")
    if args.requests < 1 or args.concurrency < 1 or args.workers < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --workers must be positive")
    if args.workers > 1 and args.cache != "redis":
        parser.error("--workers > 1 needs --cache redis (the service refuses otherwise)")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="tkbench-"))
    postgres = Postgres(args.postgres_dsn) if args.database == "postgres" else None
    redis_prefix = f"tkbench:{secrets.token_hex(4)}:" if args.cache == "redis" else None
    server: Server | None = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
        env["TKCLOUD_DATA_DIR"] = str(workdir / "data")
        env["TKCLOUD_LOG_LEVEL"] = "warning"
        if postgres is not None:
            log(f"creating database {postgres.name}")
            postgres.create()
            env["TKCLOUD_DATABASE_URL"] = postgres.url
        else:
            env["TKCLOUD_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir / 'data' / 'tkcloud.db'}"
        if redis_prefix is not None:
            redis_ping(args.redis_url)
            env["TKCLOUD_REDIS_URL"] = args.redis_url
            env["TKCLOUD_REDIS_PREFIX"] = redis_prefix
        env["TKCLOUD_SECRET_KEY"] = tkcloud(env, "keygen").strip()

        log("tkcloud db upgrade; org create --plan enterprise; app create --environment production")
        tkcloud(env, "db", "upgrade")
        env["TKCLOUD_AUTO_MIGRATE"] = "false"  # migrated once above
        org = tkcloud_json(env, "org", "create", "--name", "Bench", "--plan", "enterprise")
        app_args = ["app", "create", "--org", org["org_id"], "--name", "bench"]
        app = tkcloud_json(env, *app_args, "--environment", "production")
        target = Target(org["org_id"], app["app_id"], app["secret"], args.events_per_batch)

        log(f"building and signing {args.warmup} + {args.requests} batches")
        warmup = list(target.build(args.warmup))
        timed = list(target.build(args.requests))
        body_bytes = len(timed[0].body)

        server = Server(env, args.workers, workdir / "server.log")
        server.wait_healthy()
        log(f"server up at {server.url} ({args.workers} worker(s)); sending")

        running_server = server

        async def load() -> tuple[LoadResult, LoadResult, dict[str, Any] | None]:
            async with httpx.AsyncClient(
                base_url=running_server.url,
                timeout=args.timeout,
                trust_env=False,  # never through a proxy: 127.0.0.1 only
                limits=httpx.Limits(
                    max_connections=args.concurrency, max_keepalive_connections=args.concurrency
                ),
            ) as client:
                deadline = time.monotonic() + args.max_seconds
                common: dict[str, Any] = {
                    "concurrency": args.concurrency,
                    "resign": lambda r: target.sign(r.body),
                    "deadline": deadline,
                    "server_pids": running_server.pids,
                    "database": postgres.name if postgres is not None else None,
                }
                warm = await run_load(client, warmup, **common)
                if postgres is None:
                    return warm, await run_load(client, timed, **common), None
                waits = PostgresWaits(postgres.url, postgres.name)
                sampling = asyncio.create_task(waits.run())
                try:
                    timed_result = await run_load(client, timed, **common)
                finally:
                    waits.stop()
                    await sampling
                return warm, timed_result, waits.summary()

        warm, result, postgres_waits = asyncio.run(load())

        processes = [
            (pid, _role(pid, server.process.pid), _status_kib(pid, "VmHWM"))
            for pid in server.pids()
        ]
        acknowledged = warm.accepted + result.accepted
        if postgres is not None:
            stored = postgres.count_events(target.app_id)
        else:
            stored = sqlite_count_events(workdir / "data" / "tkcloud.db", target.app_id)
        usage = tkcloud_json(env, "usage", "--org", target.org_id)
        usage_events = sum(int(row["events"]) for row in usage["items"])
        figures = summarise(
            args,
            result,
            warm,
            body_bytes=body_bytes,
            processes=processes,
            acknowledged=acknowledged,
            stored=stored,
            usage_events=usage_events,
            postgres_waits=postgres_waits,
        )
        print(json.dumps(figures, indent=2) if args.json else render(figures), flush=True)
        return 0 if figures["verify"]["ok"] else 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (RuntimeError, OSError) as exc:  # a command or the server failed: say which, clean up
        log(f"failed: {exc}")
        return 2
    finally:
        if server is not None:
            server.stop()
        if postgres is not None:
            with contextlib.suppress(Exception):
                postgres.drop()
                log(f"dropped database {postgres.name}")
        if redis_prefix is not None:
            with contextlib.suppress(Exception):
                deleted = redis_delete_prefix(args.redis_url, redis_prefix)
                log(f"deleted {deleted} Redis key(s) under {redis_prefix}")
        shutil.rmtree(workdir, ignore_errors=True)


def code_version() -> str:
    """The commit measured, and whether the service's code differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages", "migrations"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes" if changed else "")


def summarise(
    args: argparse.Namespace,
    result: LoadResult,
    warm: LoadResult,
    *,
    body_bytes: int,
    processes: list[tuple[int, str, int]],
    acknowledged: int,
    stored: int,
    usage_events: int,
    postgres_waits: dict[str, Any] | None,
) -> dict[str, Any]:
    latencies = sorted(result.latencies)
    wall = result.wall_seconds or float("nan")
    ok = stored == acknowledged == usage_events
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
        "setup": {
            "database": args.database,
            "cache": args.cache,
            "workers": args.workers,
            "requests": args.requests,
            "events_per_batch": args.events_per_batch,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "body_bytes": body_bytes,
        },
        "completed": result.sent,
        "unsent": result.unsent,
        "resigned": result.resigned,
        "wall_seconds": round(result.wall_seconds, 3),
        "requests_per_second": round(result.sent / wall, 1),
        "events_per_second": round(result.accepted / wall, 1),
        "accepted_events": result.accepted,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p95": round(percentile(latencies, 95) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(latencies[-1] * 1000, 2) if latencies else None,
        },
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "errors": {
            **{str(k): v for k, v in sorted(result.statuses.items()) if k != 200},
            **dict(result.transport_errors),
        },
        "error_samples": result.samples,
        "cpu_seconds": {
            **{k: round(v, 2) for k, v in result.cpu.items() if k != "machine_capacity"},
            "machine_busy_percent": round(
                100 * result.cpu["machine"] / max(result.cpu["machine_capacity"], 1e-9), 1
            ),
        },
        "postgres_waits": postgres_waits,
        "server_peak_rss_mib": {
            "total": round(sum(kib for _, _, kib in processes) / 1024, 1),
            "processes": [
                {"pid": pid, "role": role, "vmhwm_mib": round(kib / 1024, 1)}
                for pid, role, kib in processes
            ],
        },
        "verify": {
            "acknowledged": acknowledged,
            "warmup_acknowledged": warm.accepted,
            "stored": stored,
            "usage": usage_events,
            "ok": ok,
        },
    }


def render(f: dict[str, Any]) -> str:
    s, lat, cpu, rss, v = (
        f["setup"],
        f["latency_ms"],
        f["cpu_seconds"],
        f["server_peak_rss_mib"],
        f["verify"],
    )
    caches = "Redis" if s["cache"] == "redis" else "in-process caches"
    database = "Postgres" if s["database"] == "postgres" else "SQLite"
    lines = [
        f"tkcloud ingest benchmark - {f['when']} - {f['machine']['platform']}, "
        f"{f['machine']['cpus']} CPUs, Python {f['machine']['python']}, code {f['code']}",
        f"setup      {database} + {caches}, {s['workers']} worker(s); {s['requests']} requests x "
        f"{s['events_per_batch']} events ({s['body_bytes'] / 1024:.1f} KiB body), "
        f"concurrency {s['concurrency']}, {s['warmup']} warm-up requests",
        f"timed      {f['completed']} requests in {f['wall_seconds']:.2f} s"
        + (f" ({f['unsent']} not sent: --max-seconds reached)" if f["unsent"] else "")
        + (f" ({f['resigned']} re-signed)" if f["resigned"] else ""),
        f"throughput {f['requests_per_second']:,.1f} requests/s   "
        f"{f['events_per_second']:,.0f} events/s",
        f"latency    p50 {lat['p50']:.1f} ms   p95 {lat['p95']:.1f} ms   p99 {lat['p99']:.1f} ms"
        f"   max {lat['max'] or float('nan'):.1f} ms",
        "statuses   " + ", ".join(f"{k}: {n}" for k, n in f["statuses"].items()),
        "errors     " + (", ".join(f"{k}: {n}" for k, n in f["errors"].items()) or "none"),
    ]
    lines += [f"  {status} e.g. {text}" for status, text in f["error_samples"].items()]
    lines += [
        f"cpu (s)    server {cpu['server']:.1f}, postgres {cpu['postgres']:.1f}, "
        f"redis {cpu['redis']:.1f}, client {cpu['client']:.1f}, kernel {cpu['kernel']:.1f}; "
        f"not ours: other processes {cpu['other_processes']:.1f}, "
        f"unattributed {cpu['unattributed']:.1f}; "
        f"machine {cpu['machine_busy_percent']:.0f}% busy over {f['machine']['cpus']} cores",
    ]
    if f["postgres_waits"]:
        w = f["postgres_waits"]
        lines.append(
            f"postgres   {w['mean_active_backends']:.1f} active backends on average; by wait: "
            + ", ".join(f"{k} {n:.1f}" for k, n in w["mean_backends_by_wait"].items())
        )
    lines += [
        f"server RSS peak (VmHWM) {rss['total']:.1f} MiB in total: "
        + ", ".join(f"{p['role']} {p['vmhwm_mib']:.1f}" for p in rss["processes"]),
        f"verify     {v['acknowledged']:,} events acknowledged (incl. {v['warmup_acknowledged']:,} "
        f"warm-up); {v['stored']:,} stored; tkcloud usage {v['usage']:,} -> "
        + ("OK" if v["ok"] else "MISMATCH"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
