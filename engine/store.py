"""The only module that keeps engine state in Redis.

Keys (all under `lc:`):

    inbox                 stream of accepted events; consumer group "events" (also the event log)
    seen:<event id>       idempotency at accept (SET NX, expires after idempotency_days)
    done:<event id>       the event changed state (written in the same transaction as the change)
    contact:<email>       the contact: state, first seen, when each stage was reached (JSON)
    timeline:<email>      list of timeline entries, oldest first (JSON)
    contacts              sorted set of emails by first-seen time
    funnel:current        hash stage -> contacts now at it ("_none" for no stage yet)
    funnel:reached        hash stage -> contacts ever at or past it
    funnel:hours:<stage>  sorted set email -> hours from first seen to reaching the stage
    statuses              hash status -> contacts holding it now
    rules:fired           hash rule -> times fired
    dirty:<crm>           sorted set email -> when it first needed a push to that CRM
    sync:<crm>:<email>    hash: synced_version, state (synced|pending|dead_letter), error
    lock:<email>          per-contact lock (token), so one contact's events apply one at a time
    lease:<name>          a Lease (token): lease:sync:<crm> lets one job at a time push to a CRM
    crmid:<crm>:<id>      email of the contact a CRM knows by that record id (learned)
    crmids:<email>        hash crm -> record id
    unresolved:<crm>:<id> inbox entries waiting for that record id to be learned
    quarantine            stream of deliveries kept for inspection (unusable input)
    wake:<name>           "a job is on its way or running" flags: wake:events, wake:sync:<crm>;
                          wake:events:helper limits how often a drain job invites a helper
    crm:<crm>:api_usage   hash: the CRM org's API usage as the workers last saw it (for the web)

Accepting is one Lua call per delivery: idempotent, atomic, durable once it returns. Applying
events commits state, timeline, done markers, funnel counters, dirty marks, scheduled events and
the inbox acknowledgement in one MULTI/EXEC, fenced by the contact locks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from engine.errors import EngineError, InvalidEvent
from engine.model import BehaviorEvent, ContactState, format_time, parse_time

P = "lc:"
INBOX = P + "inbox"
GROUP = "events"
QUARANTINE = P + "quarantine"
CONTACTS = P + "contacts"
METRICS = P + "metrics"
"""hash of cluster-wide counters, "<name>|<label>" -> count (read by /metrics)"""
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NO_STAGE = "_none"
LOCK_MS = 10_000
"""A batch commits in well under a second; correctness never depends on this (every commit is
fenced by the lock token), only how long a dead worker's contacts wait."""
WAKE_SECONDS = 60
"""A wake flag outlives a lost job (a process killed between flag and enqueue) by at most this;
the workers' sweep also re-enqueues whatever work is waiting."""


class StoreUnavailable(EngineError):
    """Redis cannot be reached: nothing was kept; the sender should retry."""

    code = "store_unavailable"
    http_status = 503


_ACCEPT = """
-- KEYS: inbox, wake flag, metrics, one once:<value> key per one-time value, then one
--       seen:<id> key per event
-- ARGV: ttl seconds, accepted_at, wake flag ttl, channel, ignored, quarantined,
--       number of one-time values, then (id, source, event json) per event
local once = tonumber(ARGV[7])
for i = 4, 3 + once do redis.call('SET', KEYS[i], '1', 'EX', ARGV[1]) end
local first = 4 + once
local accepted, duplicates = {}, {}
for i = first, #KEYS do
  local a = 8 + (i - first) * 3
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[a + 2], 'src', ARGV[a + 1], 'at', ARGV[2])
    accepted[#accepted + 1] = ARGV[a]
  else
    duplicates[#duplicates + 1] = ARGV[a]
  end
end
local c = ARGV[4]
local counts = {accepted = #accepted, duplicate = #duplicates,  -- received is their sum
                ignored = tonumber(ARGV[5]), quarantined = tonumber(ARGV[6])}
for name, n in pairs(counts) do
  if n ~= 0 then redis.call('HINCRBY', KEYS[3], name .. '|' .. c, n) end
end
redis.call('XADD', KEYS[3] .. ':deliveries', 'MAXLEN', '~', 1000, '*', 'source', c,
           'at', ARGV[2], 'received', #KEYS - first + 1, 'accepted', #accepted,
           'duplicates', #duplicates, 'ignored', ARGV[5], 'quarantined', ARGV[6])
local wake = 0
if #accepted > 0 and redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then wake = 1 end
return {wake, accepted, duplicates}
"""

_SYNCED = """
-- KEYS: dirty set, sync record, contact, metrics
-- ARGV: email, pushed version, crm id, time, metrics field, crm name
local raw = redis.call('GET', KEYS[3])
local current = raw and cjson.decode(raw)['state']['version'] or -1
redis.call('HSET', KEYS[2], 'synced_version', ARGV[2], 'error', '', 'updated_at', ARGV[4],
           'attempts', 0)
redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[6], ARGV[3])
  redis.call('HSET', KEYS[2], 'crm_id', ARGV[3])
end
if tonumber(current) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], 'state', 'synced')
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True)
class Synced:
    """One contact's successful push: the state pushed, the CRM's record id, and what the CRM
    held that the push did not overwrite (e.g. a later stage set there)."""

    state: ContactState
    crm_id: str | None = None
    seen: str | None = None


@dataclass(frozen=True)
class Accepted:
    accepted: list[str]
    duplicates: list[str]
    wake: bool
    """True when the caller should enqueue a job to process the inbox (none is on its way)."""


@dataclass(frozen=True)
class InboxEntry:
    entry_id: str
    event: BehaviorEvent | None
    raw: dict[str, str]
    problem: str | None = None
    looked_up: bool = False
    """The email came from a CRM record id (so nothing new is learned from this event)."""


@dataclass
class Contact:
    """A contact as stored: its state plus what the funnel needs."""

    state: ContactState
    first_seen_at: datetime | None = None
    reached: dict[str, str] = field(default_factory=dict)
    """stage -> ISO time it was first reached."""
    profile: dict[str, str] = field(default_factory=dict)
    """What events told about the person (names, company), for CRMs that need them."""
    new: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "state": self.state.to_dict(),
                "first_seen_at": format_time(self.first_seen_at) if self.first_seen_at else None,
                "reached": self.reached,
                "profile": self.profile,
            }
        )

    @classmethod
    def from_json(cls, email: str, raw: str | None) -> Contact:
        if raw is None:
            return cls(ContactState(email), new=True)
        data = json.loads(raw)
        first = data.get("first_seen_at")
        return cls(
            ContactState.from_dict(data["state"]),
            parse_time(first) if first else None,
            dict(data.get("reached") or {}),
            dict(data.get("profile") or {}),
        )


def contact_key(email: str) -> str:
    return f"{P}contact:{email}"


def timeline_key(email: str) -> str:
    return f"{P}timeline:{email}"


def lock_key(email: str) -> str:
    return f"{P}lock:{email}"


def done_key(event_id: str) -> str:
    return f"{P}done:{event_id}"


def dirty_key(crm: str) -> str:
    return f"{P}dirty:{crm}"


def sync_key(crm: str, email: str) -> str:
    return f"{P}sync:{crm}:{email}"


def once_key(value: str) -> str:
    return f"{P}once:{value}"


def crmid_key(crm: str, crm_id: str) -> str:
    return f"{P}crmid:{crm}:{crm_id}"


def crmids_key(email: str) -> str:
    return f"{P}crmids:{email}"


def unresolved_key(crm: str, crm_id: str) -> str:
    return f"{P}unresolved:{crm}:{crm_id}"


_UNPARK = """
-- KEYS: inbox, then unresolved lists; returns how many entries went back to the inbox
local moved = 0
for i = 2, #KEYS do
  for _, raw in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
    local fields = cjson.decode(raw)
    local flat = {}
    for k, v in pairs(fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
    redis.call('XADD', KEYS[1], '*', unpack(flat))
    moved = moved + 1
  end
  redis.call('DEL', KEYS[i])
end
return moved
"""


def wake_key(name: str) -> str:
    return f"{P}wake:{name}"


class DedicatedScript:
    """A Lua script run on a connection each thread keeps for it alone.

    Accepting is the hot path of every webhook, and redis-py's per-command machinery (pool
    checkout and release, retry wrapper, observability hooks) costs more client CPU than the
    call itself: ~130 µs per script call against ~45 µs sending and reading on a kept connection
    (redis-py 8.1, measured; see BENCHMARKS.md, ingest notes). Errors are redis-py's own.
    """

    def __init__(self, client: redis.Redis, source: str):
        self._pool = client.connection_pool
        self._script = client.register_script(source)
        self._local = threading.local()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return self._run(keys, args)
        except redis.ConnectionError:
            # A kept connection may have died while idle (Redis restarted): one fresh attempt.
            # Safe because the scripts run here are idempotent.
            return self._run(keys, args)

    def _run(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        conn = self._connection()
        try:
            try:
                conn.send_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                return conn.read_response()
            except redis.exceptions.NoScriptError:  # Redis restarted with an empty script cache
                conn.send_command("EVAL", self._script.script, len(keys), *keys, *args)
                return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            with contextlib.suppress(Exception):
                conn.disconnect()  # a reply may still be on its way; the next call reconnects
            raise

    def _connection(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child
            local.conn, local.pid = self._pool.make_connection(), os.getpid()
        return local.conn


class Store:
    """State in Redis. Every Redis error surfaces as StoreUnavailable."""

    def __init__(self, client: redis.Redis, idempotency_days: int = 30):
        self.redis = client
        self.ttl = idempotency_days * 86_400
        self._accept = DedicatedScript(client, _ACCEPT)
        self._release = client.register_script(_RELEASE)
        self._synced = client.register_script(_SYNCED)
        self._unpark = client.register_script(_UNPARK)
        self._group_ready = False

    # --- health -------------------------------------------------------------------------------

    def ping(self) -> bool:
        with unavailable_as_error():
            return bool(self.redis.ping())

    # --- accept -------------------------------------------------------------------------------

    def accept(
        self,
        events: Sequence[BehaviorEvent],
        now: datetime,
        channel: str = "api",
        ignored: int = 0,
        quarantined: int = 0,
        once: Sequence[str] = (),
    ) -> Accepted:
        """Make events durable and idempotent. Only after this returns may the caller answer 2xx.
        `channel` (the webhook source, or "api") and the counts feed the metrics; `once` values
        (replay tokens) are remembered in the same atomic step. An event dated after `now` is
        kept dated `now` (BehaviorEvent.not_after)."""
        events = [event.not_after(now) for event in events]
        keys = [
            INBOX,
            wake_key("events"),
            METRICS,
            *(once_key(value) for value in once),
            *(f"{P}seen:{e.id}" for e in events),
        ]
        args: list[Any] = [
            self.ttl, format_time(now), WAKE_SECONDS, channel, ignored, quarantined, len(once)
        ]  # fmt: skip
        for event in events:
            args += [event.id, event.source, json.dumps(event.to_dict())]
        with unavailable_as_error():
            wake, accepted, duplicates = self._accept(keys=keys, args=args)
        return Accepted(_texts(accepted), _texts(duplicates), bool(wake))

    def quarantine(
        self,
        source: str,
        reason: str,
        body: bytes,
        headers: dict[str, str],
        now: datetime,
        url: str = "",
    ) -> str:
        """Keep a delivery we cannot use, in full, for inspection and replay."""
        fields = {
            "source": source,
            "reason": reason,
            "received_at": format_time(now),
            "url": url,
            "headers": json.dumps(headers),
            "body": body,
        }
        with unavailable_as_error():
            return _text(self.redis.xadd(QUARANTINE, fields))

    def recent_deliveries(self, count: int = 50) -> list[dict[str, str]]:
        """The last deliveries and what became of them (kept: the last ~1,000)."""
        with unavailable_as_error():
            entries = self.redis.xrevrange(f"{METRICS}:deliveries", count=count)
        return [{"id": _text(i), **{_text(k): _text(v) for k, v in f.items()}} for i, f in entries]

    def was_used(self, value: str) -> bool:
        """Whether an accepted delivery already carried this one-time value."""
        with unavailable_as_error():
            return bool(self.redis.exists(once_key(value)))

    def count(self, name: str, label: str, by: int = 1) -> None:
        """Bump a counter (an error answered, say); never fails the caller."""
        with contextlib.suppress(redis.RedisError):
            self.redis.hincrby(METRICS, f"{name}|{label}", by)

    def metrics(self) -> dict[str, int]:
        with unavailable_as_error():
            return {_text(k): int(float(v)) for k, v in self.redis.hgetall(METRICS).items()}

    def quarantined(self, count: int = 100, entry_id: str | None = None) -> list[dict[str, Any]]:
        """Kept deliveries, newest first (or the one `entry_id`); `body` stays bytes."""
        with unavailable_as_error():
            if entry_id:
                entries = self.redis.xrange(QUARANTINE, entry_id, entry_id)
            else:
                entries = self.redis.xrevrange(QUARANTINE, count=count)
        return [_quarantined(entry_id, fields) for entry_id, fields in entries]

    def release(self, entry_id: str) -> None:
        """A quarantined delivery that has been replayed successfully."""
        with unavailable_as_error():
            self.redis.xdel(QUARANTINE, entry_id)

    # --- the inbox, worker side --------------------------------------------------------------

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(INBOX, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def clear_wake(self, name: str) -> None:
        self.redis.delete(wake_key(name))

    def set_wake(self, name: str, seconds: float = WAKE_SECONDS) -> bool:
        """True when no job was on its way (the caller enqueues one)."""
        ttl = max(1, int(seconds * 1000))
        return bool(self.redis.set(wake_key(name), "1", nx=True, px=ttl))

    def keep_wake(self, name: str, seconds: float) -> None:
        """A job that runs on keeps its flag for `seconds` more: what is accepted meanwhile is its
        work. Short, so a killed job's flag soon stops keeping the sweep from sending another."""
        self.redis.set(wake_key(name), "1", px=max(1, int(seconds * 1000)))

    def read_inbox(
        self, consumer: str, count: int, reclaim_after: float, block_ms: int = 0
    ) -> list[InboxEntry]:
        """Events delivered to a worker that died are reclaimed first, then new ones are read,
        waiting up to `block_ms` for some when there are none."""
        self.ensure_group()
        reply = self.redis.xautoclaim(
            INBOX, GROUP, consumer, min_idle_time=int(reclaim_after * 1000), count=count
        )
        claimed = reply[1]  # Redis 7 adds a third element (deleted ids); 6.2 has two
        entries = [c for c in claimed if c and c[1]]
        if len(entries) < count:
            block = block_ms if not entries and block_ms > 0 else None
            fresh = self.redis.xreadgroup(
                GROUP, consumer, {INBOX: ">"}, count=count - len(entries), block=block
            )
            for _, items in fresh or []:
                entries.extend(items)
        return [_inbox_entry(entry_id, fields) for entry_id, fields in entries]

    def pending_count(self) -> int:
        self.ensure_group()
        return int(self.redis.xpending(INBOX, GROUP)["pending"])

    def backlog(self, most: int = 10_000) -> int:
        """Accepted events not yet delivered to any worker (counted up to `most`)."""
        self.ensure_group()
        for group in self.redis.xinfo_groups(INBOX):
            if _text(group["name"]) != GROUP:
                continue
            if group.get("lag") is not None:  # Redis 7
                return int(group["lag"])
            after = "(" + _text(group["last-delivered-id"])  # Redis 6.2 (the embedded one)
            return len(self.redis.xrange(INBOX, min=after, count=most))
        return 0

    # --- contacts -----------------------------------------------------------------------------

    def lock(self, emails: Iterable[str]) -> dict[str, str]:
        """Try to lock each contact; returns email -> token for those locked."""
        emails = list(emails)
        tokens = {email: secrets.token_hex(8) for email in emails}
        pipe = self.redis.pipeline(transaction=False)
        for email in emails:
            pipe.set(lock_key(email), tokens[email], nx=True, px=LOCK_MS)
        return {e: tokens[e] for e, ok in zip(emails, pipe.execute(), strict=True) if ok}

    def unlock(self, tokens: dict[str, str]) -> None:
        for email, token in tokens.items():
            self._release(keys=[lock_key(email)], args=[token])

    def load(self, emails: Sequence[str]) -> dict[str, Contact]:
        if not emails:
            return {}
        raw = self.redis.mget([contact_key(e) for e in emails])
        return {
            e: Contact.from_json(e, _text(r) if r else None)
            for e, r in zip(emails, raw, strict=True)
        }

    def emails_first_seen(
        self, since: float | None = None, until: float | None = None, most: int = 1000
    ) -> list[str]:
        """Emails of contacts first seen in [since, until) (epoch seconds), oldest first."""
        low = since if since is not None else "-inf"
        high = f"({until}" if until is not None else "+inf"
        with unavailable_as_error():
            return _texts(self.redis.zrangebyscore(CONTACTS, low, high, 0, most))

    def latest_emails(self, count: int) -> list[str]:
        """Emails of the contacts first seen last, newest first."""
        with unavailable_as_error():
            return _texts(self.redis.zrevrange(CONTACTS, 0, count - 1))

    def emails_containing(self, text: str, most: int) -> list[str]:
        """Up to `most` emails containing `text` (emails are stored lower-case)."""
        pattern = "*" + "".join("\\" + c if c in "*?[]\\" else c for c in text.lower()) + "*"
        found: list[str] = []
        with unavailable_as_error():
            for email, _ in self.redis.zscan_iter(CONTACTS, match=pattern, count=1000):
                found.append(_text(email))
                if len(found) >= most:
                    break
        return found

    def contact(self, email: str) -> Contact | None:
        with unavailable_as_error():
            raw = self.redis.get(contact_key(email))
        return Contact.from_json(email, _text(raw)) if raw else None

    def done(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        flags = self.redis.mget([done_key(i) for i in event_ids])
        return {i for i, flag in zip(event_ids, flags, strict=True) if flag}

    def crm_ids(self, email: str) -> dict[str, str]:
        with unavailable_as_error():
            raw = self.redis.hgetall(crmids_key(email))
        return {_text(k): _text(v) for k, v in raw.items()}

    def crm_emails(self, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Emails of contacts known by CRM record id (learned from earlier events and pushes)."""
        if not refs:
            return {}
        found = self.redis.mget([crmid_key(crm, crm_id) for crm, crm_id in refs])
        return {ref: _text(email) for ref, email in zip(refs, found, strict=True) if email}

    def park(self, entries: Sequence[InboxEntry]) -> None:
        """Events whose CRM record id is not known yet wait beside the inbox, one list per id."""
        with self.redis.pipeline(transaction=True) as pipe:
            for entry in entries:
                event = entry.event
                assert event is not None and event.crm and event.crm_id
                pipe.rpush(unresolved_key(event.crm, event.crm_id), json.dumps(entry.raw))
            pipe.xack(INBOX, GROUP, *(e.entry_id for e in entries))
            pipe.execute()

    def unpark(self, refs: Iterable[tuple[str, str]]) -> int:
        """Put events waiting for these record ids back in the inbox; returns how many."""
        keys = [unresolved_key(crm, crm_id) for crm, crm_id in refs]
        return int(self._unpark(keys=[INBOX, *keys])) if keys else 0

    def unresolved_count(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(f"{P}unresolved:*", count=1000))

    def timeline(self, email: str) -> list[dict[str, Any]]:
        with unavailable_as_error():
            return [json.loads(item) for item in self.redis.lrange(timeline_key(email), 0, -1)]

    def sync_records(self, email: str, crms: Sequence[str]) -> dict[str, dict[str, Any]]:
        with unavailable_as_error():
            pipe = self.redis.pipeline(transaction=False)
            for crm in crms:
                pipe.hgetall(sync_key(crm, email))
            rows = pipe.execute()
        return {
            crm: {_text(k): _text(v) for k, v in row.items()}
            for crm, row in zip(crms, rows, strict=True)
        }

    # --- sync ---------------------------------------------------------------------------------

    def dirty(self, crm: str, count: int, now: datetime) -> list[str]:
        """Contacts due for a push to `crm`, oldest first (those backing off wait their turn)."""
        due = self.redis.zrangebyscore(dirty_key(crm), "-inf", now.timestamp(), 0, count)
        return _texts(due)

    def known_crm_ids(self, crm: str, emails: Sequence[str]) -> dict[str, str]:
        """email -> record id for the contacts whose id in `crm` is known."""
        if not emails:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for email in emails:
            pipe.hget(crmids_key(email), crm)
        return {e: _text(i) for e, i in zip(emails, pipe.execute(), strict=True) if i}

    def dead_letters(self, crm: str) -> list[dict[str, str]]:
        with unavailable_as_error():
            emails = _texts(self.redis.zrange(f"{P}dead:{crm}", 0, -1))
            pipe = self.redis.pipeline(transaction=False)
            for email in emails:
                pipe.hgetall(sync_key(crm, email))
            rows = pipe.execute()
        return [
            {"email": e, **{_text(k): _text(v) for k, v in row.items()}}
            for e, row in zip(emails, rows, strict=True)
        ]

    def retry_dead_letter(self, crm: str, email: str, now: datetime) -> bool:
        """Put a dead letter back in line for a push (after someone fixed the cause)."""
        with unavailable_as_error(), self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(f"{P}dead:{crm}", email)
            pipe.zadd(dirty_key(crm), {email: now.timestamp()})
            pipe.hset(sync_key(crm, email), mapping={"state": "pending", "attempts": 0})
            removed, *_ = pipe.execute()
        return bool(removed)

    def next_retry(self, crm: str) -> float | None:
        first = self.redis.zrange(dirty_key(crm), 0, 0, withscores=True)
        return first[0][1] if first else None

    def dirty_count(self, crm: str) -> int:
        return int(self.redis.zcard(dirty_key(crm)))

    def mark_synced(self, crm: str, pushed: Sequence[Synced], now: datetime) -> list[bool]:
        """Record successful pushes, one round trip for the batch; each contact leaves the dirty
        set unless it changed since (True where it left)."""
        if not pushed:
            return []
        with unavailable_as_error(), self.redis.pipeline(transaction=False) as pipe:
            for item in pushed:
                email, crm_id = item.state.email, item.crm_id or ""
                keys = [
                    dirty_key(crm),
                    sync_key(crm, email),
                    contact_key(email),
                    METRICS,
                    crmid_key(crm, crm_id),
                    crmids_key(email),
                ]
                args = [email, item.state.version, crm_id, format_time(now), f"sync|{crm}|synced"]
                self._synced(keys=keys, args=[*args, crm], client=pipe)
            for item in pushed:
                if item.seen:  # what the CRM held that we did not overwrite
                    pipe.hset(sync_key(crm, item.state.email), "seen", item.seen)
            replies = pipe.execute()
        return [bool(reply) for reply in replies[: len(pushed)]]

    def mark_failed(self, crm: str, email: str, error: str, dead: bool, now: datetime) -> None:
        """A retryable failure stays dirty and backs off (doubling, at most an hour); a fatal one
        becomes a dead letter until an operator retries it."""
        key = sync_key(crm, email)
        attempts = int(self.redis.hincrby(key, "attempts", 1))
        record = {
            "error": error,
            "updated_at": format_time(now),
            "state": "dead_letter" if dead else "pending",
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.hincrby(METRICS, f"sync|{crm}|{'dead_letter' if dead else 'retry'}", 1)
            if dead:
                pipe.zrem(dirty_key(crm), email)
                pipe.zadd(f"{P}dead:{crm}", {email: now.timestamp()})
            else:
                backoff = min(3600.0, 2.0 ** min(attempts, 12))
                pipe.zadd(dirty_key(crm), {email: now.timestamp() + backoff}, xx=True)
            pipe.execute()

    def record_sandbox(self, states: Sequence[ContactState], now: datetime) -> None:
        """The sandbox CRM's memory: the last values pushed for each contact, and a log."""
        with self.redis.pipeline(transaction=False) as pipe:
            for state in states:
                pushed = {
                    "stage": state.stage or "",
                    "status": state.status or "",
                    "version": state.version,
                    "pushed_at": format_time(now),
                }
                pipe.hset(f"{P}sandbox:{state.email}", mapping=pushed)
                pipe.xadd(
                    f"{P}sandbox:log",
                    {"email": state.email, **pushed},
                    maxlen=100_000,
                    approximate=True,
                )
            pipe.execute()

    def sandbox_view(self, email: str) -> dict[str, str]:
        with unavailable_as_error():
            return {
                _text(k): _text(v) for k, v in self.redis.hgetall(f"{P}sandbox:{email}").items()
            }

    def record_api_usage(self, crm: str, usage: dict[str, str]) -> None:
        """What a CRM last said about the org's API allocation (the dashboard shows it)."""
        with unavailable_as_error():
            self.redis.hset(f"{P}crm:{crm}:api_usage", mapping=usage)

    def api_usage(self, crm: str) -> dict[str, str]:
        with unavailable_as_error():
            found = self.redis.hgetall(f"{P}crm:{crm}:api_usage")
        return {_text(k): _text(v) for k, v in found.items()}

    # --- funnel -------------------------------------------------------------------------------

    def funnel_counts(self, stages: Sequence[str]) -> dict[str, Any]:
        with unavailable_as_error():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(CONTACTS)
            pipe.hgetall(f"{P}funnel:current")
            pipe.hgetall(f"{P}funnel:reached")
            pipe.hgetall(f"{P}statuses")
            pipe.hgetall(f"{P}rules:fired")
            for stage in stages:
                pipe.zcard(f"{P}funnel:hours:{stage}")
            total, current, reached, statuses, fired, *sizes = pipe.execute()
            medians = self._medians(stages, sizes)
        return {
            "total_contacts": int(total),
            "current": _counts(current),
            "reached": _counts(reached),
            "statuses": _counts(statuses),
            "fired": _counts(fired),
            "median_hours": medians,
        }

    def _medians(self, stages: Sequence[str], sizes: Sequence[int]) -> dict[str, float | None]:
        pipe = self.redis.pipeline(transaction=False)
        for stage, size in zip(stages, sizes, strict=True):
            low, high = (size - 1) // 2, size // 2
            pipe.zrange(f"{P}funnel:hours:{stage}", low, high, withscores=True)
        medians: dict[str, float | None] = {}
        for stage, middle in zip(stages, pipe.execute(), strict=True):
            scores = [score for _, score in middle]
            medians[stage] = round(sum(scores) / len(scores), 2) if scores else None
        return medians


@dataclass
class Commit:
    """Everything one batch writes, gathered by the pipeline and written in one transaction."""

    tokens: dict[str, str]
    contacts: dict[str, Contact] = field(default_factory=dict)
    timeline: dict[str, list[str]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(hash key under lc:, field) -> increment, summed over the batch"""
    hours: list[tuple[str, str, float]] = field(default_factory=list)
    """(stage, email, hours to reach)"""
    dirty: dict[str, set[str]] = field(default_factory=dict)
    new_contacts: dict[str, float] = field(default_factory=dict)
    crm_ids: set[tuple[str, str, str]] = field(default_factory=set)
    """(email, crm, record id) learned from events that carried both"""
    now: float = 0.0
    """Processing time (epoch seconds): when dirty contacts became due for a push."""


def write(store: Store, commit: Commit, extra: Any = None) -> None:
    """Write a batch atomically, only if every lock is still ours. `extra(pipe)` may add commands
    (RQ scheduled jobs) to the same transaction. Raises redis.WatchError when a lock was lost."""
    keys = [lock_key(email) for email in commit.tokens]
    with store.redis.pipeline(transaction=True) as pipe:
        if keys:
            pipe.watch(*keys)
            held = pipe.mget(keys)
            if [_text(h) if h else None for h in held] != list(commit.tokens.values()):
                pipe.reset()
                raise redis.WatchError("a contact lock was lost before commit")
        pipe.multi()
        _write_contacts(pipe, store, commit)
        if extra is not None:
            extra(pipe)
        if commit.acks:
            pipe.xack(INBOX, GROUP, *commit.acks)
        for key in keys:
            pipe.delete(key)
        pipe.execute()


def _write_contacts(pipe: Any, store: Store, commit: Commit) -> None:
    for email, contact in commit.contacts.items():
        pipe.set(contact_key(email), contact.to_json())
    for email, entries in commit.timeline.items():
        if entries:
            pipe.rpush(timeline_key(email), *entries)
    for event_id in commit.done:
        pipe.set(done_key(event_id), "1", ex=store.ttl)
    if commit.new_contacts:
        pipe.zadd(CONTACTS, commit.new_contacts, nx=True)
    for (key, name), by in commit.counters.items():
        if by:
            pipe.hincrby(f"{P}{key}", name, by)
    for stage, email, hours in commit.hours:
        pipe.zadd(f"{P}funnel:hours:{stage}", {email: hours}, nx=True)
    for email, crm, crm_id in commit.crm_ids:
        pipe.set(crmid_key(crm, crm_id), email)
        pipe.hset(crmids_key(email), crm, crm_id)
    for crm, emails in commit.dirty.items():
        pipe.zadd(dirty_key(crm), dict.fromkeys(emails, commit.now), nx=True)
        for email in emails:
            pipe.hset(sync_key(crm, email), "state", "pending")


def requeue(store: Store, entries: Sequence[InboxEntry]) -> None:
    """Put entries back at the end of the inbox (a contact busy in another worker)."""
    if not entries:
        return
    with store.redis.pipeline(transaction=True) as pipe:
        for entry in entries:
            pipe.xadd(INBOX, entry.raw)
        pipe.xack(INBOX, GROUP, *(e.entry_id for e in entries))
        pipe.execute()


def set_aside(store: Store, entries: Sequence[InboxEntry], now: datetime) -> None:
    """An inbox entry that is no event (written by hand, corrupted): quarantine it, ack it."""
    with store.redis.pipeline(transaction=True) as pipe:
        for entry in entries:
            pipe.xadd(
                QUARANTINE,
                {
                    "source": entry.raw.get("src", "inbox"),
                    "reason": entry.problem or "unreadable inbox entry",
                    "received_at": format_time(now),
                    "headers": "{}",
                    "body": json.dumps(entry.raw),
                },
            )
        pipe.xack(INBOX, GROUP, *(e.entry_id for e in entries))
        pipe.execute()


class Lease:
    """At most one holder at a time for `name` (key lease:<name>). A thread renews it every third
    of `seconds` while held, so a live holder keeps it however long it works, and a killed one's
    lease frees up by itself after `seconds`."""

    def __init__(self, client: redis.Redis, name: str, seconds: float):
        self.client, self.key, self.token = client, f"{P}lease:{name}", secrets.token_hex(8)
        self.ttl_ms = max(1, int(seconds * 1000))
        self.held = False
        self._stop = threading.Event()
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        with unavailable_as_error():
            self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        if self.held:
            threading.Thread(target=self._renew, name=f"renew {self.key}", daemon=True).start()
        return self.held

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew_script(keys=[self.key], args=[self.token, self.ttl_ms]):
                    self.held = False
                    return
            except redis.RedisError:
                continue  # Redis away: try again; the lease lapses if it stays away too long

    def remaining(self) -> float:
        """Seconds until the current holder's lease lapses unless renewed (0: nobody holds it)."""
        with unavailable_as_error():
            return max(0, int(self.client.pttl(self.key))) / 1000

    def release(self) -> None:
        self._stop.set()
        if self.held:
            with contextlib.suppress(redis.RedisError):
                self._release_script(keys=[self.key], args=[self.token])
        self.held = False


class unavailable_as_error:
    """Context manager: Redis connection trouble becomes StoreUnavailable (HTTP 503)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and isinstance(exc, redis.TimeoutError):
            raise StoreUnavailable(
                "Redis did not answer in time; retry (a retry is safe: deliveries are deduplicated)"
            ) from exc
        if exc is not None and isinstance(exc, redis.ConnectionError):
            raise StoreUnavailable(f"Redis is unavailable ({type(exc).__name__})") from exc
        if exc is not None and isinstance(exc, redis.ResponseError) and "LOADING" in str(exc):
            raise StoreUnavailable("Redis is loading its data") from exc
        return False


def _inbox_entry(entry_id: Any, fields: dict[Any, Any]) -> InboxEntry:
    raw = {_text(k): _text(v) for k, v in fields.items()}
    try:
        event = BehaviorEvent.from_dict(json.loads(raw["e"]))
    except (KeyError, ValueError, InvalidEvent) as exc:
        return InboxEntry(_text(entry_id), None, raw, f"unreadable inbox entry: {exc}")
    return InboxEntry(_text(entry_id), event, raw)


def _quarantined(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": _text(entry_id)}
    for key, value in fields.items():
        name = _text(key)
        item[name] = value if name == "body" else _text(value)
    return item


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(values: Iterable[Any]) -> list[str]:
    return [_text(v) for v in values]


def _counts(raw: dict[Any, Any]) -> dict[str, int]:
    return {_text(k): int(v) for k, v in raw.items() if int(v)}
