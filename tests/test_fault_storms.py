"""Faults while events flow, with real processes, a real Redis and real HTTP; nothing is mocked.

1. gunicorn workers, and once the gunicorn master, SIGKILLed at random points while senders post
   events to /api/events and to the signed /webhooks/standard and, like a vendor, retry whatever
   did not get a 2xx (connection reset, refused, 5xx, timeout) with the same ids;
2. Redis SIGKILLed (or shut down with SIGTERM) and restarted on its append-only file, run the
   way the embedded default runs it, while the web accepts and a worker applies;
3. the CRM fakes answering storms of 429 and 5xx while workers are SIGKILLed.

After each: every event a 2xx answered is in the inbox and applied exactly once, a retry of an
accepted event counts as a duplicate, the CRMs hold the engine's state, and nothing needed a
manual step (the same processes recovered, or a supervisor started a new one).

`make test` runs short versions; FAULT_SOAK=1 (`make soak`) runs longer ones with more kills.
Every random choice comes from one seed, printed by each test; FAULT_SEED=<n> replays a run.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from connectors.base.crm import PushResult
from connectors.hubspot.fake_server import FakeHubSpot
from connectors.salesforce.fake_server import FakeSalesforce
from connectors.standard.inbound import signed_headers
from engine import pipeline
from engine.config import Settings
from engine.model import BehaviorEvent
from engine.pipeline import Runtime, build_runtime, drain_events, sync_dirty
from engine.store import INBOX, LOCK_MS, WAKE_SECONDS, Store
from tests import test_faults
from tests.processes import (
    Service,
    children,
    free_port,
    lifecycle_serve,
    live_members,
    product_env,
    redis_server,
    redis_socket_url,
    wait_for,
)
from tests.test_faults import AUTH, COUNTING_RULES, SECRET, TOKEN, web_client

processes = test_faults.processes  # fixtures: every process started is stopped and proven gone
short_dir = test_faults.short_dir

SOAK = os.environ.get("FAULT_SOAK", "") not in ("", "0")
SEED = int(os.environ.get("FAULT_SEED") or 20261126)
RECLAIM_SECONDS = 3.0
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
REQUEST_TIMEOUT = 15.0
"""A sender's request timeout: above the web's Redis socket timeout (3 s) and its retries."""
SETTLE_SECONDS = WAKE_SECONDS + LOCK_MS / 1000 + RECLAIM_SECONDS + 30
"""Deadline for the engine to apply what was accepted once the faults stop: a drain job lost
with its process is replaced by the workers' sweep once its wake flag expires (WAKE_SECONDS), a
dead worker's contacts wait for their locks to expire and its deliveries for the reclaim."""


def seeded(name: str) -> random.Random:
    """The test's random source; the seed is printed (shown with -s, and with a failure)."""
    print(f"{name}: FAULT_SEED={SEED} FAULT_SOAK={int(SOAK)}")
    return random.Random(f"{name}:{SEED}")


# --- a sender that retries like a vendor --------------------------------------------------------


@dataclass
class Delivery:
    number: int
    route: str
    """"api" (POST /api/events, bearer token) or "hook" (POST /webhooks/standard, signed)."""
    events: list[dict[str, Any]]
    attempts: list[str] = field(default_factory=list)
    """What each try got: an HTTP status, or the connection error's name."""
    answer: dict[str, Any] | None = None
    """The body of the 2xx that ended the retries."""
    gave_up: bool = False

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


class Sender:
    """Posts deliveries from several threads. Like a vendor, a delivery whose request failed (no
    answer, a reset, a 5xx) is sent again, same body and ids (a webhook keeps its webhook-id and is
    signed afresh), until a 2xx; any other answer is a test failure, reported at the end."""

    def __init__(self, port: int, deliveries: list[Delivery], threads: int, patience: float):
        self.port, self.deliveries, self.patience = port, deliveries, patience
        self._todo = list(reversed(deliveries))
        self._lock = threading.Lock()
        self.answered = 0
        self.last_answer_at = 0.0
        """time.monotonic() of the latest 2xx"""
        self.in_flight = 0
        self.statuses: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._run, name=f"sender-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def finished(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def share_answered(self) -> float:
        return self.answered / len(self.deliveries)

    def count(self, outcome: str) -> int:
        with self._lock:
            return self.statuses[outcome]

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert self.finished, f"the senders did not finish in {timeout:.0f} s: {self.summary()}"

    def summary(self) -> dict[str, Any]:
        return {
            "deliveries": len(self.deliveries),
            "answered": self.answered,
            "attempts": dict(self.statuses),
        }

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._todo:
                    return
                delivery = self._todo.pop()
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        give_up = time.monotonic() + self.patience
        for attempt in itertools.count():
            with self._lock:
                self.in_flight += 1
            try:
                outcome, body = self._post(delivery)
            finally:
                with self._lock:
                    self.in_flight -= 1
            delivery.attempts.append(outcome)
            with self._lock:
                self.statuses[outcome] += 1
            if outcome.startswith("2"):
                delivery.answer = json.loads(body)
                with self._lock:
                    self.answered += 1
                    self.last_answer_at = time.monotonic()
                return
            if outcome.isdigit() and not outcome.startswith("5"):
                return  # a refusal a retry cannot cure: reported by check_answers
            if time.monotonic() > give_up:
                delivery.gave_up = True
                return
            time.sleep(min(0.5, 0.02 * 2**attempt))

    def _post(self, delivery: Delivery) -> tuple[str, bytes]:
        if delivery.route == "api":
            path, body = "/api/events", json.dumps(delivery.events).encode()
            headers = {**AUTH, "Content-Type": "application/json"}
        else:
            path = "/webhooks/standard"
            events = delivery.events
            body = json.dumps(events[0] if len(events) == 1 else events).encode()
            msg_id = f"msg-{delivery.number:05d}"
            headers = signed_headers(SECRET, msg_id, body, datetime.now(UTC))
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            return str(reply.status), reply.read()
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__, b""
        finally:
            connection.close()


def tick_deliveries(
    rng: random.Random, count: int, contacts: int, prefix: str
) -> tuple[list[Delivery], dict[str, set[str]]]:
    """`count` tick events over `contacts` contacts, in deliveries of 1 to 8 events, half through
    the API and half as signed webhooks. Returns the deliveries and each contact's event ids."""
    emails = [f"{prefix}{i:03d}@example.com" for i in range(contacts)]
    by_contact: dict[str, set[str]] = {email: set() for email in emails}
    deliveries: list[Delivery] = []
    n = 0
    while n < count:
        size = min(count - n, rng.randint(1, 8))
        events = []
        for _ in range(size):
            email = rng.choice(emails)
            event_id = f"{prefix}-{n:05d}"
            events.append(
                {
                    "id": event_id,
                    "type": "tick",
                    "email": email,
                    "occurred_at": (T0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {"n": n},
                }
            )
            by_contact[email].add(event_id)
            n += 1
        route = "api" if rng.random() < 0.5 else "hook"
        deliveries.append(Delivery(len(deliveries), route, events))
    return deliveries, by_contact


# --- what must hold after every fault -----------------------------------------------------------


def check_answers(sender: Sender, allowed: set[str]) -> dict[str, int]:
    """Every delivery ended with a 2xx that accepted it whole or found it whole a duplicate (an
    accept is atomic); nothing but `allowed` outcomes on the way. Returns counts for the report."""
    problems = []
    lost_answers = 0
    for d in sender.deliveries:
        odd = [a for a in d.attempts if not a.startswith("2") and a not in allowed]
        if d.answer is None or odd:
            problems.append((d.number, d.route, d.ids[:3], d.attempts[-6:], odd))
            continue
        whole = len(d.events)
        got = (d.answer.get("accepted"), d.answer.get("duplicates"))
        if got not in ((whole, 0), (0, whole)):
            problems.append((d.number, d.route, d.ids[:3], "partial answer", d.answer))
        elif got == (0, whole):
            lost_answers += 1  # an earlier try was accepted but its answer never arrived
    assert not problems, (
        f"{len(problems)} deliveries without a clean 2xx (number, route, ids, last attempts, "
        f"unexpected outcomes), e.g. {problems[:5]}; all: {sender.summary()}"
    )
    return {
        "deliveries": len(sender.deliveries),
        "retried": sum(1 for d in sender.deliveries if len(d.attempts) > 1),
        "answered_as_duplicates": lost_answers,
    }


def inbox_event_ids(client: redis.Redis) -> Counter[str]:
    """Event id -> entries in the inbox stream (the event log: never trimmed; an entry put back
    for a busy contact appears again)."""
    found: Counter[str] = Counter()
    start = "-"
    while True:
        entries = client.xrange(INBOX, min=start, count=5000)
        for _, fields in entries:
            try:
                found[json.loads(fields[b"e"])["id"]] += 1
            except (KeyError, ValueError):
                found["<unreadable>"] += 1
        if len(entries) < 5000:
            return found
        start = "(" + entries[-1][0].decode()


def check_accepted_events_kept(client: redis.Redis, sender: Sender) -> None:
    """No 2xx whose events are missing from the inbox."""
    kept = inbox_event_ids(client)
    missing = [i for d in sender.deliveries if d.answer for i in d.ids if i not in kept]
    assert not missing, f"{len(missing)} events answered 2xx but not in the inbox: {missing[:10]}"


def applied_count(client: redis.Redis, emails: Iterator[str] | list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for email in emails:
        pipe.llen(f"lc:timeline:{email}")
    return sum(pipe.execute())


def wait_applied(
    client: redis.Redis, store: Store, by_contact: dict[str, set[str]], watch: list[Service]
) -> float:
    """Wait until every event is in a timeline and the inbox is drained; returns the seconds.
    Fails at once, with its log, if a process in `watch` dies meanwhile."""
    total = sum(len(ids) for ids in by_contact.values())
    started = time.monotonic()

    def state() -> dict[str, Any]:
        return {
            "applied": applied_count(client, list(by_contact)),
            "of": total,
            "pending": store.pending_count(),
            "backlog": store.backlog(),
            "locks": len(list(client.scan_iter("lc:lock:*"))),
            "logs": tails(*watch),
        }

    def done() -> bool:
        return (
            running(watch)
            and store.pending_count() == 0
            and store.backlog() == 0
            and applied_count(client, list(by_contact)) >= total
        )

    wait_for(
        done,
        SETTLE_SECONDS,
        f"all {total} events applied and the inbox drained",
        state,
        interval=0.25,
    )
    return time.monotonic() - started


def check_exactly_once(
    store: Store,
    by_contact: dict[str, set[str]],
    channels: list[str],
    ticks: dict[str, int] | None = None,
) -> None:
    """Each event in its contact's timeline once, its done marker set, the tick counters exact
    (`ticks`: per contact; default: every event is a tick), and the accept counters equal to the
    number of distinct events (none accepted twice)."""
    seen: Counter[str] = Counter()
    wrong = {}
    for email, expected in by_contact.items():
        ids = [entry["event_id"] for entry in store.timeline(email)]
        seen.update(ids)
        if set(ids) != expected:
            wrong[email] = {
                "missing": sorted(expected - set(ids))[:5],
                "foreign": sorted(set(ids) - expected)[:5],
            }
    assert not wrong, f"{len(wrong)} contacts with missing or foreign events: {wrong}"
    twice = sorted(i for i, n in seen.items() if n > 1)
    assert not twice, f"{len(twice)} events applied more than once, e.g. {twice[:5]}"
    every = [i for ids in by_contact.values() for i in ids]
    assert store.done(every) == set(every)
    counters = {}
    for email, expected in by_contact.items():
        contact = store.contact(email)
        counted = contact.state.counters.get("ticks", 0) if contact else None
        want = len(expected) if ticks is None else ticks.get(email, 0)
        if counted != want:
            counters[email] = (counted, want)
    assert not counters, f"tick counters that are not the number of events: {counters}"
    metrics = store.metrics()
    accepted = sum(metrics.get(f"accepted|{c}", 0) for c in channels)
    assert accepted == len(every), (
        f"{accepted} accepts counted for {len(every)} distinct events: {metrics}"
    )


def running(services: list[Service]) -> bool:
    """True; fails the test with the logs of any service that is no longer running."""
    dead = [s for s in services if not s.alive()]
    assert not dead, f"died:\n{tails(*dead, lines=40)}"
    return True


def tails(*services: Service, lines: int = 15) -> str:
    return "\n".join(f"--- {s} ({s.log_path.name}):\n{s.log_tail(lines)}" for s in services)


# --- 1. gunicorn workers and master SIGKILLed while senders retry -------------------------------

CONNECTION_ERRORS = {
    "ConnectionResetError",
    "ConnectionRefusedError",
    "RemoteDisconnected",
    "BrokenPipeError",
    "IncompleteRead",
    "BadStatusLine",
    "TimeoutError",
}
"""What a sender sees when the process holding its request dies (or none listens yet)."""


WEB_EVENTS = 12_000 if SOAK else 2_400
WEB_CONTACTS = 300 if SOAK else 80
WEB_KILLS = 14 if SOAK else 6
"""gunicorn worker kills; the master is killed once on top, in the middle."""


def test_web_processes_sigkilled_at_random_points_lose_nothing(
    redis_url,
    redis_client,
    processes,
    tmp_path,
):
    """Two gunicorn workers behind one master, four sender threads, one `lifecycle worker`
    throughout. gunicorn workers are SIGKILLed at random points of the stream (the master
    starts new ones), and once the master itself; then a supervisor stops what is left of that
    service and starts `lifecycle serve` again on the same port."""
    rng = seeded("web-kills")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    env = product_env(
        REDIS_URL=redis_url,
        API_TOKEN=TOKEN,
        STANDARD_WEBHOOK_SECRET=SECRET,
        RULES_FILE=str(rules_file),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        LIFECYCLE_RECLAIM_SECONDS=str(RECLAIM_SECONDS),
    )
    store = Store(redis_client)
    worker = processes.worker(env, "worker")
    port = free_port()
    webs = [processes.add(lifecycle_serve(env, tmp_path / "web-0.log", port, workers=2))]
    deliveries, by_contact = tick_deliveries(rng, WEB_EVENTS, WEB_CONTACTS, "w")
    sender = Sender(port, deliveries, threads=4, patience=60).start()

    kill_at = sorted(rng.uniform(0.05, 0.85) for _ in range(WEB_KILLS + 1))
    master_at = len(kill_at) // 2
    kills: list[dict[str, Any]] = []
    killed: set[int] = set()
    for number, share in enumerate(kill_at):
        web = webs[-1]
        wait_for(
            lambda share=share: sender.share_answered() >= share or sender.finished,
            60,
            f"the senders to have {share:.0%} of the deliveries answered",
            lambda: (sender.summary(), tails(*webs[-1:])),
            interval=0.002,
        )
        assert not sender.finished, f"the senders finished before kill {number}: {kills}"
        if number == master_at:
            # The master dies; its workers, orphaned, finish what they hold. A supervisor then
            # stops what is left of the old service and starts a new one on the same port.
            os.kill(web.pid, signal.SIGKILL)
            web.process.wait(timeout=10)
            orphans = live_members(web.pgid)
            kills.append({"at": round(share, 3), "master": web.pid, "orphans": len(orphans),
                          "in_flight": sender.in_flight})  # fmt: skip
            web.stop()
            log = tmp_path / f"web-{len(webs)}.log"
            webs.append(processes.add(lifecycle_serve(env, log, port, workers=2)))
            continue
        pids = wait_for(
            lambda web=web: [p for p in children(web.pid) if p not in killed],
            30,
            f"gunicorn {web.pid} to have a worker",
            lambda: tails(*webs[-1:]),
        )
        victim = rng.choice(pids)
        in_flight = sender.in_flight
        os.kill(victim, signal.SIGKILL)  # gone once its master reaps it: not chosen again
        killed.add(victim)
        kills.append({"at": round(share, 3), "worker": victim, "in_flight": in_flight})
    sender.join(timeout=120)
    print(f"kills: {kills}")

    answers = check_answers(sender, allowed=CONNECTION_ERRORS)
    assert worker.alive(), f"the worker died:\n{tails(worker)}"
    settle = wait_applied(redis_client, store, by_contact, [worker, webs[-1]])
    check_accepted_events_kept(redis_client, sender)
    check_exactly_once(store, by_contact, ["api", "standard"])
    assert webs[-1].alive() and worker.alive(), tails(worker, *webs)
    reset = sum(n for outcome, n in sender.statuses.items() if outcome in CONNECTION_ERRORS)
    assert reset, f"no request was cut by a kill: {sender.summary()}"
    print(f"{answers}; attempts {dict(sender.statuses)}; applied {settle:.1f} s after the last")


# --- 2. Redis killed and restarted while events flow ---------------------------------------------

REDIS_EVENTS = 8_000 if SOAK else 1_600
REDIS_CONTACTS = 200 if SOAK else 60
REDIS_OUTAGES = 6 if SOAK else 2


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_redis_killed_mid_stream_loses_nothing_it_acknowledged(
    how,
    short_dir,
    processes,
    tmp_path,
):
    """SIGKILL: the process dies at once (a crash, the OOM killer); with appendfsync everysec the
    AOF write() happens before any reply leaves, so what was acknowledged is in the kernel's page
    cache and survives. SIGTERM: Redis shuts down (SHUTDOWN), fsyncing the AOF first."""
    rng = seeded(f"redis-{how}")
    data = short_dir / "redis"
    redises = [processes.add(redis_server(data, "redis-0"))]
    url = redis_socket_url(data)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    env = product_env(
        REDIS_URL=url,
        API_TOKEN=TOKEN,
        STANDARD_WEBHOOK_SECRET=SECRET,
        RULES_FILE=str(rules_file),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        LIFECYCLE_RECLAIM_SECONDS=str(RECLAIM_SECONDS),
    )
    worker = processes.worker(env, "worker")
    port = free_port()
    web = processes.add(lifecycle_serve(env, tmp_path / "web.log", port, workers=2))
    master, worker_pid = web.pid, worker.pid
    deliveries, by_contact = tick_deliveries(rng, REDIS_EVENTS, REDIS_CONTACTS, "r")
    sender = Sender(port, deliveries, threads=4, patience=120).start()

    outages: list[dict[str, Any]] = []
    for number, share in enumerate(sorted(rng.uniform(0.1, 0.8) for _ in range(REDIS_OUTAGES))):
        wait_for(
            lambda share=share: sender.share_answered() >= share or sender.finished,
            120,
            f"the senders to have {share:.0%} of the deliveries answered",
            lambda: (sender.summary(), tails(web, worker, redises[-1])),
            interval=0.002,
        )
        assert not sender.finished, f"the senders finished before outage {number}: {outages}"
        server, refused = redises[-1], sender.count("503")
        os.kill(server.pid, getattr(signal, how))
        since_2xx = round((time.monotonic() - sender.last_answer_at) * 1000, 1)
        server.process.wait(timeout=30)
        server.stop()
        # Down until the senders have been refused (503: nothing kept, send again), then back
        # on the same directory, the way it was started.
        wait_for(
            lambda refused=refused: sender.count("503") > refused,
            30,
            "the web to answer 503 while Redis is down",
            lambda: (sender.summary(), tails(web)),
            interval=0.01,
        )
        outages.append({"at": round(share, 3), "last 2xx ms before": since_2xx})
        redises.append(processes.add(redis_server(data, f"redis-{number + 1}")))
    sender.join(timeout=240)
    print(f"outages: {outages}")

    answers = check_answers(sender, allowed={"503"})
    client = redis.Redis.from_url(url)
    try:
        assert client.info("persistence")["aof_enabled"] == 1
        store = Store(client)
        check_accepted_events_kept(client, sender)
        settle = wait_applied(client, store, by_contact, [worker, web])
        check_exactly_once(store, by_contact, ["api", "standard"])
    finally:
        client.close()
    # No manual step: the very processes that saw Redis go away carry on.
    assert (web.pid, worker.pid) == (master, worker_pid)
    assert web.alive() and worker.alive(), f"a process did not survive:\n{tails(web, worker)}"
    restarts = worker.log_text().count("the worker loop starts again")
    print(
        f"{answers}; attempts {dict(sender.statuses)}; worker loop restarted {restarts} time(s); "
        f"applied {settle:.1f} s after the last"
    )


# --- 3. CRM storms while workers are SIGKILLed ---------------------------------------------------

STORM_RULES = (
    COUNTING_RULES.replace("tenth-tick", "third-tick").replace("gte: 9", "gte: 2")
    + """\
  - name: meeting-makes-sql
    when:
      event: meeting_booked
    then:
      - promote: sales_qualified_lead
  - name: no-answer
    when:
      event: call_logged
      outcome: no_answer
      contact.stage: sales_qualified_lead
    then:
      - set_status: attempted_to_contact
  - name: connected
    when:
      event: call_logged
      outcome: connected
      contact.stage: sales_qualified_lead
    then:
      - set_status: connected
  - name: wrong-number
    when:
      event: call_logged
      outcome: wrong_number
      contact.stage: sales_qualified_lead
    then:
      - set_status: unqualified
crm:
  hubspot:
    status_values: {future_opportunity: OPEN}
"""
)
HUBSPOT_STAGE = {
    "subscriber": "subscriber",
    "lead": "lead",
    "sales_qualified_lead": "salesqualifiedlead",
}
HUBSPOT_STATUS = {
    "new": "NEW",
    "attempted_to_contact": "ATTEMPTED_TO_CONTACT",
    "connected": "CONNECTED",
    "unqualified": "UNQUALIFIED",
}
SALESFORCE_STATUS = {
    "new": "Open - Not Contacted",
    "attempted_to_contact": "Working - Contacted",
    "connected": "Working - Contacted",
    "unqualified": "Closed - Not Converted",
}
STORM_CONTACTS = 500 if SOAK else 150
STORM_WAVES = 200 if SOAK else 40
WAVE_CONTACTS = 25
"""Each wave brings events for this many contacts (drawn at random): changes keep arriving
while the previous ones are being pushed."""
STORM_KILLS = 12 if SOAK else 4
STORM_SHARE = 0.4
"""Share of CRM requests answered 429 or 5xx while the storm lasts."""


def storm_wave(
    rng: random.Random, wave: int, emails: list[str], first: int
) -> list[dict[str, Any]]:
    """One or two events for each of `emails`: ticks, meetings (to SQL), calls (status)."""
    events = []
    for email in emails:
        for _ in range(rng.randint(1, 2)):
            n = first + len(events)
            kind = rng.random()
            event: dict[str, Any] = {
                "id": f"s{wave}-{n:05d}",
                "email": email,
                "occurred_at": (T0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if kind < 0.5:
                event |= {"type": "tick", "properties": {"n": n}}
            elif kind < 0.65:
                event |= {"type": "meeting_booked", "properties": {"meeting_type": "demo"}}
            else:
                outcome = rng.choice(["no_answer", "connected", "wrong_number"])
                event |= {"type": "call_logged", "properties": {"outcome": outcome}}
            events.append(event)
    rng.shuffle(events)
    return events


def crm_mismatches(
    store: Store, emails: list[str], hubspot: FakeHubSpot, salesforce: FakeSalesforce
) -> dict[str, Any]:
    """Contacts whose HubSpot record, Salesforce lead or sync record disagrees with the engine."""
    wrong: dict[str, Any] = {}
    for email in emails:
        contact = store.contact(email)
        state = contact.state if contact else None
        if state is None or state.stage is None:
            wrong[email] = "no engine state"
            continue
        want_hubspot = {
            "lifecyclestage": HUBSPOT_STAGE[state.stage],
            "hs_lead_status": HUBSPOT_STATUS.get(state.status or ""),
        }
        held = hubspot.contact(email) or {}
        got_hubspot = {key: held.get(key) for key in want_hubspot}
        want_lead = {"Lifecycle_Stage__c": state.stage}
        if state.status:
            want_lead["Status"] = SALESFORCE_STATUS[state.status]
        leads = [{k: lead.get(k) for k in want_lead} for lead in salesforce.leads_with(email)]
        records = store.sync_records(email, ["hubspot", "salesforce"])
        sync = {crm: (r.get("state"), r.get("synced_version")) for crm, r in records.items()}
        synced = ("synced", str(state.version))
        if got_hubspot != want_hubspot or leads != [want_lead] or set(sync.values()) != {synced}:
            wrong[email] = {
                "engine": (state.stage, state.status, state.version),
                "hubspot": got_hubspot,
                "salesforce leads": leads,
                "sync records": sync,
            }
    return wrong


def no_dead_letters(store: Store) -> bool:
    """True; fails the test on any dead letter (every failure in these storms is retryable)."""
    for crm in ("hubspot", "salesforce"):
        dead = store.dead_letters(crm)
        assert not dead, f"{len(dead)} {crm} dead letters for retryable failures: {dead[:3]}"
    return True


def busy_with(worker: Service) -> str:
    """The job a worker's log shows started and not finished ("idle" when none)."""
    started = None
    for line in worker.log_text().splitlines():
        if ": events: engine.pipeline." in line or ": sync: engine.pipeline." in line:
            started = line.split("engine.pipeline.", 1)[1].split(" ", 1)[0]
        elif "Successfully completed" in line or "Job OK" in line:
            started = None
    return started or "idle"


def mismatch_report(
    store: Store,
    emails: list[str],
    hubspot: FakeHubSpot,
    salesforce: FakeSalesforce,
    workers: list[Service],
) -> str:
    wrong = crm_mismatches(store, emails, hubspot, salesforce)
    dirty = {crm: store.dirty_count(crm) for crm in ("hubspot", "salesforce")}
    kinds: Counter[str] = Counter()
    for detail in wrong.values():
        if not isinstance(detail, dict):
            kinds[str(detail)] += 1
            continue
        engine, leads = detail["engine"], detail["salesforce leads"]
        kinds["duplicate salesforce leads"] += len(leads) > 1
        kinds["no salesforce lead"] += not leads
        kinds["salesforce value differs"] += bool(leads) and all(
            lead.get("Lifecycle_Stage__c") != engine[0]
            or ("Status" in lead and lead["Status"] != SALESFORCE_STATUS.get(engine[1] or ""))
            for lead in leads
        )
        want = (HUBSPOT_STAGE[engine[0]], HUBSPOT_STATUS.get(engine[1] or ""))
        got = (detail["hubspot"]["lifecyclestage"], detail["hubspot"]["hs_lead_status"])
        kinds["hubspot value differs"] += got != want
        synced = ("synced", str(engine[2]))
        for crm, record in detail["sync records"].items():
            kinds[f"{crm} sync record {record} for version {engine[2]}"] += record != synced
    summary = {kind: n for kind, n in kinds.items() if n}
    lines = [f"{len(wrong)} contacts differ; dirty {dirty}; {summary}"]
    for email, detail in list(wrong.items())[:4]:
        lines.append(f"{email}: {detail}")
        lines.append(f"  history: {crm_history(email, hubspot, salesforce)}")
    return "\n".join([*lines, tails(*workers, lines=5)])


def crm_history(email: str, hubspot: FakeHubSpot, salesforce: FakeSalesforce) -> dict[str, Any]:
    """What each CRM was told about one contact, in order (for a failure message)."""
    ids = {lead["Id"] for lead in salesforce.leads_with(email)}
    salesforce_writes = []
    for entry in list(salesforce.log):
        records = entry.body.get("records") if isinstance(entry.body, dict) else None
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, dict):
                continue
            if str(record.get("Email", "")).lower() == email or record.get("id") in ids:
                fields = {k: v for k, v in record.items() if k != "attributes"}
                salesforce_writes.append((round(entry.at, 3), entry.method, entry.status, fields))
    with hubspot.lock:
        hubspot_writes = [(kind, props) for e, props, kind in hubspot.writes if e == email]
    return {"salesforce writes": salesforce_writes, "hubspot writes": hubspot_writes}


def test_crm_storms_and_worker_kills_end_with_the_crms_equal_to_the_engine(
    redis_url,
    redis_client,
    processes,
    tmp_path,
):
    """Two `lifecycle worker`s push to the fake HubSpot and the fake Salesforce while both answer
    a share of requests with 429 (Retry-After) or 5xx (Salesforce also with its 403
    REQUEST_LIMIT_EXCEEDED). Events arrive in waves that change stages and statuses (so pushes
    of different versions of a contact overlap); a worker is SIGKILLed at random moments and a
    supervisor starts another. The storm goes on until both CRMs equal the engine."""
    rng = seeded("crm-storms")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(STORM_RULES)
    store = Store(redis_client)
    api = web_client(redis_url, rules_file)
    emails = [f"s{i:03d}@example.com" for i in range(STORM_CONTACTS)]
    hubspot, salesforce = FakeHubSpot().start(), FakeSalesforce().start()
    try:
        env = product_env(
            REDIS_URL=redis_url,
            RULES_FILE=str(rules_file),
            CRM_TARGETS="hubspot,salesforce",
            HUBSPOT_ACCESS_TOKEN=hubspot.token,
            HUBSPOT_API_BASE=hubspot.base_url,
            SALESFORCE_LOGIN_URL=salesforce.base_url,
            SALESFORCE_CLIENT_ID=salesforce.client_id,
            SALESFORCE_CLIENT_SECRET=salesforce.client_secret,
            LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
            LIFECYCLE_RECLAIM_SECONDS=str(RECLAIM_SECONDS),
        )
        hubspot.storm(STORM_SHARE, seed=rng.randrange(2**32))
        salesforce.storm(STORM_SHARE, seed=rng.randrange(2**32))
        workers = [processes.worker(env, f"worker-{i}") for i in range(2)]
        started = len(workers)

        by_contact: dict[str, set[str]] = {email: set() for email in emails}
        ticks: Counter[str] = Counter()
        kill_waves = sorted(rng.sample(range(STORM_WAVES), STORM_KILLS))
        kills: list[dict[str, Any]] = []
        sent = 0
        for wave in range(STORM_WAVES):
            events = storm_wave(rng, wave, rng.sample(emails, WAVE_CONTACTS), sent)
            sent += len(events)
            for event in events:
                by_contact[event["email"]].add(event["id"])
                ticks[event["email"]] += event["type"] == "tick"
            for start in range(0, len(events), 100):
                reply = api.post("/api/events", json=events[start : start + 100], headers=AUTH)
                assert reply.status_code == 202, reply.get_data(as_text=True)
            for _ in range(kill_waves.count(wave)):
                # somewhere in the middle of draining this wave and pushing the last ones
                time.sleep(rng.uniform(0.0, 1.5))
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill_hard()
                dirty = {crm: store.dirty_count(crm) for crm in ("hubspot", "salesforce")}
                doing = busy_with(victim)
                kills.append({"wave": wave, "pid": victim.pid, "in": doing, "dirty": dirty})
                workers.append(processes.worker(env, f"worker-{started}"))  # the supervisor
                started += 1
            wait_for(
                lambda sent=sent: running(workers) and applied_count(redis_client, emails) >= sent,
                SETTLE_SECONDS,
                f"wave {wave}: {sent} events applied",
                lambda: (applied_count(redis_client, emails), tails(*workers)),
                interval=0.1,
            )
        print(f"kills: {kills}")
        wait_applied(redis_client, store, by_contact, workers)
        check_exactly_once(store, by_contact, ["api"], ticks)

        # The storm goes on: the pushes still end with both CRMs equal to the engine.
        started_sync = time.monotonic()
        wait_for(
            lambda: (
                running(workers)
                and no_dead_letters(store)
                and not any(store.dirty_count(c) for c in ("hubspot", "salesforce"))
                and not crm_mismatches(store, emails, hubspot, salesforce)
            ),
            SETTLE_SECONDS + 60,
            "HubSpot and Salesforce to hold every contact's engine state",
            lambda: mismatch_report(store, emails, hubspot, salesforce, workers),
            interval=0.5,
        )
        synced = time.monotonic() - started_sync
        hubspot.calm()
        salesforce.calm()
        no_dead_letters(store)
        stormed = {"hubspot": dict(hubspot.stormed), "salesforce": dict(salesforce.stormed)}
        calls = {"hubspot": len(hubspot.requests), "salesforce": len(salesforce.api_requests())}
        assert all(sum(s.values()) >= 5 for s in stormed.values()), (stormed, calls)
        stages = Counter(store.contact(e).state.stage for e in emails)
        statuses = Counter(store.contact(e).state.status for e in emails)
        print(
            f"{sent} events; CRM requests {calls}, stormed {stormed}; stages {dict(stages)}; "
            f"statuses {dict(statuses)}; in sync {synced:.1f} s after the last event"
        )
    finally:
        hubspot.stop()
        salesforce.stop()


# --- 4. two sync jobs for one CRM never push at once ---------------------------------------------


class SlowCrm:
    """A CRM that takes its time over each push and notes how many were in flight at once."""

    name, batch_size = "slow", 5

    def __init__(self, seconds: float):
        self.seconds, self.lock = seconds, threading.Lock()
        self.active = self.most = 0
        self.pushed: Counter[str] = Counter()

    def push(self, states, known_ids, profiles) -> list[PushResult]:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
            self.pushed.update(s.email for s in states)
        return [PushResult(s.email, ok=True, crm_id=f"id-{s.email}") for s in states]

    def emails_for(self, crm_ids) -> dict[str, str]:
        return {}

    def ready_in(self) -> float:
        return 0.0


@pytest.fixture
def slow_runtime(redis_client, tmp_path) -> Iterator[tuple[Runtime, SlowCrm]]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    settings = Settings(rules_file=str(rules_file), crm_targets=("sandbox",))
    runtime = Runtime.install(build_runtime(settings, redis_client))
    crm = SlowCrm(0.2)
    runtime.crms = {"slow": crm}
    yield runtime, crm
    Runtime._current = None


def dirty_contacts(runtime: Runtime, count: int, prefix: str) -> list[str]:
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    events = [
        BehaviorEvent(f"{prefix}-{i}", "tick", email, T0 + timedelta(seconds=i))
        for i, email in enumerate(emails)
    ]
    runtime.store.accept(events, datetime.now(UTC))
    drain_events()
    assert runtime.store.dirty_count("slow") == count
    return emails


def in_parallel(*jobs: Callable[[], int]) -> list[int]:
    results: list[int] = []
    threads = [threading.Thread(target=lambda job=job: results.append(job())) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == len(jobs), "a sync job did not finish"
    return sorted(results)


def test_two_sync_jobs_for_one_crm_never_push_at_once(slow_runtime):
    """Two workers' jobs for one CRM, at once: one pushes everything, the other steps aside (two
    pushers would each see a record missing and both create it)."""
    runtime, crm = slow_runtime
    emails = dirty_contacts(runtime, 12, "p")
    assert in_parallel(lambda: sync_dirty("slow"), lambda: sync_dirty("slow")) == [0, 12]
    assert crm.most == 1, f"{crm.most} pushes to one CRM at once"
    assert crm.pushed == Counter(dict.fromkeys(emails, 1))
    records = [runtime.store.sync_records(e, ["slow"])["slow"] for e in emails]
    assert {(r["state"], r["synced_version"]) for r in records} == {("synced", "1")}
    assert not runtime.redis.exists("lc:lease:sync:slow")  # released


def test_a_dead_pushers_lease_lapses_and_a_live_ones_does_not(slow_runtime, monkeypatch):
    runtime, crm = slow_runtime
    monkeypatch.setattr(pipeline, "SYNC_LEASE_SECONDS", 0.3)
    key = "lc:lease:sync:slow"

    # A worker SIGKILLed while pushing left its lease: a job finds the CRM busy and steps aside,
    # its wake flag kept no longer than that lease, so the workers' sweep (or the next change)
    # sends another job once the lease lapses; that one pushes.
    emails = dirty_contacts(runtime, 3, "d")
    runtime.redis.set(key, "a-dead-worker", px=300)
    runtime.store.set_wake("sync:slow")  # what sent the job
    assert sync_dirty("slow") == 0
    assert 0 < runtime.redis.pttl("lc:wake:sync:slow") <= 300
    wait_for(lambda: not runtime.redis.exists(key), 5, "the dead worker's lease to lapse")
    assert runtime.store.set_wake("sync:slow")  # nothing keeps another job from being sent
    assert sync_dirty("slow") == 3 and crm.pushed == Counter(dict.fromkeys(emails, 1))

    # A live pusher slower than the lease keeps it: a job started meanwhile steps aside.
    crm.seconds = 1.0
    dirty_contacts(runtime, 2, "l")

    def late() -> int:
        wait_for(lambda: crm.active, 5, "the first push to be under way")
        time.sleep(0.7)  # past the 0.3 s lease: only its renewal keeps it
        return sync_dirty("slow")

    assert in_parallel(lambda: sync_dirty("slow"), late) == [0, 2]
    assert crm.most == 1
