"""Benchmark correlation by 1, 2 and 4 worker processes sharing one PostgreSQL store.

Run from the repository root::

    python benchmarks/bench_postgres.py [--quick] [--sends N] [--messages M] [--workers 1,2,4]
                                        [--data-dir DIR] [--output FILE]

Issue 7's benchmark: "correlations/s with 1, 2 and 4 workers on one PostgreSQL holding
1,000,000 sends". The sends and the mail are bench_correlate.py's (imported from it): N sends
(default 1,000,000) as bench_store.py makes them, and a generated inbox of M messages (default
20,000: 35 % replies, 5 % out-of-office, 3 % bounces, 57 % unrelated mail), so the numbers
compare with bench_correlate.py's single process on SQLite.

The server: a PostgreSQL of its own (``tests/servers.py``, loaded by path), with durable
settings (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on, PostgreSQL's
defaults) and ``shared_buffers=1GB``, listening on 127.0.0.1; its cluster is kept under
``--data-dir`` (default ``$TMPDIR/replytrack-bench/postgres-bench<V>``) between runs.

The fixture: database ``bench_<N>``, its schema made by `PostgresStore` itself (the
migrations), then filled with COPY: the rows are the ones ``PostgresStore.record_sent`` writes
(computed by the store module's own helpers), secondary indexes dropped during the load and
made again after it, then ``VACUUM ANALYZE``. A marker row written last tells a complete
fixture from an interrupted build, which is dropped and built again. Before timing, every
table and index of the schema is read into shared buffers (``pg_prewarm``), as an active
store's are.

Each round starts W worker processes (this script with ``--worker``), each with its own
``PostgresStore(min_size=1, max_size=1)`` and ``Correlator``. The template pool is built once
by the parent and handed to the workers in a file. Each worker correlates an untimed warm-up
share, says it is ready, and when all are, they start together; worker k then correlates the
messages k, k+W, k+2W ... of the same M-message stream, each call timed alone with
``perf_counter_ns``, every result checked as bench_correlate checks it. A round reports:

* ``per_second``: M divided by the wall time from the common start to the last worker's end;
* per worker: messages, its own rate, latencies (mean, median, p95, p99, max), the CPU time
  of the worker process and of its PostgreSQL backend (``/proc``, Linux);
* ``cpu_busy``: those CPU seconds over wall time x usable CPUs (1.0: every core busy).

``scaling`` gives each round's rate over the one-worker round's. Workers cannot scale beyond
the machine's cores: each correlation burns CPU in the worker (parsing, classification) and
in its PostgreSQL backend (the lookups), so two workers already keep two cores busy.

The JSON report goes to stdout, and to ``--output`` as well when given. The exit status is 1
when a sanity check failed (the numbers are still reported), 2 when PostgreSQL cannot start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from replytrack.correlate import Correlator
from replytrack.store import postgres as pg_store
from replytrack.store.postgres import PostgresStore

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the siblings _common.py and bench_correlate.py, also in tests

import _common  # noqa: E402 (found through the sys.path line above)
import bench_correlate as bc  # noqa: E402
import bench_store  # noqa: E402 (the same module bench_correlate imports)

SCHEMA_VERSION = 1
SERVERS = HERE.parent / "tests" / "servers.py"
FULL = {"sends": 1_000_000, "messages": 20_000}
QUICK = {"sends": 20_000, "messages": 2_000}
WORKERS = (1, 2, 4)
WARMUP = 500  # untimed messages per round, shared among the workers
SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB"}
NOTES = (
    "Each correlation costs CPU in the worker process (parsing, classification) and in its "
    "PostgreSQL backend (the lookups), plus loopback round trips. With as many workers as "
    "usable CPUs the cores are busy; more workers share them, so throughput cannot grow past "
    "that point (4 workers on 2 cores run like 2), and latencies grow with the waiting."
)


def load_servers() -> ModuleType:
    """``tests/servers.py``: the PostgreSQL the tests use (needs pytest, a test dependency)."""
    spec = importlib.util.spec_from_file_location("replytrack_bench_servers", SERVERS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# The fixture
# --------------------------------------------------------------------------------------------

SEND_COLUMNS = (
    "id, message_id, ref, sender, to_addrs, cc_addrs, subject, sent_at, provider_thread_id,"
    " thread_index"
)
SEND_TYPES = ["int8", "text", "text", "text", "text[]", "text[]", "text", "timestamptz"]
SEND_TYPES += ["text", "bytea"]
SUBJECT_TYPES = ["int8", "int8", "timestamptz", "int8"]


def fixture_ready(server: Any, name: str, sends: int) -> bool:
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.bench_fixture')").fetchone()
        if exists is None or exists[0] is None:
            return False
        row = conn.execute("SELECT sends FROM public.bench_fixture").fetchone()
        return row is not None and row[0] == sends


def build_fixture(server: Any, name: str, sends: int, log: Callable[[str], None]) -> float:
    """Make database `name` holding `sends` sends; return the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        database = sql.Identifier(name)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
    dsn = server.dsn(name)
    with PostgresStore(dsn, min_size=0, max_size=1) as store:  # the schema, as the store makes it
        schema = store.schema
    with psycopg.connect(dsn) as sends_conn, psycopg.connect(dsn) as index_conn:
        sends_conn.execute("SET maintenance_work_mem = '512MB'")
        indexes = sends_conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
            " AND tablename IN ('sends', 'subject_index', 'message_ids')"
            " AND indexname NOT LIKE '%%_pkey'",
            (schema,),
        ).fetchall()
        for index, _ in indexes:
            sends_conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
        sends_conn.commit()
        log(f"loading {sends:,} sends with COPY")
        with (
            sends_conn.cursor().copy(
                sql.SQL("COPY {} (" + SEND_COLUMNS + ") FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(schema, "sends")
                )
            ) as sends_copy,
            index_conn.cursor().copy(
                sql.SQL(
                    "COPY {} (subject_hash, address_hash, sent_at, send_id)"
                    " FROM STDIN (FORMAT BINARY)"
                ).format(sql.Identifier(schema, "subject_index"))
            ) as index_copy,
        ):
            sends_copy.set_types(SEND_TYPES)
            index_copy.set_types(SUBJECT_TYPES)
            for i in range(sends):
                # The rows record_sent writes: the store module's own conversions.
                p = pg_store._send_params(bench_store.make_send(i))
                send_id = i + 1  # recording order: send i was recorded i-th
                sends_copy.write_row(
                    (
                        send_id,
                        p["mid"],
                        p["ref"],
                        p["sender"],
                        p["to"],
                        p["cc"],
                        p["subject"],
                        p["sent_at"],
                        p["thread"],
                        p["guid"],
                    )
                )
                for party in p["parties"]:
                    index_copy.write_row((p["subject_hash"], party, p["sent_at"], send_id))
                if i % 200_000 == 199_999:
                    log(f"copied {i + 1:,} sends")
        index_conn.commit()
        log("message ids, indexes")
        sends_conn.execute(
            sql.SQL(
                "INSERT INTO {} (message_id, send_id, alias) SELECT message_id, id, false FROM {}"
            ).format(sql.Identifier(schema, "message_ids"), sql.Identifier(schema, "sends"))
        )
        for _, definition in indexes:
            sends_conn.execute(definition)  # pg_indexes' own CREATE INDEX statements
        sends_conn.execute(
            "SELECT setval(%s::regclass, %s)",
            (sql.Identifier(schema, "send_ids").as_string(), max(1, sends)),
        )
        sends_conn.execute("CREATE TABLE public.bench_fixture (sends bigint NOT NULL)")
        sends_conn.execute("INSERT INTO public.bench_fixture VALUES (%s)", (sends,))
        sends_conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        log("VACUUM ANALYZE")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def prewarm(dsn: str) -> int | None:
    """Read the schema's tables and indexes into shared buffers; the blocks read, or None."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        except psycopg.Error:
            return None  # contrib not installed: the OS page cache warms up in the warm-up
        row = conn.execute(
            "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'replytrack' AND c.relkind IN ('r', 'i')"
        ).fetchone()
        return int(row[0] or 0) if row else 0


def server_facts(server: Any, dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN"
                " ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers',"
                " 'max_connections')"
            ).fetchall()
        )
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {
        "version": server.version(),
        "settings": settings,
        "database_bytes": int(size[0]) if size else None,
    }


# --------------------------------------------------------------------------------------------
# The workers
# --------------------------------------------------------------------------------------------


def share(
    pool: Sequence[bc.Template], sends: int, messages: int, seed: int, *, workers: int, index: int
) -> Iterator[bc.Incoming]:
    """Worker `index`'s messages of ``bc.stream(pool, sends, messages, seed)``.

    The same random draws as the stream, so the shares of all workers are the stream; only
    this worker's messages are filled in (filling is not free, and others' are not needed).
    """
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    for seq in range(messages):
        template = pool[seq % len(pool)]
        send = rng.randrange(0, sends, 4) if template.variant.cc_send else rng.randrange(sends)
        if seq % workers == index:
            yield bc.Incoming(template.variant, send, bc.fill(template.raw, send, seq))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` (Linux ``/proc``), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_main(spec: dict[str, Any]) -> int:
    """One worker: warm up, say ready, wait for "go", correlate its share, print its result."""
    with open(spec["pool_file"], "rb") as f:
        pool = pickle.load(f)  # noqa: S301 (written by the parent process a moment ago)
    n, k = spec["workers"], spec["index"]
    with PostgresStore(spec["dsn"], min_size=1, max_size=1) as store:
        with store.pool.connection() as conn:
            backend = conn.info.backend_pid
        correlator = Correlator(store)
        correlate = correlator.correlate
        warmup = share(pool, spec["sends"], spec["warmup"], spec["seed"] + 1, workers=n, index=k)
        for incoming in warmup:
            correlate(incoming.raw)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        tally = bc.Tally()
        latencies: list[float] = []
        clock = time.perf_counter_ns
        cpu_before, server_before = time.process_time(), cpu_seconds(backend)
        started = time.monotonic()
        mine = share(pool, spec["sends"], spec["messages"], spec["seed"] + 2, workers=n, index=k)
        for incoming in mine:
            t0 = clock()
            correlation = correlate(incoming.raw)
            t1 = clock()
            latencies.append((t1 - t0) / 1000)
            tally.add(incoming, correlation)
        finished = time.monotonic()
        cpu = time.process_time() - cpu_before
        server_after = cpu_seconds(backend)
    server_cpu = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    print(
        json.dumps(
            {
                "index": k,
                "started": started,
                "finished": finished,
                "latencies_us": latencies,
                "client_cpu_seconds": round(cpu, 3),
                "server_cpu_seconds": None if server_cpu is None else round(server_cpu, 3),
                "matches": tally.report(),
                "failures": tally.failures,
                "examples": tally.examples,
            }
        )
    )
    return 0


def run_round(
    workers: int, spec: dict[str, Any], usable_cpus: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Start `workers` worker processes together; gather and summarise their results."""
    log(f"{workers} worker(s): {spec['messages']:,} messages")
    procs = [
        subprocess.Popen(  # noqa: S603 (this script, under the interpreter running it)
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                json.dumps({**spec, "workers": workers, "index": k}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                _, err = proc.communicate(timeout=60)
                raise RuntimeError(f"a worker did not start: {line!r} {err}")
        for proc in procs:  # all ready: go together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed ({proc.returncode}): {err}")
            outputs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = max(o["finished"] for o in outputs) - min(o["started"] for o in outputs)
    every = [x for o in outputs for x in o["latencies_us"]]
    cpu = [
        o["client_cpu_seconds"] + (o["server_cpu_seconds"] or 0.0) for o in outputs
    ]  # what the round cost the machine
    per_worker = []
    for o in sorted(outputs, key=lambda o: o["index"]):
        own = o["finished"] - o["started"]
        per_worker.append(
            {
                "messages": len(o["latencies_us"]),
                "per_second": round(len(o["latencies_us"]) / own) if own else None,
                **bc.latency_summary(o["latencies_us"]),
                "client_cpu_seconds": o["client_cpu_seconds"],
                "server_cpu_seconds": o["server_cpu_seconds"],
            }
        )
    return {
        "workers": workers,
        "messages": len(every),
        "wall_seconds": round(wall, 3),
        "per_second": round(len(every) / wall) if wall else None,
        "latency": bc.latency_summary(every),
        "cpu_busy": round(sum(cpu) / (wall * usable_cpus), 3) if wall else None,
        "per_worker": per_worker,
        "outputs": outputs,  # popped by main() after the checks
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time Correlator.correlate in 1, 2 and 4 processes sharing a PostgreSQL "
        "store of N sends; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: {QUICK['sends']:,} sends, {QUICK['messages']:,} messages "
        f"(default: {FULL['sends']:,} and {FULL['messages']:,})",
    )
    parser.add_argument("--sends", type=int, help="sends in the store (the fixture)")
    parser.add_argument("--messages", type=int, help="incoming messages per round")
    parser.add_argument(
        "--workers",
        default=",".join(map(str, WORKERS)),
        help="worker counts, one round each (default 1,2,4)",
    )
    parser.add_argument("--seed", type=int, default=bc.SEED, help="seed of the generated mail")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "replytrack-bench",
        help="where the PostgreSQL cluster holding the fixture is built once and kept",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a worker process's spec (JSON)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return args
    sizes = QUICK if args.quick else FULL
    args.sends = sizes["sends"] if args.sends is None else args.sends
    args.messages = sizes["messages"] if args.messages is None else args.messages
    try:
        args.workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--workers must be a comma-separated list of counts, e.g. 1,2,4")
    if args.sends < 1:
        parser.error("--sends must be at least 1")
    if min(args.workers) < 1:
        parser.error("--workers must be at least 1")
    if args.messages < max(args.workers):
        parser.error("--messages must be at least the largest number of workers")
    return args


def measure(
    server: Any, args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], tuple[int, list[str]]]:
    """Make (or reuse) the fixture, then run one round per worker count.

    Returns:
        The fixture's and the server's facts (with the sample's), the rounds, and the failed
        checks (how many, a few examples).
    """
    name = f"bench_{args.sends}"
    dsn = server.dsn(name)
    build_seconds = None
    if not fixture_ready(server, name, args.sends):
        log(f"building database {name} in {server.data} (once)")
        build_seconds = round(build_fixture(server, name, args.sends, log), 1)
    with PostgresStore(dsn, min_size=0, max_size=1) as store:
        # Sanity: the fixture holds what the stream answers, as record_sent would have.
        last = args.sends - 1
        expected = bench_store.make_send(last)
        if (
            store.find_sent([expected.message_id]).get(expected.message_id) != expected
            or store.find_sent_by_thread_index(last.to_bytes(16, "big")) != expected
            or store.find_sent_by_subject(f"RE: {expected.subject}", [expected.to[0]])
            != [expected]
        ):
            raise AssertionError(f"database {name} does not hold the expected sends")
    facts: dict[str, Any] = {
        "fixture": {
            "sends": args.sends,
            "cluster": str(server.data),
            "database": name,
            "build_seconds": build_seconds,
            "prewarmed_blocks": prewarm(dsn),
        },
        "server": server_facts(server, dsn),
    }
    pool_size = min(bc.POOL, max(len(bc.VARIANTS), args.messages // 4))
    log(f"building {pool_size:,} message templates")
    pool = bc.build_pool(pool_size, args.seed)
    digest = hashlib.sha256()
    for template in pool:
        digest.update(template.raw)
    facts["sample"] = {
        "mix": bc.MIX,
        "templates": len(pool),
        "templates_sha256": digest.hexdigest(),
    }
    usable = _common.environment()["usable_cpus"] or os.cpu_count() or 1
    failures, examples = 0, []
    rounds = []
    with tempfile.TemporaryDirectory(prefix="replytrack-bench-postgres-") as scratch:
        pool_file = Path(scratch) / "pool.pickle"
        pool_file.write_bytes(pickle.dumps(pool))
        spec = {
            "dsn": dsn,
            "pool_file": str(pool_file),
            "sends": args.sends,
            "messages": args.messages,
            "warmup": min(WARMUP, args.messages // 10),
            "seed": args.seed,
        }
        facts["warmup"] = spec["warmup"]
        for workers in args.workers:
            result = run_round(workers, spec, usable, log)
            for output in result.pop("outputs"):
                failures += output["failures"]
                examples += output["examples"][: max(0, 5 - len(examples))]
            rounds.append(result)
            log(
                f"{workers} worker(s): {result['per_second']:,} correlations/s, "
                f"median {result['latency']['median_us']:,} µs, cpu busy {result['cpu_busy']}"
            )
    return facts, rounds, facts["server"], (failures, examples)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(json.loads(args.worker))

    log = _common.stderr_logger("bench_postgres")
    started = dt.datetime.now(dt.timezone.utc)
    servers = load_servers()
    cluster = args.data_dir / f"postgres-bench{SCHEMA_VERSION}"
    try:
        server = servers.PostgreSQL(durable=True, data_dir=cluster, settings=SERVER_SETTINGS)
    except BaseException as exc:  # servers.server_missing raises pytest's skip or fail
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        log(f"cannot start PostgreSQL: {exc}")
        return 2
    load_start = _common.load_average()
    try:
        facts, rounds, server_info, (failures, examples) = measure(server, args, log)
    finally:
        server.close()
    load_end = _common.load_average()

    base = next((r["per_second"] for r in rounds if r["workers"] == 1), None)
    report = {
        "benchmark": "bench_postgres",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "sends": args.sends,
            "messages": args.messages,
            "workers": args.workers,
            "warmup": facts["warmup"],
            "seed": args.seed,
            "store": "PostgresStore(dsn, min_size=1, max_size=1) per worker process",
            "timer": "perf_counter_ns around each correlate() call; rate from the wall time",
        },
        "fixture": facts["fixture"],
        "server": server_info,
        "sample": facts["sample"],
        "environment": _common.environment(
            psycopg=_common.installed("psycopg"),
            psycopg_pool=_common.installed("psycopg-pool"),
            postgres=server_info["version"],
        ),
        "load_average": {"start": load_start, "end": load_end},
        "results": {str(r["workers"]): r for r in rounds},
        "scaling": {
            str(r["workers"]): round(r["per_second"] / base, 2) if base else None for r in rounds
        },
        "notes": NOTES,
        "sanity": {"ok": failures == 0, "failures": failures, "examples": examples},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
