"""Clock skew, oversized bodies and slow clients, against `lifecycle serve` as a real process (and
`lifecycle worker` where events must be applied) on the test Redis.

- Signature timestamps: for every source whose signature carries a time (standard, calendly,
  webflow, mailgun, hubspot v3), a delivery signed just inside the replay window, in the past or
  the future, is accepted; just outside, or far in the future, it is refused with a 401 that names
  the problem, counted by source and error; a replay inside the window is a duplicate.
- Event times (`occurred_at`) skewed by the sender's clock: stages still only move forward, a
  late event cannot change the lead status, and the timeline keeps the order of arrival.
- Oversized bodies, with a declared length or chunked: 413 JSON at once, the client able to push
  no more than the limit plus what the kernel buffers hold (so the server read no more).
- Slow clients: with N sync workers, N - 1 clients trickling headers or a body leave the others
  answered; the N-th makes the others wait; every one is cut off after `lifecycle serve --timeout`.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from connectors.base.signatures import REPLAY_WINDOW_SECONDS
from connectors.calendly.inbound import signature_header as calendly_signature
from connectors.hubspot.inbound import signed_headers as hubspot_signed
from connectors.mailgun.inbound import sign as mailgun_sign
from connectors.standard.inbound import signed_headers as standard_signed
from connectors.webflow.inbound import signed_headers as webflow_signed
from engine.cli import REQUEST_TIMEOUT
from engine.store import Store
from tests.processes import (
    REPO,
    Service,
    free_port,
    lifecycle_serve,
    lifecycle_worker,
    product_env,
    wait_for,
)

TOKEN = "skew-token-5b1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STANDARD_SECRET = "whsec_c2tldy1hbmQtc2xvdy1zdGFuZGFyZC1zZWNyZXQ="
SECRET = "skew-and-slow-secret-0123456789"
WINDOW = REPLAY_WINDOW_SECONDS
YEAR = 365 * 86_400


# --- real processes ------------------------------------------------------------------------------


def server_env(redis_url: str, var: Path) -> dict[str, str]:
    return product_env(
        REDIS_URL=redis_url,
        API_TOKEN=TOKEN,
        RULES_FILE=str(REPO / "rules.yaml"),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(var),
        STANDARD_WEBHOOK_SECRET=STANDARD_SECRET,
        CALENDLY_WEBHOOK_SECRET=SECRET,
        WEBFLOW_WEBHOOK_SECRET=SECRET,
        MAILGUN_WEBHOOK_SECRET=SECRET,
        HUBSPOT_CLIENT_SECRET=SECRET,
    )


@dataclass
class Stack:
    web: Service
    port: int
    redis: redis.Redis

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`lifecycle serve` (one gunicorn worker) and `lifecycle worker` on the test Redis."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    logs = tmp_path_factory.mktemp("stack")
    env = server_env(redis_url, logs / "var")
    port = free_port()
    started: list[Service] = []
    try:
        started.append(lifecycle_serve(env, logs / "web.log", port))
        started.append(lifecycle_worker(env, logs / "worker.log"))
        yield Stack(started[0], port, client)
    finally:
        for service in reversed(started):
            service.stop()
        client.flushdb()
        client.close()


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    status, text = call(port, "GET", "/metrics")
    assert status == 200, text
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.startswith(name + "{") and all(f'{k}="{v}"' in sample for k, v in labels.items()):
            return float(value)
    return 0.0


# --- 1. signature timestamps ---------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    path: str
    body: bytes
    headers: dict[str, str]


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sign_standard(uid: str, signed_at: datetime, base: str) -> Signed:
    body = _json(
        {
            "id": uid,
            "type": "webinar_attended",
            "email": f"{uid}@example.com",
            "occurred_at": _iso(datetime.now(UTC)),
            "properties": {"webinar": "skew-101"},
        }
    )
    headers = standard_signed(STANDARD_SECRET, uid, body, signed_at)
    return Signed("/webhooks/standard", body, headers)


def sign_calendly(uid: str, signed_at: datetime, base: str) -> Signed:
    body = _json(
        {
            "event": "invitee.created",
            "created_at": _iso(datetime.now(UTC)),
            "created_by": "https://api.calendly.com/users/SKEW",
            "payload": {
                "uri": f"https://api.calendly.com/scheduled_events/SKEW/invitees/{uid}",
                "email": f"{uid}@example.com",
                "name": "Skew Test",
            },
        }
    )
    headers = {
        "Calendly-Webhook-Signature": calendly_signature(SECRET, body, signed_at),
        "Content-Type": "application/json",
    }
    return Signed("/webhooks/calendly", body, headers)


def sign_webflow(uid: str, signed_at: datetime, base: str) -> Signed:
    body = _json(
        {
            "triggerType": "form_submission",
            "payload": {
                "name": "Demo Request",
                "siteId": "skew-site",
                "data": {"email": f"{uid}@example.com"},
                "schema": [],
                "submittedAt": _iso(datetime.now(UTC)),
                "id": uid,
                "formId": "skew-form",
            },
        }
    )
    return Signed("/webhooks/webflow", body, webflow_signed(SECRET, body, signed_at))


def sign_mailgun(uid: str, signed_at: datetime, base: str, token: str = "") -> Signed:
    sender = f"{uid}@example.com"
    headers = [
        ["From", f"Skew Test <{sender}>"],
        ["To", "sales@replies.example.com"],
        ["Subject", "Re: our call"],
        ["Date", format_datetime(datetime.now(UTC))],
        ["Message-Id", f"<{uid}@mail.example.com>"],
    ]
    timestamp, token = str(int(signed_at.timestamp())), token or f"token-{uid}"
    fields = {
        "recipient": "sales@replies.example.com",
        "sender": sender,
        "from": f"Skew Test <{sender}>",
        "subject": "Re: our call",
        "message-headers": json.dumps(headers),
        "body-plain": "Thanks, Tuesday works.",
        "timestamp": timestamp,
        "token": token,
        "signature": mailgun_sign(SECRET, timestamp, token),
    }
    content_type = {"Content-Type": "application/x-www-form-urlencoded"}
    return Signed("/webhooks/mailgun", urlencode(fields).encode(), content_type)


def sign_hubspot(uid: str, signed_at: datetime, base: str) -> Signed:
    event_id = int.from_bytes(uid.encode()[-6:], "big")
    body = _json(
        [
            {
                "eventId": event_id,
                "subscriptionId": 2871055,
                "portalId": 62515,
                "appId": 54321,
                "occurredAt": int(time.time() * 1000),
                "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0,
                "objectId": event_id % 100_000,
                "propertyName": "lifecyclestage",
                "propertyValue": "marketingqualifiedlead",
                "changeSource": "CRM_UI",
            }
        ]
    )
    headers = hubspot_signed(SECRET, f"{base}/webhooks/hubspot", body, signed_at)
    return Signed("/webhooks/hubspot", body, headers)


SIGNERS: dict[str, Callable[[str, datetime, str], Signed]] = {
    "standard": sign_standard,
    "calendly": sign_calendly,
    "webflow": sign_webflow,
    "mailgun": sign_mailgun,
    "hubspot": sign_hubspot,
}
OK = {"mailgun": 200}  # Mailgun retries anything but 200 (and 406); the others get 202

INSIDE = (-(WINDOW - 5), WINDOW - 5)
"""Seconds of skew just inside the window, both ways (5 s of margin for the round trip)."""
OUTSIDE = (-(WINDOW + 5), WINDOW + 5, -10 * YEAR, 86_400, 10 * YEAR)
"""Just outside, both ways, and far: a future-dated signature would stay replayable longer."""


@pytest.mark.parametrize("source", sorted(SIGNERS))
def test_signature_timestamps_inside_the_window_are_accepted_outside_refused(stack, source):
    sign = SIGNERS[source]
    ok = OK.get(source, 202)
    rejected = metric(stack.port, "lifecycle_requests_rejected_total", source=source)
    accepted_before = metric(
        stack.port, "lifecycle_events_total", source=source, outcome="accepted"
    )
    sent: list[tuple[str, Signed]] = []
    for n, skew in enumerate(INSIDE):
        uid = f"skew-{source}-in{n}-{time.time_ns()}"
        delivery = sign(uid, _skewed(skew), stack.base)
        status, body = call(stack.port, "POST", delivery.path, delivery.body, delivery.headers)
        assert (status, body["accepted"]) == (ok, 1), (source, skew, status, body)
        sent.append((uid, delivery))

    for n, skew in enumerate(OUTSIDE):
        delivery = sign(f"skew-{source}-out{n}-{time.time_ns()}", _skewed(skew), stack.base)
        status, body = call(stack.port, "POST", delivery.path, delivery.body, delivery.headers)
        assert status == 401, (source, skew, status, body)
        assert body["error"] == "bad_signature", body
        words = "old" if skew < 0 else "in the future"
        assert words in body["detail"] and f"{WINDOW} s" in body["detail"], (skew, body)
        # The operator can tell a skewed clock from a wrong secret: the reason is in the log.
        reason = f"{source}.webhook.bad_signature: {body['detail']}"
        wait_for(lambda r=reason: r in stack.web.log_text(), 5, f"{reason!r} in the web log")

    # The delivery signed ~295 s ago, sent again: a duplicate (Mailgun: its token is spent, and
    # Mailgun's own retry, signed again, is the duplicate).
    uid, first = sent[0]
    status, body = call(stack.port, "POST", first.path, first.body, first.headers)
    if source == "mailgun":
        assert (status, body["error"]) == (401, "bad_signature"), body
        assert "already used" in body["detail"], body
        resigned = sign_mailgun(uid, datetime.now(UTC), stack.base, token=f"retry-{uid}")
        status, body = call(stack.port, "POST", resigned.path, resigned.body, resigned.headers)
    assert (status, body["accepted"], body["duplicates"]) == (ok, 0, 1), body

    # Every refusal is counted by source and error; the accepted events were taken once each.
    after = metric(stack.port, "lifecycle_requests_rejected_total", source=source)
    expected_refusals = len(OUTSIDE) + (source == "mailgun")
    assert after - rejected == expected_refusals
    accepted = metric(stack.port, "lifecycle_events_total", source=source, outcome="accepted")
    assert accepted - accepted_before == len(INSIDE)
    # An unverified delivery is not kept in full (anyone could fill Redis): the quarantine is for
    # verified deliveries whose events cannot be used.
    assert not [q for q in Store(stack.redis).quarantined() if q["source"] == source]


def _skewed(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# --- 1b. event times skewed by the sender's clock ------------------------------------------------


def post_events(stack: Stack, *events: dict[str, Any]) -> tuple[int, Any]:
    headers = {**AUTH, "Content-Type": "application/json"}
    return call(stack.port, "POST", "/api/events", _json(list(events)), headers)


def event(id_: str, type_: str, email: str, occurred: datetime, **properties: Any) -> dict:
    return {
        "id": id_,
        "type": type_,
        "email": email,
        "occurred_at": _iso(occurred),
        "properties": properties,
    }


def applied(stack: Stack, email: str, count: int) -> dict[str, Any]:
    """The contact once the worker has applied `count` events to it."""

    def view() -> dict[str, Any] | None:
        status, body = call(stack.port, "GET", f"/api/contacts/{email}", headers=AUTH)
        return body if status == 200 and len(body["timeline"]) >= count else None

    return wait_for(view, 20, f"{count} events applied to {email}", view)


def changes(entry: dict[str, Any], field_: str) -> list[tuple[str, str]]:
    return [(c["outcome"], c["reason"] or "") for c in entry["changes"] if c["field"] == field_]


def test_past_dated_events_never_move_a_contact_back(stack):
    """A sender whose clock is years behind: its events are applied in the order they arrive and
    recorded with the time they claim, but a stage never moves back and a lead status changed
    since then is not changed by them."""
    email, now = f"past-{time.time_ns()}@example.com", datetime.now(UTC)
    long_ago = now - timedelta(days=20 * 365)
    assert post_events(stack, event("past-1", "meeting_booked", email, now))[0] == 202
    applied(stack, email, 1)
    status, body = post_events(
        stack,
        event("past-2", "call_logged", email, long_ago, outcome="connected"),
        event("past-3", "content_downloaded", email, long_ago),
    )
    assert (status, body["accepted"]) == (202, 2), body

    view = applied(stack, email, 3)
    assert (view["stage"], view["status"]) == ("sales_qualified_lead", "new")
    timeline = view["timeline"]
    assert [e["event_id"] for e in timeline] == ["past-1", "past-2", "past-3"]  # arrival order
    assert timeline[1]["occurred_at"].startswith(long_ago.strftime("%Y-%m-%dT%H:%M:%S"))
    [(outcome, reason)] = changes(timeline[1], "status")
    assert outcome == "refused" and reason.startswith("stale: event occurred at"), reason
    assert [outcome for outcome, _ in changes(timeline[2], "stage")] == ["noop"]  # lead < SQL


def test_a_future_dated_event_does_not_freeze_the_lead_status(stack):
    email, now = f"future-{time.time_ns()}@example.com", datetime.now(UTC)
    assert post_events(stack, event("future-1", "meeting_booked", email, now))[0] == 202
    applied(stack, email, 1)
    ahead = now + timedelta(days=10 * 365)
    status, body = post_events(
        stack, event("future-2", "call_logged", email, ahead, outcome="no_answer")
    )
    if status == 422:  # refused at the door, naming the field: fine
        assert "occurred_at" in body["detail"], body
        return
    assert status == 202, body
    applied(stack, email, 2)
    later = now + timedelta(minutes=5)
    post_events(stack, event("future-3", "call_logged", email, later, outcome="connected"))
    view = applied(stack, email, 3)
    assert view["status"] == "connected", json.dumps(view["timeline"], indent=1)


def test_serve_passes_its_request_timeout_to_gunicorn(stack):
    """`lifecycle serve` exec's gunicorn: its command line is the one running (sync workers)."""
    argv = Path(f"/proc/{stack.web.pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--timeout") + 1] == str(REQUEST_TIMEOUT)
    assert argv[argv.index("--threads") + 1] == "1"  # more would mean gthread: no cut-off
    assert "--worker-class" not in argv and "-k" not in argv


# --- 2a. oversized bodies ------------------------------------------------------------------------

MiB = 1024 * 1024
LIMIT = MiB  # /webhooks/standard and /api/events
IN_FLIGHT = 16 * MiB
"""What a client can push past what the server read: its send buffer (set to 256 KiB here) plus
the server's receive buffer as loopback autotuning grows it (about 4 MiB measured). A server that
read the whole 64 MiB flood (or 32 MiB of it) lets the client push far more than this."""


@dataclass
class Flood:
    """A client that announces a body and keeps sending it until the server answers or closes."""

    port: int
    path: str
    headers: dict[str, str]
    chunked: bool
    cap: int = 64 * MiB
    sent: int = 0
    answer: bytes = b""
    errors: list[str] = field(default_factory=list)

    def run(self) -> float:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        head = f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        started, stop = time.monotonic(), threading.Event()
        sock.sendall(head.encode())
        pump = threading.Thread(target=self._pump, args=(sock, stop), daemon=True)
        pump.start()
        try:
            while chunk := sock.recv(65536):
                self.answer += chunk
        except OSError as exc:
            self.errors.append(f"recv: {exc!r}")
        elapsed = time.monotonic() - started
        stop.set()
        pump.join(10)
        sock.close()
        return elapsed

    def _pump(self, sock: socket.socket, stop: threading.Event) -> None:
        block = b" " * 65536
        frame = b"%x\r\n%s\r\n" % (len(block), block) if self.chunked else block
        try:
            while self.sent < self.cap and not stop.is_set():
                sock.sendall(frame)
                self.sent += len(block)
        except OSError:
            pass  # the server answered and closed: what we want

    def status_and_json(self) -> tuple[int, Any]:
        head, _, body = self.answer.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1") else 0
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body[:200]


GIB = 1024**3
API = {**AUTH, "Content-Type": "application/json"}
HOOK = {"Content-Type": "application/json"}
CHUNKED = {"Transfer-Encoding": "chunked"}


@pytest.mark.parametrize(
    ("path", "headers", "chunked"),
    [
        ("/webhooks/standard", {**HOOK, "Content-Length": str(10 * GIB)}, False),
        ("/webhooks/standard", {**HOOK, **CHUNKED}, True),
        ("/api/events", {**API, "Content-Length": str(10 * GIB)}, False),
        ("/api/events", {**API, **CHUNKED}, True),
    ],
    ids=["hook-declared", "hook-chunked", "api-declared", "api-chunked"],
)
def test_an_oversized_body_is_413_at_once_without_reading_it(stack, path, headers, chunked):
    """The server reads at most what the client managed to push before the answer."""
    flood = Flood(stack.port, path, headers, chunked)
    elapsed = flood.run()
    status, body = flood.status_and_json()
    print(
        f"\n{path} {'chunked' if chunked else 'declared 10 GiB'}: {status} after {elapsed:.2f} s,"
        f" the client having pushed {flood.sent / MiB:.1f} MiB"
    )
    assert status == 413, (status, body, flood.errors)
    assert body["error"] == "payload_too_large" and body["detail"], body
    assert elapsed < 5, f"413 took {elapsed:.1f} s"
    assert flood.sent < LIMIT + IN_FLIGHT, f"{flood.sent} bytes taken for a {LIMIT} limit"


# --- 2b. slow clients ----------------------------------------------------------------------------

WORKERS = 3  # so 2 slow clients leave one worker; the README's advice holds for any N


@dataclass
class Slow:
    """A client that holds a connection: trickling its headers or its body one byte a second, or
    sending nothing at all. Records when the server cut it off and what it said."""

    port: int
    kind: str  # "headers" | "body" | "silent"
    started: float = 0.0
    cut_after: float | None = None
    answer: bytes = b""

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.started = time.monotonic()
        sock.settimeout(1.0)
        try:
            if self.kind == "body":
                sock.sendall(
                    b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    b"application/json\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Content-Length: 100000\r\n\r\n["
                )
            elif self.kind == "headers":
                sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            deadline = self.started + REQUEST_TIMEOUT * 3
            while time.monotonic() < deadline:
                if self.kind != "silent":
                    sock.sendall(b" " if self.kind == "body" else b"a")
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                self.answer += chunk
                if not chunk:
                    break
        except OSError:
            pass  # reset or broken pipe: cut off
        finally:
            self.cut_after = time.monotonic() - self.started
            sock.close()


@pytest.fixture
def slow_server(redis_url, tmp_path) -> Iterator[int]:
    env = server_env(redis_url, tmp_path / "var")
    port = free_port()
    argv = [sys.executable, "-m", "engine.cli", "serve", "--port", str(port)]
    web = Service("lifecycle serve", [*argv, "--workers", str(WORKERS)], env, tmp_path / "w.log")
    try:
        wait_for(lambda: _healthy(port, web), 60, "lifecycle serve to answer", web.log_tail)
        yield port
    finally:
        web.stop()


def _healthy(port: int, web: Service) -> bool:
    assert web.alive(), web.log_tail()
    try:
        return call(port, "GET", "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def healthy_load(port: int, seconds: float) -> tuple[int, float]:
    """Answers to a healthy client (an event posted, then /healthz, in turn) for `seconds`:
    (how many were 2xx, the slowest answer in seconds)."""
    answered, slowest, end, n = 0, 0.0, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
        started = time.monotonic()
        if n % 2:
            body = _json(event(f"healthy-{time.time_ns()}", "page_viewed", "h@example.com", _now()))
            status, _ = call(port, "POST", "/api/events", body, API, timeout=30)
        else:
            status, _ = call(port, "GET", "/healthz", timeout=30)
        slowest = max(slowest, time.monotonic() - started)
        answered += 200 <= status < 300
    return answered, slowest


def _now() -> datetime:
    return datetime.now(UTC)


def test_slow_clients_are_cut_off_and_others_keep_being_answered(slow_server):
    port = slow_server
    healthy_load(port, 0.5)  # every worker connected to Redis, rules loaded
    answered, slowest = healthy_load(port, 3.0)
    before = answered / 3.0
    assert answered > 0

    # N - 1 slow clients: one trickles its headers, one its body; the last worker serves the rest.
    slow = [Slow(port, "headers"), Slow(port, "body")]
    threads = [threading.Thread(target=s.run, daemon=True) for s in slow]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    answered, slowest = healthy_load(port, 4.0)
    under = answered / 4.0
    print(
        f"\nhealthy answers/s: {before:.0f} alone, {under:.0f} while {len(slow)} of {WORKERS} "
        f"workers are held by slow clients (slowest answer {slowest:.2f} s)"
    )
    assert answered >= 8 and slowest < 5, (answered, slowest)
    assert all(s.cut_after is None for s in slow), "a slow client was cut off early"

    # The N-th slow client (this one sends nothing at all) holds the last worker: the next
    # healthy request waits, but no longer than until the first slow clients are cut off.
    silent = Slow(port, "silent")
    threads.append(threading.Thread(target=silent.run, daemon=True))
    threads[-1].start()
    time.sleep(0.5)
    asked = time.monotonic()
    status, _ = call(port, "GET", "/healthz", timeout=REQUEST_TIMEOUT * 3)
    waited = time.monotonic() - asked
    held_since = time.monotonic() - slow[0].started
    print(f"with {WORKERS} slow clients a healthy request waited {waited:.1f} s")
    assert status == 200
    assert waited > 1, "the N-th slow client should have held the last worker"
    # (the timeout, then gunicorn's check every second and a replacement worker's start)
    assert held_since < REQUEST_TIMEOUT + 15, f"answered {held_since:.1f} s after the first hold"

    for thread in threads:
        thread.join(REQUEST_TIMEOUT + 10)
    for client in [*slow, silent]:
        print(
            f"{client.kind} client cut off after {client.cut_after:.1f} s: {client.answer[:12]!r}"
        )
        assert client.cut_after is not None and client.cut_after < REQUEST_TIMEOUT + 5, client
        assert not client.answer.startswith(b"HTTP/1.1 2"), client
    assert call(port, "GET", "/healthz")[0] == 200  # the replaced workers answer
