"""Faults with real processes and a real Redis: a worker SIGKILLed mid-stream, Redis going away
under a running web service, a rules file replaced by an invalid one under a running worker.

Nothing is mocked: `lifecycle worker` and `lifecycle serve` run as subprocesses (see
tests/processes.py) against the test Redis or a private redis-server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.standard.inbound import signed_headers
from engine.rules import load as load_rules
from engine.store import GROUP, INBOX, LOCK_MS, WAKE_SECONDS, Store
from engine.web import create_app
from tests.processes import (
    REPO,
    Service,
    free_port,
    lifecycle_serve,
    lifecycle_worker,
    live_members,
    product_env,
    redis_server,
    redis_socket_url,
    wait_for,
)

TOKEN = "fault-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
RECLAIM_SECONDS = 3.0
"""LIFECYCLE_RECLAIM_SECONDS for these workers: a killed worker's deliveries go to another worker
after this; its contact locks expire after engine.store.LOCK_MS."""

COUNTING_RULES = """\
version: 1
events:
  tick: A test event; every one must be counted exactly once.
rules:
  - name: first-touch-subscribes
    when:
      contact.stage: {exists: false}
    then:
      - promote: subscriber
  - name: count-ticks
    when:
      event: tick
    then:
      - increment: ticks
  - name: tenth-tick-makes-lead
    when:
      event: tick
      contact.counters.ticks: {gte: 9}
    then:
      - promote: lead
"""


# --- fixtures ------------------------------------------------------------------------------------


class Processes:
    """Starts services and, whatever happens, stops them all and proves none is left."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[Service] = []

    def add(self, service: Service) -> Service:
        self.started.append(service)
        return service

    def worker(self, env: dict[str, str], name: str, *extra: str) -> Service:
        return self.add(lifecycle_worker(env, self.logs / f"{name}.log", *extra))

    def stop_all(self) -> None:
        errors = []
        for service in reversed(self.started):
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{service}: {exc}")
        left = [m for s in self.started for m in live_members(s.pgid)]
        assert not errors and not left, f"processes not stopped: {errors} {left}"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    registry = Processes(tmp_path)
    yield registry
    registry.stop_all()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path is limited to about 100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lcf-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tick(n: int, email: str, prefix: str = "ev") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{n:05d}",
        "type": "tick",
        "email": email,
        "occurred_at": (T0 + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "properties": {"n": n},
    }


def post_events(api: Any, events: list[dict[str, Any]], chunk: int = 100) -> None:
    """Through POST /api/events of a real app (Flask test client): durable accept + wake job."""
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        reply = api.post("/api/events", json=part, headers=AUTH)
        assert reply.status_code == 202, reply.get_data(as_text=True)
        assert reply.json["accepted"] == len(part), reply.json


def web_client(redis_url: str, rules_file: Path) -> Any:
    app = create_app({"redis_url": redis_url, "api_token": TOKEN, "rules_file": str(rules_file)})
    return app.test_client()


# --- 1. a worker killed with SIGKILL mid-stream ---------------------------------------------------

CONTACTS = 300
PER_CONTACT = 10
BLOCK = 20
"""Contacts come in blocks of 20 whose events interleave (200 events, one inbox batch): a worker
killed inside a batch strands one block's contacts (locked for 30 s), not the whole population."""


def kill_test_events() -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    events, by_contact, n = [], {}, 0
    for block in range(CONTACTS // BLOCK):
        for round_ in range(PER_CONTACT):
            for member in range(BLOCK):
                email = f"c{block * BLOCK + member:03d}@example.com"
                event = tick(n, email, prefix=f"k{round_}")
                events.append(event)
                by_contact.setdefault(email, set()).add(event["id"])
                n += 1
    return events, by_contact


def test_sigkilled_workers_lose_nothing_and_apply_nothing_twice(
    redis_url, redis_client, processes, tmp_path
):
    started = time.monotonic()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    events, by_contact = kill_test_events()
    total = len(events)
    store = Store(redis_client)
    post_events(web_client(redis_url, rules_file), events)
    assert store.backlog() == total and store.pending_count() == 0

    env = product_env(
        REDIS_URL=redis_url,
        RULES_FILE=str(rules_file),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        LIFECYCLE_RECLAIM_SECONDS=str(RECLAIM_SECONDS),
    )

    def applied() -> int:
        pipe = redis_client.pipeline(transaction=False)
        for email in by_contact:
            pipe.llen(f"lc:timeline:{email}")
        return sum(pipe.execute())

    def progress() -> dict[str, int]:
        return {
            "applied": applied(),
            "pending": store.pending_count(),
            "backlog": store.backlog(),
            "locks": len(list(redis_client.scan_iter("lc:lock:*"))),
        }

    def held_by(worker: Service) -> int:
        """Inbox entries delivered to this worker and not acknowledged (its consumer is
        "<host>:<pid>")."""
        consumers = redis_client.xpending(INBOX, GROUP).get("consumers") or []
        mine = [c for c in consumers if c["name"].decode().endswith(f":{worker.pid}")]
        return sum(int(c["pending"]) for c in mine)

    def frozen_inside_a_batch(worker: Service, target: int) -> bool:
        """Once `target` events are applied, freeze the worker (SIGSTOP) at whatever point it is
        and look: True when it holds a batch it has read and not acknowledged (it stays frozen
        there), else it goes on. Looking at a frozen worker cannot race with it, however slow
        the machine."""
        if not worker.alive():
            raise AssertionError(f"{worker} exited:\n{worker.log_tail()}")
        if applied() < target:
            return False
        os.kill(worker.pid, signal.SIGSTOP)
        if held_by(worker) > 0:
            return True
        os.kill(worker.pid, signal.SIGCONT)
        return False

    # Kill three workers in a row, each once it has applied some events and while it holds a
    # batch it has read but not acknowledged (read, locked, applying, committing: wherever the
    # SIGSTOP landed), at different depths of the stream.
    stranded, kills = 0, []
    for number, share in enumerate((0.2, 0.45, 0.7)):
        worker = processes.worker(env, f"worker-{number}")
        target = int(total * share)
        wait_for(
            lambda worker=worker, target=target: frozen_inside_a_batch(worker, target),
            30,
            f"worker {number} to hold a batch after at least {target} events were applied",
            progress,
            interval=0.001,
        )
        held = held_by(worker)
        worker.kill_hard()  # SIGKILL reaches a stopped process
        orphans = live_members(worker.pgid)
        after = progress()
        kills.append({**after, "held": held, "orphans": orphans})
        assert after["applied"] < total, f"kill {number} came too late: {after}"
        stranded = after["pending"]

    assert stranded > 0, f"no kill left events delivered but unacknowledged: {kills}"

    # A fresh worker finishes the stream and, after the reclaim window, the stranded batches.
    processes.worker(env, "worker-final")
    wait_for(
        lambda: store.pending_count() == 0 and store.backlog() == 0 and applied() >= total,
        RECLAIM_SECONDS + LOCK_MS / 1000 + 45,
        f"all {total} events applied and the inbox empty",
        progress,
        interval=0.25,
    )

    # Every accepted event applied exactly once, to its own contact.
    seen: Counter[str] = Counter()
    for email, expected in by_contact.items():
        ids = [entry["event_id"] for entry in store.timeline(email)]
        seen.update(ids)
        assert set(ids) == expected, (
            f"{email}: missing {sorted(expected - set(ids))}, foreign {sorted(set(ids) - expected)}"
        )
    twice = sorted(i for i, count in seen.items() if count > 1)
    assert not twice, f"{len(twice)} event(s) applied more than once, e.g. {twice[:5]}"
    assert sum(seen.values()) == total
    assert store.done([e["id"] for e in events]) == {e["id"] for e in events}

    # Counters make a double application visible even where the timeline would not.
    contacts = {email: store.contact(email) for email in by_contact}
    wrong = {
        email: (c.state.counters.get("ticks"), c.state.stage)
        for email, c in contacts.items()
        if c is None or c.state.counters.get("ticks") != PER_CONTACT or c.state.stage != "lead"
    }
    assert not wrong, f"contacts with a wrong counter or stage (ticks, stage): {wrong}"
    funnel = store.funnel_counts(["subscriber", "lead"])
    assert funnel["total_contacts"] == CONTACTS
    assert funnel["fired"]["count-ticks"] == total, funnel["fired"]
    assert funnel["current"] == {"lead": CONTACTS}, funnel["current"]
    assert (store.pending_count(), store.backlog()) == (0, 0)

    # The sandbox CRM ends with every contact's final state.
    def pushed_mismatches() -> dict[str, Any]:
        wrong = {}
        for email, contact in contacts.items():
            view = store.sandbox_view(email)
            state = contact.state
            want = {"stage": state.stage, "status": state.status or "", "version": state.version}
            got = {
                "stage": view.get("stage"),
                "status": view.get("status"),
                "version": int(view["version"]) if view.get("version") else None,
            }
            if got != want:
                wrong[email] = {"want": want, "got": got}
        return wrong

    wait_for(
        lambda: not pushed_mismatches() and not store.dirty_count("sandbox"),
        WAKE_SECONDS + 15,  # a worker killed holding a sync job it had just dequeued leaves the
        # "a job is on its way" flag behind: the sweep sends another once it expires
        "the sandbox CRM to hold every contact's final state",
        lambda: (store.dirty_count("sandbox"), list(pushed_mismatches().items())[:3]),
        interval=0.25,
    )
    elapsed = time.monotonic() - started
    print(f"kills at {kills}; all done in {elapsed:.1f} s")


def test_a_sigkilled_worker_leaves_no_process_behind(redis_url, redis_client, processes, tmp_path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    env = product_env(
        REDIS_URL=redis_url,
        RULES_FILE=str(rules_file),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
    )
    worker = processes.worker(env, "worker")
    deadline = time.monotonic() + 20
    while "Acquired scheduler lock" not in worker.log_text():
        if time.monotonic() > deadline or not worker.alive():
            pytest.fail(f"the worker never started its scheduler:\n{worker.log_tail()}")
        time.sleep(0.05)
    worker.kill_hard()
    wait_for(
        lambda: not live_members(worker.pgid),
        5,
        f"no process of the killed worker (pid {worker.pid}) left running",
        lambda: live_members(worker.pgid),
    )


# --- 2. Redis goes away under a running web service, and comes back ------------------------------


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any, float]:
    """(status, JSON body, seconds). A request that hangs fails the test after `timeout` s."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    except TimeoutError:
        raise AssertionError(f"{method} {url}: no answer within {timeout:.0f} s") from None
    elapsed = time.monotonic() - started
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, elapsed


def event_json(id_: str, type_: str = "content_downloaded", **props: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "type": type_,
        "email": "ann@example.com",
        "occurred_at": "2026-11-26T10:00:00Z",
        "properties": props,
    }


class WebOnPrivateRedis:
    """`lifecycle serve` (one gunicorn worker) on a redis-server of its own, over real HTTP."""

    def __init__(self, processes: Processes, data_dir: Path, tmp_path: Path):
        self.processes = processes
        self.data_dir = data_dir
        self.redis = processes.add(redis_server(data_dir, "redis-1"))
        self.url = redis_socket_url(data_dir)
        self.env = product_env(
            REDIS_URL=self.url,
            API_TOKEN=TOKEN,
            STANDARD_WEBHOOK_SECRET=SECRET,
            RULES_FILE=str(REPO / "rules.yaml"),
            CRM_TARGETS="sandbox",
            LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        )
        port = free_port()
        self.web = processes.add(lifecycle_serve(self.env, tmp_path / "web.log", port))
        self.base = f"http://127.0.0.1:{port}"

    def restart_redis(self) -> None:
        self.redis.stop()
        self.redis = self.processes.add(redis_server(self.data_dir, "redis-2"))

    def post_api(self, *ids: str, timeout: float = 10.0) -> tuple[int, Any, float]:
        headers = {**AUTH, "Content-Type": "application/json"}
        events = [event_json(i) for i in ids]
        return http("POST", f"{self.base}/api/events", events, headers, timeout)

    def post_hook(self, id_: str, timeout: float = 10.0) -> tuple[int, Any, float]:
        body = json.dumps(event_json(id_, "webinar_attended", webinar="w-1")).encode()
        headers = signed_headers(SECRET, f"msg-{id_}", body, datetime.now(UTC))
        return http("POST", f"{self.base}/webhooks/standard", body, headers, timeout)

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any, float]:
        return http("GET", f"{self.base}{path}", None, AUTH, timeout)


@pytest.fixture
def service(short_dir, processes, tmp_path) -> WebOnPrivateRedis:
    """short_dir is set up before processes, so the processes stop before it is removed."""
    return WebOnPrivateRedis(processes, short_dir / "redis", tmp_path)


def assert_unavailable(route: str, answer: tuple[int, Any, float], within: float) -> None:
    status, body, elapsed = answer
    assert status == 503, f"{route} with Redis unavailable: {status} {body}"
    assert isinstance(body, dict), f"{route}: not JSON: {body!r}"
    assert body.get("error") == "store_unavailable" and body.get("detail"), (route, body)
    assert elapsed < within, f"{route} took {elapsed:.1f} s to answer 503 (at most {within} s)"


def test_redis_outage_answers_503_and_the_same_web_process_recovers(service):
    web = service.web

    # Redis up: accepted.
    status, body, _ = service.post_api("before-1", "before-2")
    assert (status, body["accepted"]) == (202, 2), body
    status, body, _ = service.post_hook("before-hook")
    assert (status, body["accepted"]) == (202, 1), body

    # Redis down: every route that needs it answers 503 JSON, fast; never a 500, never a hang.
    service.redis.stop()
    outage = {
        "POST /api/events": service.post_api("during-1"),
        "POST /webhooks/standard": service.post_hook("during-hook"),
        "GET /healthz": service.get("/healthz"),
        "GET /api/contacts/<email>": service.get("/api/contacts/ann@example.com"),
        "GET /api/funnel": service.get("/api/funnel"),
    }
    for route, answer in outage.items():
        assert_unavailable(route, answer, within=3)
    assert outage["GET /healthz"][1].get("redis") == "unavailable"
    assert web.alive(), f"the web service died with Redis:\n{web.log_tail()}"

    # Redis back (same directory, append-only file): the same web process accepts again, and a
    # sender's retry of what got a 503 is new (nothing was kept).
    service.restart_redis()
    status, body, _ = service.post_api("during-1", "after-1")
    assert (status, body.get("accepted"), body.get("duplicates")) == (202, 2, 0), body
    status, body, _ = service.post_hook("during-hook")
    assert (status, body.get("accepted")) == (202, 1), body
    status, body, _ = service.get("/healthz")
    assert (status, body.get("status"), body.get("redis")) == (200, "ok", "ok"), body
    assert web.alive(), web.log_tail()

    # What was accepted before the outage survived it, and a worker processes everything.
    client = redis.Redis.from_url(service.url)
    try:
        assert client.info("persistence")["aof_enabled"] == 1
        store = Store(client)
        worker = service.processes.worker(service.env, "worker", "--burst")
        wait_for(
            lambda: not worker.alive(),
            60,
            "a burst worker to drain the inbox and exit",
            lambda: (store.pending_count(), store.backlog(), worker.log_tail()),
        )
        assert worker.process.returncode == 0, worker.log_tail()
        ids = [entry["event_id"] for entry in store.timeline("ann@example.com")]
    finally:
        client.close()
    expected = ["before-1", "before-2", "before-hook", "during-1", "after-1", "during-hook"]
    assert sorted(ids) == sorted(expected), f"timeline after the outage: {ids}"
    status, view, _ = service.get("/api/contacts/ann@example.com")
    assert status == 200, view
    assert view["stage"] == "lead" and len(view["timeline"]) == len(expected), view


SOCKET_TIMEOUT = 5.0
"""The web's Redis socket timeout (engine/web/services.py): a Redis that accepts no command
cannot be told from a slow one sooner."""


def test_a_frozen_redis_answers_503_within_one_socket_timeout(service):
    """Redis alive but not answering (SIGSTOP: a stuck host, a network partition)."""
    status, body, _ = service.post_api("before-freeze")
    assert status == 202, body
    os.kill(service.redis.pid, signal.SIGSTOP)
    try:
        within = SOCKET_TIMEOUT + 2
        assert_unavailable("POST /api/events", service.post_api("frozen-1", timeout=20), within)
        assert_unavailable("POST /webhooks/standard", service.post_hook("frozen-2", 20), within)
        assert_unavailable("GET /healthz", service.get("/healthz", timeout=20), within)
    finally:
        os.kill(service.redis.pid, signal.SIGCONT)
    # A command sent before the timeout may still run once Redis wakes up, so a 503 after a
    # timeout does not prove nothing was kept: the sender's retry is then a duplicate. Either
    # way each event is kept exactly once.
    status, body, _ = service.post_api("frozen-1", "frozen-2")
    assert status == 202 and body["accepted"] + body["duplicates"] == 2, body


# --- 3. the rules file replaced by an invalid one under a running worker --------------------------

BROKEN_YAML = "version: 1\nrules:\n  - name: oops\n    when: {event: tick\n    then: [\n"
UNKNOWN_STAGE = COUNTING_RULES.replace("promote: lead", "promote: leed")
NEW_RULES = COUNTING_RULES.replace("- increment: ticks", "- increment: {counter: ticks, by: 100}")


def test_an_invalid_rules_file_keeps_the_previous_rules_in_force(
    redis_url, redis_client, processes, tmp_path
):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(COUNTING_RULES)
    old = load_rules(rules_file).version
    store = Store(redis_client)
    api = web_client(redis_url, rules_file)
    env = product_env(
        REDIS_URL=redis_url,
        RULES_FILE=str(rules_file),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
    )
    worker = processes.worker(env, "worker")
    email = "rita@example.com"
    sent: list[str] = []

    def send_and_wait(count: int) -> list[dict[str, Any]]:
        """Post `count` events; return their timeline entries once the worker applied them."""
        batch = [tick(len(sent) + i, email) for i in range(count)]
        post_events(api, batch)
        sent.extend(e["id"] for e in batch)
        entries = wait_for(
            lambda: len(timeline := store.timeline(email)) >= len(sent) and timeline,
            20,
            f"{len(sent)} events in {email}'s timeline",
            lambda: (len(store.timeline(email)), worker.log_tail(5)),
        )
        assert [e["event_id"] for e in entries] == sent
        return entries[-count:]

    def versions(entries: list[dict[str, Any]]) -> set[str]:
        return {e["rules_version"] for e in entries}

    assert versions(send_and_wait(3)) == {old}

    # Invalid YAML, then valid YAML naming an unknown stage: each is refused, the old rules stay.
    for broken in (BROKEN_YAML, UNKNOWN_STAGE):
        rules_file.write_text(broken)
        for _ in range(2):
            time.sleep(1.2)  # RulesReloader looks at the file at most once a second
            assert versions(send_and_wait(2)) == {old}
        assert worker.alive(), worker.log_tail()
    refusals = worker.log_text().count("rules file not reloaded")
    assert refusals >= 2, f"the worker never reported the invalid rules:\n{worker.log_tail()}"
    counters = store.contact(email).state.counters
    assert counters == {"ticks": len(sent)}, counters

    # A valid new version is picked up by the same worker, and it is what applies.
    rules_file.write_text(NEW_RULES)
    new = load_rules(rules_file).version
    assert new != old
    time.sleep(1.2)
    assert versions(send_and_wait(3)) == {new}
    counters = store.contact(email).state.counters
    assert counters == {"ticks": len(sent) - 3 + 300}, counters
    assert "rules reloaded" in worker.log_text(), worker.log_tail()
