"""Worker memory over a million events: the real `lifecycle worker`, not only rule evaluation.

bench/rules_eval.py measures the rules over 1,000,000 evaluations in-process; this runs the whole
worker path (inbox reads through the consumer group, contact locks, rules and guardrails, the
commit transaction, the sandbox sync jobs, RQ, the scheduler thread) for as long:

1. A dedicated redis-server (bench/processes.py) gets 1,000,000 events over 100,000 contacts
   (the rules-evaluation workload, shipped rules.yaml; 20,000 over 2,000 with --quick) through
   Store.accept, 500 per Lua call, generated chunk by chunk (never all held at once).
2. One `lifecycle worker` (CRM_TARGETS=sandbox) starts and drains them. Every second the
   benchmark reads the resident set size of the worker and all its descendants from /proc, and
   the processed-events counter the commits keep in Redis, until every event is processed and
   nothing is pending.

Reported: events/s (first event processed → the last), RSS after the warm-up (1 % processed), at
each tenth, the peak, and the growth from 10 % processed to the end (target < 100 MiB: the
steady state holds no per-event or per-contact memory; a leak would grow with the events).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.common import Report, Row
from bench.load import iter_events
from bench.processes import (
    ServiceFailed,
    cpu_seconds,
    descendants,
    engine_env,
    engine_worker,
    redis_pid,
    redis_server,
    rss_mib,
    wait_for_quiet,
)
from engine.store import INBOX, METRICS, Store, wake_key

TITLE = "Worker memory over a million events"
TARGET_GROWTH_MIB = 100.0
PROCESSED = "processed|events"
"""The counter each commit bumps in lc:metrics (engine.pipeline._measure)."""


@dataclass(frozen=True)
class Size:
    events: int
    contacts: int
    chunk: int  # events per Store.accept call
    sample_every: float  # seconds
    stall: float  # no progress for this long: the worker is stuck, stop


FULL = Size(1_000_000, 100_000, 500, 1.0, 120.0)
QUICK = Size(20_000, 2_000, 500, 0.25, 60.0)


@dataclass
class Sample:
    at: float  # monotonic seconds since the worker started
    processed: int
    rss: float  # MiB, the worker and its descendants
    processes: int


def fill(store: Store, size: Size) -> float:
    """The events straight into the store; returns events/s (generation included)."""
    started, now = time.perf_counter(), datetime.now(UTC)
    events = iter_events(size.events, size.contacts, seed=11, prefix="mem")
    while chunk := list(itertools.islice(events, size.chunk)):
        store.accept(chunk, now)
    store.redis.delete(wake_key("events"))  # the worker's start-up sweep enqueues the drain
    store.ensure_group()
    return size.events / (time.perf_counter() - started)


def _processed(client: redis.Redis) -> int:
    return int(client.hget(METRICS, PROCESSED) or 0)


def drain(size: Size, url: str, client: redis.Redis, tmp: Path, logs: Path) -> dict:
    store = Store(client)
    server = redis_pid(client)
    redis_before = cpu_seconds([server])
    samples: list[Sample] = []
    with engine_worker("worker-memory", logs, engine_env(url, tmp / "var")) as worker:
        started = time.monotonic()
        last_progress, last_count = started, -1
        while True:
            worker.check()
            processed = _processed(client)
            pids = descendants(worker.proc.pid)
            samples.append(Sample(time.monotonic() - started, processed, rss_mib(pids), len(pids)))
            if processed >= size.events and not store.backlog(most=1) and not store.pending_count():
                break
            if processed != last_count:
                last_progress, last_count = time.monotonic(), processed
            elif time.monotonic() - last_progress > size.stall:
                raise ServiceFailed(
                    f"the worker processed nothing for {size.stall:.0f} s at {processed:,} of "
                    f"{size.events:,} events:\n{worker.tail()}"
                )
            time.sleep(size.sample_every)
        worker_cpu = cpu_seconds(descendants(worker.proc.pid))
    redis_cpu = cpu_seconds([server]) - redis_before
    info = client.info("memory")
    return {
        "samples": samples,
        "worker_cpu": worker_cpu,
        "redis_cpu": redis_cpu,
        "redis_used_mib": info["used_memory"] / 2**20,
        "inbox": client.xlen(INBOX),
        "contacts": client.zcard("lc:contacts"),
    }


def run(quick: bool = False) -> Report:
    size = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="lc-memory-") as name:
        tmp = Path(name)
        logs = tmp / "logs"
        logs.mkdir()
        with redis_server(tmp / "redis-memory", logs) as (url, client):
            print(
                f"worker_memory 1/2: {size.events:,} events over {size.contacts:,} contacts "
                "into Redis (Store.accept)",
                flush=True,
            )
            fill_rate = fill(Store(client), size)
            wait_for_quiet(0.0 if quick else 10.0)
            print("worker_memory 2/2: one `lifecycle worker` drains them", flush=True)
            result = drain(size, url, client, tmp, logs)
    return _report(size, fill_rate, result)


def _first(samples: list[Sample], processed: int) -> Sample:
    return next(s for s in samples if s.processed >= processed)


def _report(size: Size, fill_rate: float, result: dict) -> Report:
    samples: list[Sample] = result["samples"]
    n = size.events
    first = next(s for s in samples if s.processed > 0)
    end = samples[-1]
    warm = _first(samples, max(1, n // 100))
    tenth = _first(samples, n // 10)
    tenths = [_first(samples, n * k // 10) for k in range(1, 11)]
    steady = [s for s in samples if s.processed >= tenth.processed]
    peak = max(s.rss for s in samples)
    growth = end.rss - tenth.rss
    rate = (n - first.processed) / max(1e-9, end.at - first.at)
    report = Report(
        TITLE,
        f"One `lifecycle worker` (CRM_TARGETS=sandbox, the shipped rules.yaml) drains "
        f"{n:,} events over {size.contacts:,} contacts (the rules-evaluation workload) put into "
        "a dedicated redis-server through Store.accept; the benchmark reads the worker's resident "
        "set size (with its descendants) from /proc and the processed-events counter from Redis "
        f"every {size.sample_every:g} s. Source: `bench/worker_memory.py`.",
    )
    report.add("events_per_second", Row("events processed per second", rate, "events/s"))
    report.add(
        "rss_warm_mib",
        Row("worker RSS after the warm-up (1 % processed)", warm.rss, "MiB", digits=1),
    )
    report.add("rss_tenth_mib", Row("worker RSS at 10 % processed", tenth.rss, "MiB", digits=1))
    report.add("rss_end_mib", Row("worker RSS at the end", end.rss, "MiB", digits=1))
    report.add("rss_peak_mib", Row("worker RSS peak", peak, "MiB", digits=1))
    report.add(
        "rss_growth_mib",
        Row(
            "RSS growth from 10 % processed to the end",
            growth,
            "MiB",
            f"< {TARGET_GROWTH_MIB:g} MiB",
            growth < TARGET_GROWTH_MIB,
            1,
        ),
    )
    report.add(
        "rss_steady_peak_growth_mib",
        Row(
            "highest RSS after 10 % processed, above the 10 % reading",
            max(s.rss for s in steady) - tenth.rss,
            "MiB",
            digits=1,
        ),
    )
    report.numbers["rss_tenths_mib"] = [round(s.rss, 1) for s in tenths]
    report.numbers["processed"] = end.processed
    report.notes.append(
        "RSS at each tenth processed (MiB): "
        + ", ".join(f"{s.rss:.0f}" for s in tenths)
        + f". {len(samples)} readings; the worker ran as {max(s.processes for s in samples)} "
        "process(es) (RQ's SimpleWorker runs every job in the worker process itself, no fork; the "
        "scheduler is a thread)."
    )
    report.notes.append(
        f"{end.processed:,} of {n:,} events processed in {end.at - first.at:.0f} s after the "
        f"first (the worker's start-up took {first.at:.1f} s); worker CPU "
        f"{1e6 * result['worker_cpu'] / n:.0f} µs/event, Redis CPU "
        f"{1e6 * result['redis_cpu'] / n:.0f} µs/event. Filling Redis (generating the events and "
        f"Store.accept, {size.chunk} per call) ran at {fill_rate:,.0f} events/s. Redis ends "
        f"with {result['redis_used_mib']:,.0f} MiB used, {result['inbox']:,} inbox entries and "
        f"{result['contacts']:,} contacts."
    )
    return report
