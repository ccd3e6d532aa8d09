"""Accept → commit → CRM: how long an event takes to reach HubSpot and Salesforce at fixed rates.

Real processes on loopback, as in bench/ingest.py (bench/processes.py starts and stops them): a
dedicated redis-server, `lifecycle serve --workers 2` and two `lifecycle worker`s as the Procfile
runs them (`--queues events`, `--queues sync`), configured only
through the product's environment variables (CRM_TARGETS=hubspot,salesforce,
HUBSPOT_ACCESS_TOKEN, HUBSPOT_API_BASE, HUBSPOT_RATE_LIMIT=190/10s, SALESFORCE_LOGIN_URL,
SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET) and the shipped rules.yaml. The CRMs are the
faithful fakes (connectors/hubspot/fake_server.py, connectors/salesforce/fake_server.py) on
loopback, in threads of this process: HubSpot enforcing its rolling 190 requests per 10 s with
its 429, Salesforce the same budget the client is configured with (crm.salesforce.rate_limit of
rules.yaml, 100 per 10 s by default) with its 403 REQUEST_LIMIT_EXCEEDED. Their `on_applied` hook
stamps (wall clock) every write that lands on a contact, with what the contact then holds.

Per rate (100, 500, 1,000 events/s; a fresh set of processes and fakes for each, so no rate
inherits another's backlog or request budget): a short warm-up (the worker's start, the CRM
clients' first calls: HubSpot's property options, Salesforce's token and lead statuses) waited
for until both CRMs have it; then a paced sender (bench/load.py: 2 processes of 4 threads, one
event per POST /api/events) offers events at the rate for ~10 s (1 s with --quick). Every event
is a new contact (a download → lead, a demo request → marketing qualified lead, a booked meeting
→ sales qualified lead with status new), so every event changes what the CRMs must hold and
each one creates a record there. After the sender: wait until every event is committed and
neither CRM has a contact left to push (or a deadline passes).

Measured per event, from accept = the `at` the store wrote with the event (the web process's
clock, before the 202): commit = the `done:<id>` key of the commit transaction written (Redis
keyspace notification); HubSpot / Salesforce = the first write after which the fake held the
contact's final engine state (stage, and status when the engine has one) and kept it. Then
every contact's stage and status in each fake is compared with the engine's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.common import REPO, Report, Row
from bench.load import CommitWatcher, paced_send, percentile, stamps, wait_committed
from bench.processes import (
    Service,
    ServiceFailed,
    children_cpu,
    cpu_seconds,
    descendants,
    engine_env,
    engine_web,
    engine_worker,
    redis_pid,
    redis_server,
    wait_for_quiet,
)
from connectors.hubspot.client import BATCH as HUBSPOT_BATCH
from connectors.hubspot.client import RATE_GUARD_SECONDS
from connectors.hubspot.fake_server import FakeHubSpot
from connectors.hubspot.mapping import Mapping as HubSpotMapping
from connectors.salesforce.client import COLLECTION_SIZE as SALESFORCE_BATCH
from connectors.salesforce.fake_server import FakeSalesforce
from connectors.salesforce.mapping import SalesforceMapping, parse_mapping
from engine.model import BehaviorEvent
from engine.rules import load
from engine.store import Store

TITLE = "Accept → commit → CRM latency"

RATES = (100, 500, 1_000)
TARGET_COMMIT_P99 = 1.0
"""seconds, accept → commit, at every rate"""
TARGET_CRM_P99 = 5.0
"""seconds, accept → each CRM; at a rate the CRM's limit cannot carry, what `Limit.bound` gives"""
HUBSPOT_LIMIT = (190, 10.0)
"""A Professional/Enterprise private app's rolling budget (the fake enforces it, the client is
told it through HUBSPOT_RATE_LIMIT)."""
REQUESTS_PER_BATCH = 2
"""For contacts the CRM does not have yet: HubSpot batch/read + batch/upsert; Salesforce one SOQL
query + one sObject Collections create."""
KINDS = (
    ("content_downloaded", {"asset": "buyers-guide.pdf"}),
    ("form_submitted", {"form": "demo-request", "fields": {"company_size": "51-200"}}),
    ("meeting_booked", {"meeting_type": "Demo", "organizer": "rep@example.com"}),
)


@dataclass(frozen=True)
class Size:
    seconds: float  # offered per rate
    warmup: int  # events sent and waited for (committed and in both CRMs) before measuring
    deadline: float  # at most this long after the sender for every push to land
    quiet_wait: float
    fresh_per_rate: bool  # new fakes and processes for each rate (else one set for all)


FULL = Size(10.0, 20, 180.0, 15.0, True)
QUICK = Size(1.0, 6, 60.0, 0.0, False)


# --- When each CRM had what -------------------------------------------------------------------


class Arrivals:
    """A fake CRM's `on_applied` hook: per email, (wall-clock time, stage value, status value)
    of every API write that landed on the contact."""

    def __init__(self, stage_field: str, status_field: str):
        self.stage_field, self.status_field = stage_field, status_field
        self._lock = threading.Lock()
        self._seen: dict[str, list[tuple[float, Any, Any]]] = defaultdict(list)

    def __call__(self, email: str, fields: dict[str, Any]) -> None:
        at = time.time()
        with self._lock:
            self._seen[email.strip().lower()].append(
                (at, fields.get(self.stage_field), fields.get(self.status_field))
            )

    def history(self, email: str) -> list[tuple[float, Any, Any]]:
        with self._lock:
            return list(self._seen.get(email, ()))


def arrival(history: Sequence[tuple[float, Any, Any]], stage: Any, status: Any) -> float | None:
    """When the CRM first held (stage, status) for good: the first write of the last run of
    writes that all left it so. `status` None: any status. None when the last write did not."""
    first = None
    for at, held_stage, held_status in reversed(history):
        if held_stage != stage or (status is not None and held_status != status):
            break
        first = at
    return first


@dataclass(frozen=True)
class Expected:
    """What each CRM must hold for a contact in the engine's state (mapped like the clients)."""

    hubspot: HubSpotMapping
    salesforce: SalesforceMapping

    @classmethod
    def shipped(cls) -> Expected:
        rules = load(REPO / "rules.yaml")
        crm = rules.ruleset.crm
        return cls(
            HubSpotMapping.from_config(crm.get("hubspot"), rules.vocab),
            parse_mapping(crm.get("salesforce"), rules.vocab),
        )

    def in_hubspot(self, stage: str | None, status: str | None) -> tuple[Any, Any]:
        # HubSpot gets a status only with one; a contact never at SQL has none there either
        return (
            self.hubspot.stage_values.get(stage or "", stage),
            self.hubspot.status_values.get(status) if status else None,
        )

    def in_salesforce(self, stage: str | None, status: str | None) -> tuple[Any, Any]:
        # a new Lead gets the org's default status: only the engine's status, when it has one,
        # must be there
        m = self.salesforce
        return m.stage_value(stage) if stage else None, m.status_value(status) if status else None


# --- What the CRM limits allow ----------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    name: str
    batch: int  # contacts per push
    requests: int  # requests per push of new contacts
    limit: int  # requests ...
    window: float  # ... per rolling window (seconds), as the client spends them

    @property
    def capacity(self) -> float:
        """New contacts per second the budget carries in the steady state, batches full."""
        return self.batch * self.limit / (self.requests * self.window)

    def paced_p99(self, rate: float, seconds: float) -> float:
        """p99 latency (s) of a scheduler that spends the budget evenly: a push of whatever is
        waiting (oldest first, at most a batch) every requests * window / limit seconds. A
        feasible schedule under the limit, so the best one does at least as well; the first
        window's burst is ignored (it helps only the first seconds)."""
        n = max(1, int(rate * seconds))
        step = self.requests * self.window / self.limit
        waiting: list[float] = []
        latencies, nxt, t = [], 0, 0.0
        while len(latencies) < n:
            while nxt < n and nxt / rate <= t:
                waiting.append(nxt / rate)
                nxt += 1
            for arrived in waiting[: self.batch]:
                latencies.append(t - arrived)
            del waiting[: self.batch]
            t += step
        return percentile(latencies, 99)

    def bound(self, rate: float, seconds: float) -> float:
        """The target for this rate: TARGET_CRM_P99, or above it when even the paced schedule
        cannot meet it (rounded up to the second)."""
        best = self.paced_p99(rate, seconds)
        return TARGET_CRM_P99 if best < TARGET_CRM_P99 else float(math.ceil(best + 1))


def limits(expected: Expected) -> tuple[Limit, Limit]:
    hub_limit, hub_window = HUBSPOT_LIMIT
    sf_limit, sf_window = expected.salesforce.rate
    return (
        Limit(
            "HubSpot", HUBSPOT_BATCH, REQUESTS_PER_BATCH, hub_limit, hub_window + RATE_GUARD_SECONDS
        ),
        Limit("Salesforce", SALESFORCE_BATCH, REQUESTS_PER_BATCH, sf_limit, sf_window),
    )


# --- One rate ---------------------------------------------------------------------------------


def make_events(count: int, prefix: str) -> list[BehaviorEvent]:
    """One new contact per event, the three kinds in turn."""
    now = datetime.now(UTC)
    events = []
    for i in range(count):
        kind, props = KINDS[i % len(KINDS)]
        email = f"{prefix}-{i:06d}@company{i % 97}.example"
        events.append(BehaviorEvent(f"{prefix}-{i}", kind, email, now, "bench", props))
    return events


@dataclass
class RateRun:
    rate: int
    count: int
    offered: float
    commit: list[float]  # accept → commit, s
    hubspot: list[float]  # accept → in HubSpot, s (contacts that arrived)
    salesforce: list[float]
    after_202: dict[str, list[float]]  # the same, from the sender's 202
    not_committed: int
    missing: dict[str, int]  # CRM -> contacts whose final state never arrived
    mismatched: dict[str, int]  # CRM -> contacts differing from the engine at the end
    dead_letters: dict[str, int]
    requests: dict[str, int]  # API requests during the measured run
    refused: dict[str, int]  # of which answered 429 / 403 REQUEST_LIMIT_EXCEEDED
    per_push: dict[str, float]  # mean contacts per create request
    busiest_window: dict[str, int]  # most requests in any rolling window
    longest_pause: dict[
        str, float
    ]  # s: the longest gap between two requests (commits for "commit")
    drained_after: float  # s from the sender's last answer until everything had landed
    timed_out: bool
    cpu: dict[str, float]  # CPU seconds per part during the measured run (until all landed)
    wall: float  # seconds of the measured run (sender start until all landed)
    failures: list[str] = field(default_factory=list)


def _fake_salesforce(expected: Expected) -> FakeSalesforce:
    fake = FakeSalesforce(stage_field=expected.salesforce.stage_field).start()
    fake.throttle(*expected.salesforce.rate)
    return fake


@dataclass
class Stack:
    """The fakes and the processes one or more rates run against, warmed up."""

    hubspot: FakeHubSpot
    salesforce: FakeSalesforce
    hub_arrivals: Arrivals
    sf_arrivals: Arrivals
    client: redis.Redis
    store: Store
    web: Service
    port: int
    worker: Service
    sync_worker: Service
    watcher: CommitWatcher
    warm_failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def stack(name: str, size: Size, expected: Expected, tmp: Path, logs: Path) -> Iterator[Stack]:
    """Fake HubSpot and Salesforce, a redis-server, `lifecycle serve`, the two workers with the
    CRMs configured through the environment; a warm-up waited for until both CRMs have it."""
    hub_arrivals = Arrivals(expected.hubspot.stage_property, expected.hubspot.status_property)
    sf_arrivals = Arrivals(expected.salesforce.stage_field, expected.salesforce.status_field)
    salesforce = _fake_salesforce(expected)
    try:
        with (
            FakeHubSpot(rate=HUBSPOT_LIMIT) as hubspot,
            redis_server(tmp / f"redis-{name}", logs) as (url, client),
        ):
            hubspot.on_applied, salesforce.on_applied = hub_arrivals, sf_arrivals
            env = engine_env(
                url,
                tmp / "var",
                CRM_TARGETS="hubspot,salesforce",
                HUBSPOT_ACCESS_TOKEN=hubspot.token,
                HUBSPOT_API_BASE=hubspot.base_url,
                HUBSPOT_RATE_LIMIT=f"{HUBSPOT_LIMIT[0]}/{HUBSPOT_LIMIT[1]:g}s",
                SALESFORCE_LOGIN_URL=salesforce.base_url,
                SALESFORCE_CLIENT_ID=salesforce.client_id,
                SALESFORCE_CLIENT_SECRET=salesforce.client_secret,
            )
            with (
                engine_web(url, tmp, logs, env) as (web, port),
                engine_worker(f"worker-{name}", logs, env, "events") as worker,
                engine_worker(f"sync-{name}", logs, env, "sync") as sync_worker,
            ):
                watcher = CommitWatcher(client)
                watcher.start()
                try:
                    ready = Stack(
                        hubspot, salesforce, hub_arrivals, sf_arrivals, client, Store(client),
                        web, port, worker, sync_worker, watcher,
                    )  # fmt: skip
                    warm = make_events(size.warmup, f"warm-{name}")
                    ready.warm_failures = paced_send(port, warm, 100).failures  # web is up
                    wait_committed(watcher, [e.id for e in warm], worker, 60)
                    landed = _wait_landed(
                        ready,
                        60,
                        lambda: (
                            _all_arrived(warm, hub_arrivals) and _all_arrived(warm, sf_arrivals)
                        ),
                    )
                    if not landed:
                        raise ServiceFailed(
                            f"the warm-up never reached both CRMs:\n{worker.tail()}"
                        )
                    yield ready
                finally:
                    watcher.close()
    finally:
        salesforce.stop()


def measure(s: Stack, rate: int, size: Size, expected: Expected) -> RateRun:
    """Offer `rate` events/s for size.seconds, wait until everything landed, and judge."""
    events = make_events(int(rate * size.seconds), f"lat{rate}")
    emails = {e.email for e in events}
    wait_for_quiet(size.quiet_wait)
    hub_from, sf_from = len(s.hubspot.requests), len(s.salesforce.api_requests())
    parts = _parts(s.web.proc.pid, [s.worker.proc.pid, s.sync_worker.proc.pid], redis_pid(s.client))
    cpu_before, started = _cpu(parts), time.time()
    sent = paced_send(s.port, events, rate)
    done = _wait_landed(s, size.deadline, lambda: all(e.id in s.watcher.seen for e in events))
    drained = time.time() - sent.last
    cpu_after, wall = _cpu(parts), time.time() - started
    accepted_at, _ = stamps(s.client, events)
    engine = {e.email: c.state for e, c in zip(events, _load(s.store, events), strict=True)}
    dead = {
        crm: sum(1 for d in s.store.dead_letters(crm) if d["email"] in emails)
        for crm in ("hubspot", "salesforce")
    }
    hub_requests = s.hubspot.calls()[hub_from:]
    held_hubspot = {e.email: s.hubspot.contact(e.email) or {} for e in events}
    sf_requests = s.salesforce.api_requests()[sf_from:]
    held_salesforce = {
        str(lead.get("Email") or "").lower(): dict(lead)
        for lead in list(s.salesforce.leads.values())
    }
    run = RateRun(
        rate=rate,
        count=len(events),
        offered=len(events) / max(1e-9, sent.last - sent.first),
        commit=[],
        hubspot=[],
        salesforce=[],
        after_202={"commit": [], "hubspot": [], "salesforce": []},
        not_committed=sum(1 for e in events if e.id not in s.watcher.seen),
        missing={"hubspot": 0, "salesforce": 0},
        mismatched={"hubspot": 0, "salesforce": 0},
        dead_letters=dead,
        requests={"hubspot": len(hub_requests), "salesforce": len(sf_requests)},
        refused={
            "hubspot": sum(1 for r in hub_requests if r.get("status") == 429),
            "salesforce": sum(1 for r in sf_requests if r.status in (403, 429)),
        },
        per_push={
            "hubspot": _mean(
                len(r["body"]["inputs"])
                for r in hub_requests
                if r["path"].endswith("/batch/upsert") and r.get("status") in (200, 201, 207)
            ),
            "salesforce": _mean(
                len(r.body.get("records") or [])
                for r in sf_requests
                if r.method == "POST" and r.path.endswith("/composite/sobjects") and r.status == 200
            ),
        },
        busiest_window={
            "hubspot": _busiest([r["at"] for r in hub_requests], HUBSPOT_LIMIT[1]),
            "salesforce": _busiest([r.at for r in sf_requests], expected.salesforce.rate[1]),
        },
        longest_pause={
            "hubspot": _longest_gap([r["at"] for r in hub_requests]),
            "salesforce": _longest_gap([r.at for r in sf_requests]),
            "commit": _longest_gap(
                [s.watcher.seen[e.id] for e in events if e.id in s.watcher.seen]
            ),
        },
        drained_after=drained,
        timed_out=not done,
        cpu={k: cpu_after[k] - cpu_before[k] for k in cpu_before},
        wall=wall,
        failures=s.warm_failures + sent.failures,
    )
    for event in events:
        state, accepted = engine[event.email], accepted_at.get(event.id)
        if accepted is None:
            run.failures.append(f"{event.id}: not in the inbox")
            continue
        answered = sent.answered.get(event.id)
        if event.id in s.watcher.seen:
            run.commit.append(s.watcher.seen[event.id] - accepted)
            if answered is not None:
                run.after_202["commit"].append(s.watcher.seen[event.id] - answered)
        for crm, arrivals, held, want in (
            (
                "hubspot",
                s.hub_arrivals,
                held_hubspot,
                expected.in_hubspot(state.stage, state.status),
            ),
            (
                "salesforce",
                s.sf_arrivals,
                held_salesforce,
                expected.in_salesforce(state.stage, state.status),
            ),
        ):
            at = arrival(arrivals.history(event.email), *want)
            if at is None:
                run.missing[crm] += 1
            else:
                getattr(run, crm).append(at - accepted)
                if answered is not None:
                    run.after_202[crm].append(at - answered)
            record = held.get(event.email) or {}
            now = (record.get(arrivals.stage_field), record.get(arrivals.status_field))
            if now[0] != want[0] or (want[1] is not None and now[1] != want[1]):
                run.mismatched[crm] += 1
    return run


def _parts(web: int, workers: list[int], redis_server_pid: int) -> dict[str, list[int]]:
    workers = [pid for worker in workers for pid in descendants(worker)]
    return {"web": descendants(web), "worker": workers, "redis": [redis_server_pid]}


def _cpu(parts: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each part; `senders`: this process's finished children (the
    paced senders), `fakes`: this process (the fake CRMs' threads, the commit watcher)."""
    spent = {name: cpu_seconds(pids) for name, pids in parts.items()}
    spent["senders"] = children_cpu()  # their interpreters' start-up included
    spent["fakes"] = time.process_time()
    return spent


def _load(store: Store, events: Sequence[BehaviorEvent]) -> list[Any]:
    emails = [e.email for e in events]
    contacts: dict[str, Any] = {}
    for start in range(0, len(emails), 1000):
        contacts.update(store.load(emails[start : start + 1000]))
    return [contacts[e] for e in emails]


def _all_arrived(events: Sequence[BehaviorEvent], arrivals: Arrivals) -> bool:
    return all(arrivals.history(e.email) for e in events)


def _wait_landed(s: Stack, timeout: float, condition: Callable[[], bool]) -> bool:
    """Until `condition` holds and neither CRM has a contact left to push; False at the
    deadline (what never landed is then counted, not raised)."""
    deadline = time.monotonic() + timeout
    while True:
        s.worker.check()
        s.sync_worker.check()
        if (
            condition()
            and not s.store.dirty_count("hubspot")
            and not s.store.dirty_count("salesforce")
        ):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _longest_gap(times: Sequence[float]) -> float:
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def _busiest(times: Sequence[float], window: float) -> int:
    """Most requests within any `window` seconds."""
    ordered, most, lo = sorted(times), 0, 0
    for hi, at in enumerate(ordered):
        while at - ordered[lo] >= window:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


# --- The report -------------------------------------------------------------------------------


def run(quick: bool = False) -> Report:
    size = QUICK if quick else FULL
    expected = Expected.shipped()
    runs: list[RateRun] = []
    with tempfile.TemporaryDirectory(prefix="lc-crm-latency-") as name:
        tmp = Path(name)
        logs = tmp / "logs"
        logs.mkdir()
        if size.fresh_per_rate:
            for rate in RATES:
                with stack(f"crm-{rate}", size, expected, tmp, logs) as s:
                    runs.append(_one(s, rate, size, expected))
        else:
            with stack("crm", size, expected, tmp, logs) as s:
                for rate in RATES:
                    runs.append(_one(s, rate, size, expected))
    return _report(size, expected, runs)


def _one(s: Stack, rate: int, size: Size, expected: Expected) -> RateRun:
    print(
        f"crm_latency: {rate} events/s for {size.seconds:g} s, web + worker + fake HubSpot and "
        "Salesforce",
        flush=True,
    )
    r = measure(s, rate, size, expected)
    print(
        f"  offered {r.offered:,.0f}/s; commit p99 {_p(r.commit, 99)}; HubSpot p99 "
        f"{_p(r.hubspot, 99)}; Salesforce p99 {_p(r.salesforce, 99)}; never arrived "
        f"{r.missing}; requests {r.requests}; refused {r.refused}",
        flush=True,
    )
    return r


def _p(values: Sequence[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:,.0f} ms" if values else "n/a"


def _report(size: Size, expected: Expected, runs: list[RateRun]) -> Report:
    hub, sf = limits(expected)
    report = Report(
        TITLE,
        "Real processes on loopback: a dedicated redis-server, `lifecycle serve --workers 2`, "
        "`lifecycle worker --queues events` and `lifecycle worker --queues sync` (as the Procfile "
        "runs them) configured through the product's environment variables "
        "(CRM_TARGETS=hubspot,salesforce, HUBSPOT_ACCESS_TOKEN / HUBSPOT_API_BASE / "
        f"HUBSPOT_RATE_LIMIT={HUBSPOT_LIMIT[0]}/{HUBSPOT_LIMIT[1]:g}s, SALESFORCE_LOGIN_URL / "
        "CLIENT_ID / CLIENT_SECRET, the shipped rules.yaml), and the fake HubSpot and Salesforce "
        "(connectors/*/fake_server.py, in the benchmark's process) enforcing "
        f"{HUBSPOT_LIMIT[0]} requests per rolling {HUBSPOT_LIMIT[1]:g} s (HubSpot) and "
        f"{expected.salesforce.rate[0]} per {expected.salesforce.rate[1]:g} s (Salesforce, the "
        "budget rules.yaml gives its client). A paced sender posts one event per request for "
        f"{size.seconds:g} s at each rate; every event is a new contact (lead, marketing or sales "
        "qualified lead), so each one is a push to both CRMs. "
        + ("Fresh processes and fakes per rate. " if size.fresh_per_rate else "")
        + "Accept is the `at` the store writes with the event (before the 202); commit is the "
        "`done:<id>` key written; a CRM has the event when the fake first held the contact's "
        "final stage and status (and kept them). Source: `bench/crm_latency.py`.",
    )
    for r in runs:
        _rate_rows(report, size, r, hub, sf)
    _notes(report, size, runs, hub, sf)
    return report


def _rate_rows(report: Report, size: Size, r: RateRun, hub: Limit, sf: Limit) -> None:
    key = f"r{r.rate}"
    at = f"{r.rate:,}/s"
    report.add(
        f"{key}_offered",
        Row(
            f"{at}: rate actually offered",
            r.offered,
            "events/s",
            f"≥ {0.95 * r.rate:,.0f}/s",
            r.offered >= 0.95 * r.rate,
        ),
    )
    commit_p50, commit_p99 = _ms(r.commit, 50), _ms(r.commit, 99)
    report.add(
        f"{key}_commit_p50_ms", Row(f"{at}: accept → commit p50", commit_p50, "ms", digits=1)
    )
    report.add(
        f"{key}_commit_p99_ms",
        Row(
            f"{at}: accept → commit p99",
            commit_p99,
            "ms",
            f"< {TARGET_COMMIT_P99 * 1000:,.0f} ms",
            bool(r.commit) and r.not_committed == 0 and commit_p99 < TARGET_COMMIT_P99 * 1000,
            1,
        ),
    )
    for crm, limit, values in (("hubspot", hub, r.hubspot), ("salesforce", sf, r.salesforce)):
        bound = limit.bound(r.rate, size.seconds)
        p50, p99 = _ms(values, 50), _ms(values, 99)
        report.add(f"{key}_{crm}_p50_ms", Row(f"{at}: accept → {limit.name} p50", p50, "ms"))
        report.add(
            f"{key}_{crm}_p99_ms",
            Row(
                f"{at}: accept → {limit.name} p99",
                p99,
                "ms",
                f"< {bound:g} s",
                bool(values) and r.missing[crm] == 0 and p99 < bound * 1000,
            ),
        )
    never = r.missing["hubspot"] + r.missing["salesforce"]
    report.add(
        f"{key}_never_arrived",
        Row(f"{at}: pushes that never arrived (HubSpot + Salesforce)", never, "", "0", never == 0),
    )
    differ = r.mismatched["hubspot"] + r.mismatched["salesforce"]
    report.add(
        f"{key}_mismatched",
        Row(
            f"{at}: contacts whose CRM stage/status differs from the engine's at the end",
            differ,
            "",
            "0",
            differ == 0,
        ),
    )
    report.numbers[f"{key}_detail"] = {
        "count": r.count,
        "not_committed": r.not_committed,
        "missing": r.missing,
        "mismatched": r.mismatched,
        "dead_letters": r.dead_letters,
        "requests": r.requests,
        "refused": r.refused,
        "per_push": r.per_push,
        "busiest_window": r.busiest_window,
        "longest_pause_s": {k: round(v, 2) for k, v in r.longest_pause.items()},
        "drained_after_s": round(r.drained_after, 2),
        "timed_out": r.timed_out,
        "commit_max_ms": round(max(r.commit, default=0.0) * 1000, 1),
        "hubspot_max_ms": round(max(r.hubspot, default=0.0) * 1000, 1),
        "salesforce_max_ms": round(max(r.salesforce, default=0.0) * 1000, 1),
        "failures": r.failures[:5],
    }


def _ms(values: Sequence[float], p: float) -> float:
    return percentile(values, p) * 1000 if values else float("nan")


def _notes(report: Report, size: Size, runs: list[RateRun], hub: Limit, sf: Limit) -> None:
    limit_notes = []
    for limit in (hub, sf):
        per_rate = ", ".join(
            f"{rate:,}/s {limit.paced_p99(rate, size.seconds) * 1000:,.0f} ms" for rate in RATES
        )
        limit_notes.append(
            f"{limit.name}: {limit.requests} requests per push of up to {limit.batch} new "
            f"contacts, {limit.limit} requests per {limit.window:g} s as the client spends them, "
            f"so at most {limit.capacity:,.0f} new contacts/s in the steady state; a scheduler "
            f"that spends the budget evenly would reach p99 {per_rate} over {size.seconds:g} s"
        )
    slow = [rate for rate in RATES if rate > hub.capacity]
    beyond = (
        f" {', '.join(f'{r:,}/s' for r in slow)} is above HubSpot's steady-state capacity: "
        f"over a short run the first window's burst and the pacing keep p99 under "
        f"{TARGET_CRM_P99:g} s, but sustained, the backlog grows by "
        f"{slow[0] - hub.capacity:,.0f} contacts/s and the latency by "
        f"{(slow[0] - hub.capacity) / hub.capacity:.3f} s per second of load, passing "
        f"{TARGET_CRM_P99:g} s after about "
        f"{TARGET_CRM_P99 / ((slow[0] - hub.capacity) / hub.capacity):,.0f} s: no target on "
        "latency holds for an unbounded run at that rate."
        if slow
        else ""
    )
    report.notes.append(
        "What the CRM limits allow (the targets): " + "; ".join(limit_notes) + "." + beyond
    )
    for r in runs:
        d = report.numbers[f"r{r.rate}_detail"]
        report.notes.append(
            f"{r.rate:,}/s: {r.count:,} events; after the sender's 202: commit p99 "
            f"{_p(r.after_202['commit'], 99)}, HubSpot p99 {_p(r.after_202['hubspot'], 99)}, "
            f"Salesforce p99 {_p(r.after_202['salesforce'], 99)}; max accept → commit "
            f"{d['commit_max_ms']:,.0f} ms, → HubSpot {d['hubspot_max_ms']:,.0f} ms, → "
            f"Salesforce {d['salesforce_max_ms']:,.0f} ms. Requests during the run: HubSpot "
            f"{r.requests['hubspot']} ({r.refused['hubspot']} answered 429; at most "
            f"{r.busiest_window['hubspot']} in any {HUBSPOT_LIMIT[1]:g} s; "
            f"{r.per_push['hubspot']:.1f} contacts per batch/upsert), Salesforce "
            f"{r.requests['salesforce']} ({r.refused['salesforce']} over the limit; at most "
            f"{r.busiest_window['salesforce']} in any {sf.window:g} s; "
            f"{r.per_push['salesforce']:.1f} contacts per create). Longest pause between two "
            f"commits {r.longest_pause['commit']:.1f} s, between two HubSpot requests "
            f"{r.longest_pause['hubspot']:.1f} s, two Salesforce requests "
            f"{r.longest_pause['salesforce']:.1f} s. CPU per event: "
            + ", ".join(f"{name} {1e6 * s / r.count:,.0f} µs" for name, s in r.cpu.items())
            + f" ({sum(r.cpu.values()) / r.wall / (os.cpu_count() or 1):.0%} of the "
            f"{os.cpu_count()} cores over the {r.wall:.0f} s). Everything had landed "
            f"{r.drained_after:.1f} s after the sender's last answer"
            + (" (deadline reached)" if r.timed_out else "")
            + f"; dead letters {r.dead_letters}; not committed {r.not_committed}."
            + (f" Sender failures: {r.failures[:3]}." if r.failures else "")
        )


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv).numbers, indent=2, default=str))
