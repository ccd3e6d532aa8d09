"""RQ jobs: drain the inbox through the rules (queue "events"), push dirty contacts (queue "sync"),
and let scheduled events re-enter (RQ scheduler).

Jobs take primitive arguments and find their per-process resources (Redis, store, rules, CRM
clients) in `Runtime`, built once per worker process: durable-rules is compiled once, and the worker
class does not fork per job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from connectors.base.crm import CrmClient, PushResult
from connectors.hubspot.client import build_client as build_hubspot
from connectors.salesforce.client import build_client as build_salesforce
from connectors.sandbox.client import SandboxClient
from engine import timeline
from engine.config import Settings
from engine.errors import FatalSyncError, InvalidEvent, RetriableSyncError
from engine.model import BehaviorEvent, Vocabulary, format_time, parse_time
from engine.process import Step, step
from engine.rules.reload import RulesReloader
from engine.store import (
    LATENCY_BUCKETS,
    NO_STAGE,
    Commit,
    Contact,
    InboxEntry,
    Lease,
    Store,
    Synced,
    requeue,
    set_aside,
    write,
)

log = logging.getLogger("engine.pipeline")

EVENTS_QUEUE = "events"
SYNC_QUEUE = "sync"
MAX_JOB_SECONDS = 50.0
"""A drain job hands over to a fresh job after this long, so no job runs into RQ's timeout."""
SLICE_SECONDS = 0.25
"""A drain or sync job that has run this long hands over to a fresh job of its kind (at the back
of its queue) when other work waits for this process: the other queue's, or another CRM's push.
With the worker taking its queues in turn, steady traffic never starves the sync, a backlog of
pushes holds events back about a slice at most, and one CRM's backlog never holds another's."""
HELPER_EVERY_SECONDS = 1.0
"""A drain job that reads a full batch invites a helper job at most this often: with several
workers, one more joins each second while a backlog lasts; with one, a helper that finds the
inbox empty costs a few milliseconds."""
LINGER_SECONDS = 1.0
"""A drain job of a worker that serves only the events queue waits this long on an empty inbox
before it ends, keeping its "on its way" flag: under steady traffic, accepts then enqueue nothing
and one job takes batch after batch, instead of an RQ job (and its enqueue in the web) per event."""
BUDGET_POLL_SECONDS = 0.05
"""A sync job waiting for its CRM's rate limit looks this often whether other work could use the
worker instead; it never sleeps inside a push while another CRM or the inbox has work."""
SYNC_FLAG_SECONDS = 5.0
"""A sync job renews its CRM's "on its way" flag for this long at each batch: a killed job's flag
lapses soon, then the next change or the workers' sweep sends another job."""
SYNC_LEASE_SECONDS = 10.0
"""At most one job pushes to a CRM at a time: two at once would each read what the CRM holds and
both create a record it lacked (a duplicate Salesforce lead), or record an older push as synced
after a newer one. A sync job holds a Lease on the CRM, which frees up this long after a killed
worker stopped renewing it. (The CRMs' rate limits, not the number of pushers, bound sync.)"""
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """What jobs in one process share. `Runtime.current()` is set up by the worker (or tests)."""

    settings: Settings
    redis: redis.Redis
    store: Store
    rules: RulesReloader
    crms: dict[str, CrmClient]
    clock: Clock = utcnow
    queues: tuple[str, ...] = (EVENTS_QUEUE, SYNC_QUEUE)
    """The queues this process works on: a job hands over to the other queue only when this
    process also serves that one (SLICE_SECONDS)."""
    built_for: dict[str, Any] = field(default_factory=dict)
    """CRM name -> the (mapping, vocabulary) its client was built from; empty when the clients
    were handed in (tests), which are then kept whatever the rules say."""

    _current: Runtime | None = None

    @classmethod
    def install(cls, runtime: Runtime) -> Runtime:
        cls._current = runtime
        return runtime

    @classmethod
    def current(cls) -> Runtime:
        if cls._current is None:
            raise RuntimeError("no pipeline runtime in this process (run `lifecycle worker`)")
        return cls._current

    def queue(self, name: str) -> Queue:
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    @property
    def consumer(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def crm(self, name: str) -> CrmClient | None:
        """The client for `name`, rebuilt when a rules reload changed its `crm:` mapping or the
        vocabulary (the reload has checked the new mapping with the same parser)."""
        client = self.crms.get(name)
        if client is None or name not in self.built_for:
            return client
        rules = self.rules.current()
        wanted = (rules.ruleset.crm.get(name), rules.vocab)
        if wanted == self.built_for[name]:
            return client
        fresh = _build_crm(name, self.settings, self.redis, self.store, rules, self.clock)
        log.info("rules %s: the crm.%s mapping changed; client rebuilt", rules.version, name)
        self.crms[name], self.built_for[name] = fresh, wanted
        with contextlib.suppress(Exception):
            getattr(client, "close", lambda: None)()
        return fresh


def build_runtime(settings: Settings, client: redis.Redis, clock: Clock = utcnow) -> Runtime:
    """Everything a worker process needs. A bad CRM configuration (a missing token, a mapping to
    an unknown stage) stops the worker at start with a message naming it."""
    store = Store(client, settings.idempotency_days)
    reloader = RulesReloader(settings.rules_file)
    rules = reloader.current()
    crms: dict[str, CrmClient] = {}
    built_for: dict[str, Any] = {}
    for name in settings.crm_targets:
        crms[name] = _build_crm(name, settings, client, store, rules, clock)
        built_for[name] = (rules.ruleset.crm.get(name), rules.vocab)
    return Runtime(settings, client, store, reloader, crms, clock, built_for=built_for)


def _build_crm(
    name: str, settings: Settings, client: redis.Redis, store: Store, rules: Any, clock: Clock
) -> CrmClient:
    mapping = rules.ruleset.crm.get(name)
    if name == "hubspot":
        return build_hubspot(settings, client, mapping, rules.vocab)
    if name == "salesforce":
        return build_salesforce(settings, client, mapping, vocab=rules.vocab)
    return SandboxClient(lambda states: store.record_sandbox(states, clock()))


# --- enqueueing ----------------------------------------------------------------------------------


def wake_events(runtime: Runtime, helper: bool = False) -> None:
    runtime.queue(EVENTS_QUEUE).enqueue(drain_events, helper, result_ttl=0, failure_ttl=86_400)


def wake_sync(runtime: Runtime, crm: str) -> None:
    runtime.queue(SYNC_QUEUE).enqueue(sync_dirty, crm, result_ttl=0, failure_ttl=86_400)


def wake_sync_for(client: redis.Redis, crm: str) -> None:
    """Enqueue a sync job from outside a worker (the CLI, the dashboard)."""
    Queue(SYNC_QUEUE, connection=client, serializer=JSONSerializer).enqueue(
        sync_dirty, crm, result_ttl=0, failure_ttl=86_400
    )


def sweep(runtime: Runtime) -> None:
    """Enqueue whatever work is waiting without a job on its way (after a crash, at start-up)."""
    store = runtime.store
    if (store.backlog(most=1) or store.pending_count()) and store.set_wake("events"):
        wake_events(runtime)
    for crm in runtime.crms:
        if store.dirty_count(crm) and store.set_wake(f"sync:{crm}"):
            wake_sync(runtime, crm)


# --- events --------------------------------------------------------------------------------------


def drain_events(helper: bool = False) -> int:
    """Process the inbox in batches until it is empty; returns how many events were handled.

    The job the "events" flag sent keeps that flag while it runs: what is accepted meanwhile is
    its work, and accepts enqueue nothing. While the inbox holds more than a batch it invites a
    helper job now and then, so idle workers join in; helpers leave the flag alone."""
    runtime = Runtime.current()
    store, started, handled = runtime.store, time.monotonic(), 0
    batch = runtime.settings.event_batch_size
    lingers = runtime.queues == (EVENTS_QUEUE,) and not helper
    holding = not helper
    while True:
        if holding:
            store.keep_wake("events", LINGER_SECONDS + 4)
        elif not helper:
            store.clear_wake("events")  # before reading: an accept after this enqueues a new job
        entries = store.read_inbox(
            runtime.consumer,
            batch,
            runtime.settings.reclaim_after_seconds,
            block_ms=int(LINGER_SECONDS * 1000) if lingers and holding else 0,
        )
        if not entries:
            if holding:
                holding = False  # clear the flag, then read once more: nothing is left behind
                continue
            return handled
        if len(entries) == batch and store.set_wake("events:helper", HELPER_EVERY_SECONDS):
            wake_events(runtime, helper=True)
        done = process_batch(runtime, entries)
        handled += done
        if done == 0:
            # Every event read belongs to contacts another worker holds: come back shortly
            # rather than spin on them.
            runtime.queue(EVENTS_QUEUE).enqueue_in(
                timedelta(seconds=1), drain_events, result_ttl=0, failure_ttl=86_400
            )
            return handled
        elapsed = time.monotonic() - started
        if elapsed > MAX_JOB_SECONDS or (elapsed > SLICE_SECONDS and _sync_waiting(runtime)):
            if holding or store.set_wake("events"):  # the job enqueued takes over the flag
                wake_events(runtime)
            return handled


def _others_waiting(runtime: Runtime, crm: str) -> bool:
    """A push to another CRM could go now, or this process also applies events and some wait in
    the inbox."""
    if _push_ready(runtime, besides=crm):
        return True
    return EVENTS_QUEUE in runtime.queues and bool(runtime.store.backlog(most=1))


def _sync_waiting(runtime: Runtime) -> bool:
    """This process also pushes, and a push to some CRM could go now (a sync job is queued for
    it)."""
    return SYNC_QUEUE in runtime.queues and _push_ready(runtime)


def _push_ready(runtime: Runtime, besides: str | None = None) -> bool:
    """Some CRM has contacts due for a push and the rate limit to send one now. A CRM whose
    budget is spent is not work for this process yet: handing over to it would only have its
    job wait (or hand back)."""
    now = runtime.clock()
    for crm in runtime.crms:
        if crm != besides and runtime.store.dirty(crm, 1, now):
            client = runtime.crm(crm)
            if client is not None and client.ready_in() <= 0:
                return True
    return False


def process_batch(runtime: Runtime, entries: Sequence[InboxEntry]) -> int:
    store, now = runtime.store, runtime.clock()
    unreadable = [e for e in entries if e.event is None]
    if unreadable:
        set_aside(store, unreadable, now)
    entries, parked = _resolve(runtime, [e for e in entries if e.event is not None])
    by_contact: dict[str, list[InboxEntry]] = defaultdict(list)
    for entry in entries:
        if entry.event is not None:
            by_contact[entry.event.email].append(entry)
    tokens = store.lock(by_contact)
    busy = [e for email, group in by_contact.items() if email not in tokens for e in group]
    mine = {email: by_contact[email] for email in tokens}
    try:
        commit, scheduled = _apply(runtime, mine, tokens, now)
        write(store, commit, extra=lambda pipe: _schedule(runtime, scheduled, pipe))
    except redis.WatchError:
        log.warning("contact lock lost mid-batch; %d event(s) go back to the inbox", len(entries))
        store.unlock(tokens)
        busy.extend(e for group in mine.values() for e in group)
        commit = Commit(tokens)
    except Exception:
        store.unlock(tokens)
        raise
    requeue(store, busy)  # another worker holds these contacts: try again after it
    if commit.crm_ids and store.unpark({(crm, i) for _, crm, i in commit.crm_ids}):
        store.set_wake("events")  # this job's next read picks them up
    _wake_sync(runtime, commit)
    return len(entries) - len(busy) + parked + len(unreadable)


def _look_up(runtime: Runtime, refs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Ask the CRMs about record ids nobody has told us of yet (a failure leaves them parked)."""
    found: dict[tuple[str, str], str] = {}
    for crm in {crm for crm, _ in refs}:
        client = runtime.crm(crm)
        if client is None:
            continue
        ids = sorted({crm_id for name, crm_id in refs if name == crm})
        try:
            emails = client.emails_for(ids)
        except (RetriableSyncError, FatalSyncError) as exc:
            log.warning("could not look up %d %s record(s): %s", len(ids), crm, exc.detail)
            continue
        found.update({(crm, crm_id): email.strip().lower() for crm_id, email in emails.items()})
    return found


def _resolve(runtime: Runtime, entries: list[InboxEntry]) -> tuple[list[InboxEntry], int]:
    """Events that know only a CRM record id get the contact's email from the ids learned so far;
    the rest wait (parked) until that id is learned. Returns (usable entries, how many parked)."""
    pending = [e for e in entries if not e.event.resolved]  # type: ignore[union-attr]
    if not pending:
        return entries, 0
    refs = [(e.event.crm, e.event.crm_id) for e in pending]  # type: ignore[union-attr]
    found = runtime.store.crm_emails(refs)
    found.update(_look_up(runtime, [ref for ref in refs if ref not in found]))
    usable, waiting = [], []
    for entry in entries:
        event = entry.event
        assert event is not None
        if event.resolved:
            usable.append(entry)
        elif (email := found.get((event.crm, event.crm_id))) is not None:  # type: ignore[arg-type]
            usable.append(replace(entry, event=replace(event, email=email), looked_up=True))
        else:
            waiting.append(entry)
    if waiting:
        runtime.store.park(waiting)
    return usable, len(waiting)


def _apply(
    runtime: Runtime, mine: dict[str, list[InboxEntry]], tokens: dict[str, str], now: datetime
) -> tuple[Commit, list[BehaviorEvent]]:
    store, rules = runtime.store, runtime.rules.current()
    contacts = store.load(list(mine))
    ids = [e.event.id for group in mine.values() for e in group]  # type: ignore[union-attr]
    done = store.done(ids)
    commit, scheduled = Commit(tokens, now=now.timestamp()), []
    for email, group in mine.items():
        contact = contacts[email]
        for entry in group:
            commit.acks.append(entry.entry_id)
            event = entry.event
            assert event is not None
            if event.id in done:
                continue  # a redelivery of an event already applied: acknowledge only
            done.add(event.id)
            result = step(rules, contact.state, event)
            _learn_profile(contact, event)
            _account(commit, contact, result, rules.vocab, runtime.crms)
            commit.timeline.setdefault(email, []).append(_entry_json(result, now))
            _measure(commit, result, entry, now)
            commit.done.append(event.id)
            if event.crm and event.crm_id and not entry.looked_up:
                # learned only from events that carried both: a record id resolved through
                # another record (a deal) must not overwrite the contact's own id
                commit.crm_ids.add((email, event.crm, event.crm_id))
            scheduled.extend(s.event for s in result.scheduled)
        commit.contacts[email] = contact
    return commit, scheduled


def _account(
    commit: Commit, contact: Contact, result: Step, vocab: Vocabulary, crms: dict[str, CrmClient]
) -> None:
    """Funnel, status and rule counters, and dirty marks, for one applied event."""
    before, after, event = result.before, result.after, result.event
    email = before.email
    if contact.new:
        contact.new = False
        contact.first_seen_at = event.occurred_at
        commit.new_contacts[email] = event.occurred_at.timestamp()
        commit.counters["funnel:current", NO_STAGE] += 1
    first_seen = contact.first_seen_at or event.occurred_at
    if after.stage != before.stage:
        commit.counters["funnel:current", before.stage or NO_STAGE] -= 1
        commit.counters["funnel:current", after.stage] += 1
        for stage in vocab.stages[vocab.rank(before.stage) + 1 : vocab.rank(after.stage) + 1]:
            commit.counters["funnel:reached", stage] += 1
            hours = max(0.0, (event.occurred_at - first_seen).total_seconds() / 3600)
            commit.hours.append((stage, email, round(hours, 3)))
            contact.reached[stage] = format_time(event.occurred_at)
    if after.status != before.status:
        if before.status:
            commit.counters["statuses", before.status] -= 1
        commit.counters["statuses", after.status] += 1
    for rule in result.fired:
        commit.counters["rules:fired", rule] += 1
    if after.version != before.version:
        for crm in crms:
            commit.dirty.setdefault(crm, set()).add(email)
    contact.state = after


_PROFILE_KEYS = {
    "first_name": "first_name", "firstname": "first_name", "given_name": "first_name",
    "last_name": "last_name", "lastname": "last_name", "family_name": "last_name",
    "surname": "last_name", "company": "company", "company_name": "company",
    "organization": "company", "phone": "phone", "phone_number": "phone",
}  # fmt: skip


def _learn_profile(contact: Contact, event: BehaviorEvent) -> None:
    """Names and company from what the event carried (top level or form `fields`): the latest
    non-empty value wins."""
    sources = [event.properties, event.properties.get("fields")]
    for values in sources:
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            name = _PROFILE_KEYS.get(str(key).strip().lower().replace(" ", "_"))
            if name and isinstance(value, str) and value.strip():
                contact.profile[name] = value.strip()[:200]


def _measure(commit: Commit, result: Step, entry: InboxEntry, now: datetime) -> None:
    counters = commit.counters
    counters["metrics", "processed|events"] += 1
    for change in result.changes:
        counters["metrics", f"changes|{change.outcome}"] += 1
    try:
        latency = max(0.0, (now - parse_time(entry.raw["at"])).total_seconds())
    except (KeyError, InvalidEvent):
        return
    counters["metrics", "latency_count|accept_to_commit"] += 1
    counters["metrics", "latency_sum_ms|accept_to_commit"] += round(latency * 1000)
    for bound in LATENCY_BUCKETS:
        if latency <= bound:
            counters["metrics", f"latency_le|{bound}"] += 1


def _entry_json(result: Step, now: datetime) -> str:
    return json.dumps(timeline.entry(result, now))


def _schedule(runtime: Runtime, events: Sequence[BehaviorEvent], pipe: Any) -> None:
    queue = runtime.queue(EVENTS_QUEUE)
    for event in events:
        queue.enqueue_at(
            event.occurred_at,
            fire_scheduled,
            event.to_dict(),
            job_id=event.id,
            result_ttl=0,
            failure_ttl=86_400,
            pipeline=pipe,
        )


def fire_scheduled(event: dict[str, Any]) -> str:
    """A delayed event is due: it enters the inbox like any other (a repeat is a duplicate)."""
    runtime = Runtime.current()
    accepted = runtime.store.accept([BehaviorEvent.from_dict(event)], runtime.clock(), "schedule")
    if accepted.wake:
        wake_events(runtime)
    return "accepted" if accepted.accepted else "duplicate"


def _wake_sync(runtime: Runtime, commit: Commit) -> None:
    for crm, emails in commit.dirty.items():
        if emails and runtime.store.set_wake(f"sync:{crm}"):
            wake_sync(runtime, crm)


# --- sync ----------------------------------------------------------------------------------------


def sync_dirty(crm: str) -> int:
    """Push every dirty contact's current state to `crm`, in batches; returns contacts pushed.

    Like a drain job, the job keeps its CRM's flag while it runs (changes meanwhile enqueue
    nothing: they are its work) and clears it only once nothing is due."""
    runtime = Runtime.current()
    store, client, flag = runtime.store, runtime.crm(crm), f"sync:{crm}"
    if client is None:
        log.error("sync for %s requested but that CRM is not configured in this worker", crm)
        return 0
    store.keep_wake(flag, SYNC_FLAG_SECONDS)  # first: a job killed from here on holds it briefly
    lease = Lease(runtime.redis, flag, SYNC_LEASE_SECONDS)
    if not lease.acquire():
        # Another job is pushing to this CRM and renews the flag until nothing is due. Should
        # its worker have died, the flag lapses with its lease: then the next change, or the
        # workers' sweep, sends a job that can push.
        store.keep_wake(flag, max(0.1, lease.remaining()))
        return 0
    try:
        pushed, more = _push_dirty(runtime, client, crm, lease)
    finally:
        lease.release()
    if more:
        store.keep_wake(flag, SYNC_FLAG_SECONDS)  # handed on to the job enqueued here
        wake_sync(runtime, crm)
        return pushed
    store.clear_wake(flag)
    if store.dirty(crm, 1, runtime.clock()) and store.set_wake(flag):
        wake_sync(runtime, crm)  # dirtied after this job's last look
    return pushed


def _push_dirty(runtime: Runtime, client: CrmClient, crm: str, lease: Lease) -> tuple[int, bool]:
    """Push batches while the lease is held; (contacts pushed, whether work is left for a fresh
    job)."""
    store = runtime.store
    pushed, started = 0, time.monotonic()
    while lease.held:
        store.keep_wake(f"sync:{crm}", SYNC_FLAG_SECONDS)
        emails = store.dirty(crm, client.batch_size, runtime.clock())
        if not emails:
            _retry_later(runtime, crm)
            return pushed, False
        wait = client.ready_in()
        if wait > 0:  # the budget is spent for now: what else could this worker do meanwhile?
            if time.monotonic() - started > MAX_JOB_SECONDS or _others_waiting(runtime, crm):
                return pushed, True
            time.sleep(min(wait, BUDGET_POLL_SECONDS))  # more contacts join the next batch
            continue
        contacts = store.load(emails)
        states = [c.state for c in contacts.values()]
        profiles = {email: c.profile for email, c in contacts.items()}
        pushes = _push(client, store, crm, states, profiles)
        now = runtime.clock()
        synced = [
            Synced(state, result.crm_id, result.seen)
            for state, result in zip(states, pushes, strict=True)
            if result.ok
        ]
        store.mark_synced(crm, synced, now)
        for state, result in zip(states, pushes, strict=True):
            if not result.ok:
                error = result.error or "unknown error"
                store.mark_failed(crm, state.email, error, not result.retryable, now)
        pushed += len(states)
        elapsed = time.monotonic() - started
        if elapsed > MAX_JOB_SECONDS or (elapsed > SLICE_SECONDS and _others_waiting(runtime, crm)):
            return pushed, True
    log.warning("sync lease for %s lapsed (this worker stalled); leaving the rest to others", crm)
    return pushed, True


def _push(
    client: CrmClient, store: Store, crm: str, states: list, profiles: dict
) -> list[PushResult]:
    """One batch through the client; a failure of the whole batch becomes one result each."""
    known = store.known_crm_ids(crm, [s.email for s in states])
    try:
        return client.push(states, known, profiles)
    except RetriableSyncError as exc:
        return [PushResult(s.email, ok=False, retryable=True, error=exc.detail) for s in states]
    except FatalSyncError as exc:
        return [PushResult(s.email, ok=False, error=exc.detail) for s in states]


def _retry_later(runtime: Runtime, crm: str) -> None:
    """Contacts backing off after a retryable failure: come back when the first one is due."""
    due = runtime.store.next_retry(crm)
    if due is not None:
        delay = max(1.0, due - runtime.clock().timestamp())
        runtime.queue(SYNC_QUEUE).enqueue_in(
            timedelta(seconds=delay), sync_dirty, crm, result_ttl=0, failure_ttl=86_400
        )
