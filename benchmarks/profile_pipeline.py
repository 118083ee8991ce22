"""Where the pipeline's time goes: CPU per process and per document, with profiles.

The pipeline as in throughput.py (b): a code server and a `dagster-daemon` on a fresh
DAGSTER_HOME and database, N generated invoices dropped into its inbox, until every `extraction`
partition is materialised and documents.parquet holds N rows. In that window it measures:
- CPU per process (daemon, code server, each run worker, resolved to its run and job), the
  Postgres server and the simulator, divided by N;
- database work: pg_stat_database (sessions, commits, tuples) and pg_stat_user_tables deltas of
  the run's database, and the event-log rows by type;
- with `--pyspy`: a py-spy sampling profile (`--idle` off) of every Python process of the
  daemon's tree, raw collapsed stacks under OUT/, grouped into buckets per process type. py-spy
  counts runnable threads as active, so on a busy 2-core machine its samples add up to 1.3-2.2x
  the CPU psutil measures: use the shares, scaled to the CPU of an unprofiled run (`--cpu-from`);
- with `--count-sql`: every SQLAlchemy statement and new connection, per process, by verb,
  table and calling Dagster function (a sitecustomize on PYTHONPATH of the daemon's tree only;
  raw-DBAPI queries such as pool pre-pings are not seen);
- with `--perf`: a system-wide `perf record -g` (199 Hz): CPU by command (idle included) and the
  Postgres backends' samples by phase (connection start/exit, parse, plan, execute, commit).
`--idle-seconds S` measures the idle pipeline instead (nothing dropped); `--in-process M` runs
ranged intake_job runs of M documents in this process, with and without DAGSTER_EVENT_BATCH_SIZE.
Profilers and counters perturb timings: take CPU figures from a run without them.

    .venv/bin/python benchmarks/profile_pipeline.py -n 1000 --out /tmp/prof-meter-1000 --perf
    .venv/bin/python benchmarks/profile_pipeline.py -n 1000 --out /tmp/prof-pyspy-1000 --pyspy \
        --cpu-from /tmp/prof-meter-1000
    .venv/bin/python benchmarks/profile_pipeline.py -n 400 --out /tmp/prof-sql --count-sql
    .venv/bin/python benchmarks/profile_pipeline.py -n 1 --idle-seconds 30 --out /tmp/prof-idle
    .venv/bin/python benchmarks/profile_pipeline.py --in-process 200 --out /tmp/prof-inproc
    .venv/bin/python benchmarks/profile_pipeline.py --analyze /tmp/prof-pyspy-1000 \
        --cpu-from /tmp/prof-meter-1000      # again, offline

py-spy is not a dependency of the project: `.venv/bin/pip install py-spy` for `--pyspy`; `--perf`
needs /usr/bin/perf. Results go to OUT (default /tmp/profile-pipeline), not benchmarks/results.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg2
from common import (
    BIN,
    drop_files,
    exit_on_sigterm,
    fresh_database,
    make_corpus,
    pg_server,
    postmaster_pid,
    scratch_dir,
    start_simulator,
)
from daemon import PRODUCT, Knobs, RunningPipeline
from meter import ProcessTreeMeter

from extraction_pipeline.instance.postgres import libpq_dsn

SITECUSTOMIZE = '''
import collections, json, os, sys, threading, atexit, re
_OUT = os.environ.get("PROFILE_SQL_COUNT_DIR")
if _OUT:
    _counts, _lock = collections.Counter(), threading.Lock()
    _SKIP = ("sqlalchemy", "dagster_postgres", "/_core/storage/", "contextlib", "functools",
             "event_log.py", "/_utils/", "threading.py", "tenacity", "sitecustomize")
    _TABLE = re.compile(r"\\b(?:FROM|INTO|UPDATE)\\s+\\"?(\\w+)", re.I)

    _PLUMBING = ("/_core/instance/", "/_core/events/", "log_manager.py", "logging/")

    def _short(frame):
        name = frame.f_code.co_filename.split("site-packages/")[-1]
        name = name[max(0, name.find("extraction_pipeline/")):]
        return f"{name}:{frame.f_code.co_name}"

    def _caller():
        """The first frame above the storage layers, and the first above Dagster's plumbing
        (instance methods, event creation, log manager) from there."""
        frame, found = sys._getframe(1), []
        while frame is not None:
            name = frame.f_code.co_filename
            if not found and not any(part in name for part in _SKIP):
                found.append(_short(frame))
            if found and not any(part in name for part in _SKIP + _PLUMBING):
                if _short(frame) != found[0]:
                    found.append(_short(frame))
                break
            frame = frame.f_back
        return " <- ".join(found) or "?"

    def _dump():
        with _lock:
            data = {" | ".join(k): v for k, v in _counts.items()}
        path = os.path.join(_OUT, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "argv": sys.argv, "counts": data}, f)
        os.replace(path + ".tmp", path)

    def _before(conn, cursor, statement, parameters, context, executemany):
        words = statement.split(None, 1)
        verb = words[0].upper() if words else "?"
        match = _TABLE.search(statement)
        key = ("stmt", verb, match.group(1) if match else "-", _caller())
        with _lock:
            _counts[key] += 1

    def _connect(dbapi_connection, record):
        key = ("connect", "-", "-", _caller())
        with _lock:
            _counts[key] += 1

    def _loop():
        import time
        while True:
            time.sleep(1.0)
            _dump()

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool
    event.listen(Engine, "before_cursor_execute", _before)
    event.listen(Pool, "connect", _connect)
    atexit.register(_dump)
    threading.Thread(target=_loop, daemon=True).start()
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--documents", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--sensor-interval", type=int, default=PRODUCT.sensor_interval_seconds)
    parser.add_argument("--sensor-max-files", type=int, default=PRODUCT.sensor_max_files)
    parser.add_argument("--settle", type=float, default=PRODUCT.settle_seconds)
    parser.add_argument("--tables-interval", type=int, default=PRODUCT.tables_interval_seconds)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--pyspy", action="store_true", help="py-spy record every process")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--count-sql", action="store_true", help="count SQL per process")
    parser.add_argument("--perf", action="store_true", help="system-wide perf record")
    parser.add_argument("--perf-rate", type=int, default=199, help="perf samples/s per CPU")
    parser.add_argument(
        "--in-process", type=int, default=0, metavar="M",
        help="instead: in-process ranged runs of M documents (see in_process)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-seconds", type=float, default=0, help="instead: measure the idle pipeline"
    )
    parser.add_argument("--batch-sizes", default="0,100", help="DAGSTER_EVENT_BATCH_SIZE values")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/profile-pipeline"))
    parser.add_argument("--analyze", type=Path, default=None, help="only analyse OUT again")
    parser.add_argument(
        "--cpu-from", type=Path, default=None, help="OUT of an unprofiled run: its CPU figures"
    )
    return parser.parse_args(argv)


# --- processes of the daemon's tree ---------------------------------------------------------


def role_of(process: psutil.Process, daemon_pid: int) -> str:
    if process.pid == daemon_pid:
        return "daemon"
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    if "resource_tracker" in cmdline:
        return "other"
    if "api grpc" in cmdline or "code-server" in cmdline:
        return "code server"
    if "multiprocessing" in cmdline or "execute_run" in cmdline:
        return "run worker"
    return "other"


class Watcher:
    """Every process of the daemon's tree as it appears (role, command line); with `pyspy`, a
    py-spy record of each Python process (raw collapsed stacks, on-CPU samples only)."""

    def __init__(
        self, daemon_pid: int, code_server_pid: int, out: Path, rate: int, pyspy: bool
    ) -> None:
        self.daemon_pid, self.out, self.rate, self.pyspy = daemon_pid, out, rate, pyspy
        self.code_server_pid = code_server_pid
        self.spies: dict[int, subprocess.Popen[bytes]] = {}
        self.processes: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._attach()
        self._thread.start()

    def _attach(self) -> None:
        tree = []
        for pid in (self.daemon_pid, self.code_server_pid):
            root = psutil.Process(pid)
            tree += [root, *root.children(recursive=True)]
        for process in tree:
            if process.pid in self.processes:
                continue
            role = role_of(process, self.daemon_pid)
            with contextlib.suppress(psutil.Error):
                self.processes[process.pid] = {
                    "role": role,
                    "cmdline": " ".join(process.cmdline())[:200],
                    "parent": process.ppid(),
                }
            if role == "other" or not self.pyspy:
                continue
            target = self.out / f"pyspy-{role.replace(' ', '_')}-{process.pid}.txt"
            command = [str(BIN / "py-spy"), "record", "--pid", str(process.pid), "--rate",
                       str(self.rate), "--format", "raw", "--full-filenames", "--nonblocking",
                       "-o", str(target)]  # fmt: skip
            log = (self.out / f"pyspy-{process.pid}.log").open("wb")
            self.spies[process.pid] = subprocess.Popen(command, stdout=log, stderr=log)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(psutil.Error):
                self._attach()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for spy in self.spies.values():
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
        for spy in self.spies.values():
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()


# --- database counters ----------------------------------------------------------------------

DB_COLUMNS = ("xact_commit", "xact_rollback", "sessions", "tup_returned", "tup_fetched",
              "tup_inserted", "tup_updated", "tup_deleted", "blks_hit", "blks_read")  # fmt: skip


def db_counters(url: str) -> dict[str, Any]:
    connection = psycopg2.connect(libpq_dsn(url))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                f"SELECT {', '.join(DB_COLUMNS)} FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
            database = dict(zip(DB_COLUMNS, cursor.fetchone(), strict=True))
            cursor.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, "
                "coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            )
            tables = {r[0]: dict(zip(("ins", "upd", "del", "seq", "idx"), r[1:], strict=True))
                      for r in cursor.fetchall()}  # fmt: skip
            return {"database": database, "tables": tables}
    finally:
        connection.close()


def event_log_rows(url: str) -> dict[str, int]:
    connection = psycopg2.connect(libpq_dsn(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(dagster_event_type, '(log message)'), count(*) FROM event_logs "
                "GROUP BY 1 ORDER BY 2 DESC"
            )
            return dict(cursor.fetchall())
    finally:
        connection.close()


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    database = {k: after["database"][k] - before["database"][k] for k in DB_COLUMNS}
    tables = {}
    for name, row in after["tables"].items():
        base = before["tables"].get(name, {})
        changed = {k: v - base.get(k, 0) for k, v in row.items()}
        if any(changed.values()):
            tables[name] = changed
    return {"database": database, "tables": tables}


def runs_by_pid(pipeline: RunningPipeline) -> dict[int, dict[str, Any]]:
    import dagster as dg

    found = {}
    for record in pipeline.instance.get_run_records():
        run = record.dagster_run
        starts = pipeline.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        if not starts or starts[-1].dagster_event is None:
            continue
        planned = pipeline.instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        )
        found[starts[-1].dagster_event.pid] = {
            "run_id": run.run_id,
            "job": run.job_name,
            "status": run.status.value,
            "planned_events": len(planned),
        }
    return found


# --- one measured pipeline run ---------------------------------------------------------------


def measure(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if args.count_sql:
        site = out / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (out / "sql").mkdir()
    n = args.documents
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(False))
        paths, pages = make_corpus(workdir / "corpus", n)
        simulator = start_simulator(args.latency, workdir, stack)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        pg_url = stack.enter_context(fresh_database(server_url, "bench_profile"))
        if args.count_sql:  # only the daemon's tree gets it: started after the simulator
            os.environ["PYTHONPATH"] = str(out / "site")
            os.environ["PROFILE_SQL_COUNT_DIR"] = str(out / "sql")
        knobs = Knobs(args.concurrency, args.sensor_interval, args.sensor_max_files,
                      args.settle, args.tables_interval)  # fmt: skip
        pipeline = RunningPipeline(workdir / "pipeline", pg_url, simulator.base_url, knobs, stack)
        os.environ.pop("PYTHONPATH", None)
        pipeline.wait_ready()
        print(f"pipeline ready; {n} documents, {pages} pages", flush=True)
        postmaster = postmaster_pid(server_url)
        pg_meter = stack.enter_context(ProcessTreeMeter([postmaster])) if postmaster else None
        sim_meter = stack.enter_context(ProcessTreeMeter([simulator.process.pid]))
        simulator.reset(args.latency)
        time.sleep(1.5)  # let the idle pipeline's stats reach pg_stat_database
        before = db_counters(pg_url)
        watcher = Watcher(pipeline.daemon.pid, pipeline.code_server.pid, out, args.rate, args.pyspy)
        perf = None
        if args.perf:
            perf_log = (out / "perf.log").open("wb")
            perf = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-a",
                    "-F",
                    str(args.perf_rate),
                    "-g",
                    "-o",
                    str(out / "perf.data"),
                ],
                stdout=perf_log,
                stderr=perf_log,
            )
        if args.count_sql:  # the daemon's and code server's counts so far are not the window's
            time.sleep(1.2)
            shutil.copytree(out / "sql", out / "sql-baseline")
        watcher.start()
        for meter in (pipeline.meter, pg_meter, sim_meter):
            if meter:
                meter.mark_baseline()
        started, harness_cpu = time.monotonic(), time.process_time()
        if args.idle_seconds:  # nothing dropped: what the idle pipeline costs per second
            time.sleep(args.idle_seconds)
            extracted_s = tables_s = float(args.idle_seconds)
        else:
            drop_files(paths, pipeline.inbox)
            extracted_s, tables_s = pipeline.wait_done(n, started, args.timeout)
        wall = max(extracted_s, tables_s)
        harness_cpu = time.process_time() - harness_cpu  # this script's polling, not counted
        roles = pipeline.meter.cpu_by_role()
        per_pid = {}
        with pipeline.meter._lock:
            for entry in pipeline.meter.seen.values():
                used = entry.own - entry.own_base
                if used > 0.01:
                    per_pid[entry.pid] = {"role": entry.role, "cpu_s": round(used, 3)}
        postgres_s = pg_meter.cpu() if pg_meter else None
        simulator_s = sim_meter.cpu()
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
        watcher.stop()
        for pid, info in watcher.processes.items():
            per_pid.setdefault(pid, {"cpu_s": 0.0}).update(info)
        time.sleep(1.5)
        after = db_counters(pg_url)
        runs = runs_by_pid(pipeline)
        for pid, entry in per_pid.items():
            entry.update(runs.get(pid, {}))
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S%z"),
            "documents": n,
            "pages": pages,
            "settings": {k: str(v) for k, v in vars(args).items()},
            "postgres": origin,
            "wall_s": round(wall, 2),
            "docs_per_s": round(n / wall, 2),
            "cpu_s_by_role": roles,
            "postgres_cpu_s": postgres_s,
            "simulator_cpu_s": simulator_s,
            "harness_cpu_s": round(harness_cpu, 2),
            "per_pid": per_pid,
            "db": delta(before, after),
            "event_logs": event_log_rows(pg_url),
            "timeline": pipeline.timeline(time.time() - (time.monotonic() - started)),
        }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {out}")


# --- analysis -------------------------------------------------------------------------------

STARTUP = ("start-up: imports, definitions, instance", (r"_find_and_load", r"load_python_module",
           r"\.get_definition "))  # fmt: skip
# Per role, (bucket, patterns): a sample is in the first bucket with any frame matching any
# pattern (frames are "function (path:line)"). Order matters: the event write happens inside
# event creation, the op's own work inside Dagster's result processing, pydantic inside the
# model client, SQL inside almost everything.
RULES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "run worker": [
        STARTUP,
        # execute_plan.py's `while` loop outside the step (lines 59-65): get_next_step (the
        # claim), concurrency_event_iterator, sleep_til_ready, which does not sleep while a
        # claim is pending (Dagster's interval_to_next_pending_claim_check returns <= 0).
        (
            "waiting for the pool slot (claim loop, no sleep)",
            (r"inner_plan_execution_iterator \(\S*execute_plan\.py:(59|6\d)\)",),
        ),
        (
            "Dagster event write (handle_new_event, store_event)",
            (r"handle_new_event ", r"\bstore_event "),
        ),
        ("pool slot claim (instance concurrency)", (r"concurrency", r"[Cc]laim")),
        (
            "model client (openai, httpx, agent)",
            (r"/openai/", r"/httpx/", r"/httpcore/", r"/anyio/", r"/h11/", r"core/model/"),
        ),
        ("pydantic outside the client", (r"/pydantic",)),
        ("PDF reading", (r"pypdfium2", r"core/documents/pdf\.py")),
        ("table refresh in the run", (r"table_refresh\.py", r"core/tables/", r"/pyarrow/")),
        ("our other code (registry, records, store, op)", (r"/extraction_pipeline/",)),
        (
            "Dagster event creation and logging (DagsterEvent, log manager)",
            (
                r"log_dagster_event ",
                r"DagsterEvent\.",
                r"log_manager\.py",
                r"/dagster/_core/events/",
                r"_process_asset_results_to_events ",
                r"/logging/__init__\.py",
            ),
        ),
        ("other SQL (instance reads and writes)", (r"/sqlalchemy/", r"/psycopg2/")),
        ("Dagster run/step machinery", (r"/dagster", r"/grpc/")),
    ],
    "daemon": [STARTUP],  # then: by daemon class (see purpose_of)
    "code server": [
        STARTUP,
        ("inbox sensor evaluation (our code)", (r"/extraction_pipeline/",)),
    ],
}
SQL = (r"/sqlalchemy/", r"/psycopg2/")
CONNECT = (r"_ConnectionRecord\.__connect ", r"psycopg2/__init__\.py")
SERDES = (r"/_serdes/", r"dagster_shared/serdes/")


def load_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def matches(frames: list[str], patterns: tuple[str, ...]) -> bool:
    return any(re.search(p, frame) for frame in frames for p in patterns)


def purpose_of(role: str, frames: list[str]) -> str:
    for name, patterns in RULES[role]:
        if matches(frames, patterns):
            return name
    text = ";".join(frames)
    if role == "daemon":  # the deepest module of dagster/_daemon/ names the daemon
        found = [m for m in re.findall(r"dagster/_daemon/([\w/]+)\.py", text)
                 if m not in ("daemon", "controller", "utils")]  # fmt: skip
        return f"_daemon/{found[-1]}" if found else "daemon loop, heartbeats, other"
    if role == "code server":
        found = re.findall(r"DagsterApiServer\.(\w+) ", text)
        return f"gRPC {found[0]}" if found else "gRPC server threads, other"
    return "other"


def cpu_by_role(result: dict[str, Any]) -> dict[str, float]:
    roles: dict[str, float] = collections.defaultdict(float)
    for entry in result["per_pid"].values():
        role = entry.get("role", "other")
        if role == "run worker":
            role = f"run worker ({entry.get('job', '?')})"
        roles[role] += entry.get("cpu_s", 0.0)
    return dict(roles)


def analyze(out: Path, cpu_from: Path | None = None, top: int = 15) -> dict[str, Any]:
    """Buckets per role from the py-spy stacks in `out`, as shares of on-CPU samples and as
    ms/doc of the CPU measured in `cpu_from` (a run without profilers; default `out`)."""
    result = json.loads((out / "result.json").read_text())
    measured = json.loads(((cpu_from or out) / "result.json").read_text())
    n, rate = result["documents"], int(result["settings"]["rate"])
    cpu = cpu_by_role(measured)
    report: dict[str, Any] = {}
    tallies: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(
        collections.Counter
    )
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in sorted(out.glob("pyspy-*.txt")):
        entry = result["per_pid"].get(path.stem.rsplit("-", 1)[1], {})
        base = entry.get("role", "?")
        role = f"run worker ({entry.get('job', '?')})" if base == "run worker" else base
        for frames, count in load_stacks(path):
            kind = (
                ("connect" if matches(frames, CONNECT) else "sql")
                if matches(frames, SQL)
                else ("serdes" if matches(frames, SERDES) else "")
            )
            tallies[role][(purpose_of(base, frames), kind)] += count
            leaf = re.sub(r"/\S*site-packages/|/\S*/lib/python3\.11/", "", frames[-1])
            leaves[role][leaf] += count
    for role, tally in tallies.items():
        total = sum(tally.values())
        ms_per_doc = 1000 * cpu.get(role, 0.0) / n
        print(f"\n{role}: {total / rate:.1f} s on CPU sampled, {ms_per_doc:.1f} ms/doc measured")
        print(f"  {'bucket':<62} {'share':>6} {'ms/doc':>7} {'SQL':>5} {'conn':>5} {'serde':>5}")
        purposes: collections.Counter[str] = collections.Counter()
        for (purpose, _), count in tally.items():
            purposes[purpose] += count
        rows = {}
        for purpose, count in purposes.most_common():
            kinds = {k: tally[(purpose, k)] / count for k in ("sql", "connect", "serdes")}
            share = count / total
            rows[purpose] = {"share": round(share, 4), "ms_per_doc": round(share * ms_per_doc, 2),
                             **{k: round(v, 3) for k, v in kinds.items()}}  # fmt: skip
            print(f"  {purpose[:62]:<62} {100 * share:5.1f}% {share * ms_per_doc:7.2f} "
                  f"{100 * (kinds['sql'] + kinds['connect']):4.0f}% {100 * kinds['connect']:4.0f}% "
                  f"{100 * kinds['serdes']:4.0f}%")  # fmt: skip
        in_sql = sum(c for (_, k), c in tally.items() if k in ("sql", "connect")) / total
        print(f"  all buckets: {100 * in_sql:.0f}% of samples inside SQLAlchemy/psycopg2")
        print("  top leaf frames:")
        for frame, count in leaves[role].most_common(top):
            print(f"    {100 * count / total:5.1f}%  {frame[:110]}")
        report[role] = {"sampled_cpu_s": total / rate, "ms_per_doc": ms_per_doc, "buckets": rows}
    return report


def sql_counts(out: Path) -> dict[str, Any]:
    """Statements and new connections per document, per role, by verb/table and by caller."""
    result = json.loads((out / "result.json").read_text())
    n = result["documents"]
    by_role: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in sorted((out / "sql").glob("*.json")):
        data = json.loads(path.read_text())
        counts = collections.Counter(data["counts"])
        baseline = out / "sql-baseline" / path.name
        if baseline.exists():
            counts.subtract(json.loads(baseline.read_text())["counts"])
        entry = result["per_pid"].get(path.stem, {})
        role = entry.get("role", "?")
        if role == "run worker":
            role = f"run worker ({entry.get('job', '?')})"
        by_role[role].update(counts)
    report = {}
    for role, counts in by_role.items():
        statements = sum(v for k, v in counts.items() if k.startswith("stmt"))
        connects = sum(v for k, v in counts.items() if k.startswith("connect"))
        if not statements and not connects:
            continue
        print(
            f"\n{role}: {statements / n:.2f} statements/doc, {connects / n:.2f} new connections/doc"
        )
        verbs: collections.Counter[str] = collections.Counter()
        for key, value in counts.items():
            kind, verb, table, _ = key.split(" | ", 3)
            verbs[f"{verb} {table}" if kind == "stmt" else "(connect)"] += value
        print("  " + ", ".join(f"{k} {v / n:.2f}" for k, v in verbs.most_common(12)))
        for key, value in counts.most_common(12):
            print(f"    {value / n:6.2f}  {key[:150]}")
        report[role] = {"statements_per_doc": statements / n, "connects_per_doc": connects / n}
    return report


# Postgres backends by what their samples' call chains contain (first match wins).
PG_RULES = [
    ("backend start (fork, InitPostgres, auth)", ("InitPostgres", "BackendStartup",
     "ret_from_fork", "BackendInitialize", "PerformAuthentication", "InitProcess", "setsid",
     "BeginReportingGUCOptions", "do_wp_page", "copy_process", "dup_mmap")),
    ("backend exit", ("proc_exit", "do_exit", "exit_mmap", "do_group_exit", "_dl_call_fini",
     "OPENSSL_LH_flush", "OPENSSL_cleanup")),
    ("commit, WAL flush", ("CommitTransaction", "XLogFlush", "RecordTransactionCommit",
     "issue_xlog_fsync")),
    ("planning", ("pg_plan_query", "standard_planner")),
    ("parse, analyse, rewrite", ("pg_parse_query", "parse_analyze", "pg_analyze_and_rewrite",
     "raw_parser", "base_yyparse", "pg_rewrite_query")),
    ("execution", ("PortalRun", "ExecutorRun", "standard_ExecutorRun", "ExecutorStart",
     "ProcessUtility")),
    ("client I/O (socket read/write)", ("pq_getbyte", "pq_flush", "secure_read",
     "secure_write", "pq_recvbuf", "ReadCommand", "tcp_", "sock_", "sendto", "recvfrom")),
    ("background (checkpointer, walwriter, autovacuum, stats)", ("CheckpointerMain",
     "WalWriterMain", "AutoVacWorkerMain", "AutoVacLauncherMain", "BackgroundWriterMain",
     "pgstat_", "StartBackgroundWorker")),
    ("other page faults", ("exc_page_fault",)),
]  # fmt: skip


def perf_summary(out: Path) -> dict[str, Any]:
    """CPU by command over the window (idle = swapper) and the Postgres samples by phase."""
    text = subprocess.run(
        ["perf", "script", "-i", str(out / "perf.data"), "-F", "comm,ip,sym"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    comms: collections.Counter[str] = collections.Counter()
    phases: collections.Counter[str] = collections.Counter()
    for block in text.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines:
            continue
        comm = lines[0].split()[0] if lines[0].split() else "?"
        comms[comm] += 1
        if comm == "postgres":
            chain = " ".join(lines[1:])
            if "PostmasterMain" in chain and "PostgresMain" not in chain:
                phase = PG_RULES[0][0]  # the postmaster accepting and forking a backend
            else:
                phase = next((name for name, marks in PG_RULES if any(m in chain for m in marks)),
                             "other")  # fmt: skip
            phases[phase] += 1
    total, pg = sum(comms.values()), sum(phases.values())
    print(f"\nperf: {total} samples (all CPUs), by command:")
    for comm, count in comms.most_common(8):
        print(f"  {comm:<20} {100 * count / total:5.1f}%")
    print(f"Postgres ({pg} samples) by phase:")
    for phase, count in phases.most_common():
        print(f"  {phase:<58} {100 * count / max(pg, 1):5.1f}%")
    return {"comms": dict(comms), "postgres_phases": dict(phases)}


# --- in process: one ranged run, with and without DAGSTER_EVENT_BATCH_SIZE ------------------


def in_process(args: argparse.Namespace) -> None:
    """Ranged intake_job runs of M documents each through `execute_in_process` on the shipped
    instance config (pooled event-log storage, Postgres): CPU, wall, SQL statements and new
    connections (this process), Postgres CPU, commits; one run per DAGSTER_EVENT_BATCH_SIZE in
    `--batch-sizes`, the whole list `--repeat` times (after a 10-document warm-up run)."""
    import dagster as dg
    from common import API_KEY
    from overhead import QUIET, register_all
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
    from extraction_pipeline.core.settings import Settings
    from extraction_pipeline.definitions import build_definitions
    from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG

    counts: collections.Counter[str] = collections.Counter()
    event.listen(Engine, "before_cursor_execute", lambda *a: counts.update(["statements"]))
    event.listen(Pool, "connect", lambda *a: counts.update(["connects"]))
    event.listen(Pool, "checkout", lambda *a: counts.update(["checkouts"]))
    sizes = [int(v) for v in args.batch_sizes.split(",")]
    m, warm = args.in_process, 10
    figures: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(False))
        paths, _ = make_corpus(workdir / "corpus", warm + m * len(sizes) * args.repeat)
        simulator = start_simulator(args.latency, workdir, stack)
        server_url, _ = stack.enter_context(pg_server(args.pg_url, workdir))
        pg_url = stack.enter_context(fresh_database(server_url, "bench_inproc"))
        home = workdir / "home"
        home.mkdir()
        shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
        os.environ.update({"EXTRACTION_PG_URL": pg_url, "OPENAI_API_KEY": API_KEY})
        settings = Settings.from_env({
            "EXTRACTION_DATA_DIR": str(workdir / "data"),
            "OPENAI_BASE_URL": simulator.base_url,
            "EXTRACTION_MAX_CONCURRENCY": str(args.concurrency),
        })  # fmt: skip
        keys = register_all(settings.data_dir, paths)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        instance.add_dynamic_partitions("documents", keys)
        job = build_definitions(settings).resolve_job_def("intake_job")
        postmaster = postmaster_pid(server_url)

        def run(chunk: list[str], size: int) -> dict[str, Any]:
            os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(size)
            counts.clear()
            before = db_counters(pg_url)
            with ProcessTreeMeter([postmaster]) as pg_meter:
                pg_meter.mark_baseline()
                wall, cpu = time.perf_counter(), time.process_time()
                result = job.execute_in_process(
                    instance=instance,
                    tags={RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]},
                    run_config=QUIET,
                    raise_on_error=False,
                )
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                postgres = pg_meter.cpu()
            assert result.success, "in-process run failed"
            time.sleep(1.5)
            database = delta(before, db_counters(pg_url))["database"]
            k = len(chunk)
            return {
                "batch_size": size, "documents": k,
                "cpu_ms_per_doc": round(1000 * cpu / k, 2),
                "wall_ms_per_doc": round(1000 * wall / k, 2),
                "postgres_cpu_ms_per_doc": round(1000 * postgres / k, 2),
                "statements_per_doc": round(counts["statements"] / k, 2),
                "connects_per_doc": round(counts["connects"] / k, 2),
                "pool_checkouts_per_doc": round(counts["checkouts"] / k, 2),
                "commits_per_doc": round(database["xact_commit"] / k, 2),
            }  # fmt: skip

        run(keys[:warm], 0)
        offset = warm
        for _ in range(args.repeat):
            for size in sizes:
                figures.append(run(keys[offset : offset + m], size))
                offset += m
                print(figures[-1], flush=True)
    os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "in_process.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {args.out / 'in_process.json'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.analyze:
        if list(args.analyze.glob("pyspy-*.txt")):
            analyze(args.analyze, args.cpu_from)
        if (args.analyze / "sql").exists():
            sql_counts(args.analyze)
        if (args.analyze / "perf.data").exists():
            perf_summary(args.analyze)
        return 0
    exit_on_sigterm()
    if args.in_process:
        in_process(args)
        return 0
    measure(args)
    if args.pyspy:
        analyze(args.out, args.cpu_from)
    if args.count_sql:
        sql_counts(args.out)
    if args.perf:
        perf_summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
