"""The CRM HTTP base against a scripted server on loopback (real HTTP, no patched requests), and
the shared rate limiter on a real Redis."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base.http import BearerToken, CrmSession, retry_after
from connectors.base.ratelimit import RollingWindowLimiter, parse_rate
from engine.errors import FatalSyncError, RetriableSyncError

TOKEN = "pat-na1-secret-token-123"


class Scripted(BaseHTTPRequestHandler):
    script: list[tuple[int, dict, object, float]] = []
    seen: list[dict] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "body": self.rfile.read(length),
            }
        )
        status, headers, body, delay = self.script.pop(0) if self.script else (200, {}, {}, 0)
        time.sleep(delay)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Scripted.script, Scripted.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _close_sessions():
    yield
    for crm in OPEN:
        crm.close()
    OPEN.clear()


OPEN: list[CrmSession] = []


class Refreshing(BearerToken):
    def __init__(self):
        super().__init__("old-token")
        self.refreshes = 0

    def refresh(self) -> bool:
        self.refreshes += 1
        self._token = "new-token"
        return True


def session(url, auth=None, **kw):
    waits = []
    crm = CrmSession("testcrm", url, auth or BearerToken(TOKEN), sleep=waits.append, **kw)
    OPEN.append(crm)
    return crm, waits


def test_429_with_retry_after_is_waited_then_succeeds(server):
    Scripted.script = [
        (429, {"Retry-After": "2"}, {"message": "ten_secondly_rolling"}, 0),
        (200, {}, {"ok": True}, 0),
    ]
    crm, waits = session(server)
    assert crm.call("POST", "/x", json={}).body == {"ok": True}
    assert waits == [2.0]


def test_5xx_storm_ends_retriable_with_the_crms_message(server):
    Scripted.script = [(503, {}, {"message": "maintenance"}, 0)] * 4
    crm, waits = session(server, attempts=4)
    with pytest.raises(RetriableSyncError, match="503: maintenance"):
        crm.call("POST", "/x", json={})
    assert len(waits) == 3


def test_a_long_retry_after_is_left_to_the_job_backoff(server):
    Scripted.script = [(429, {"Retry-After": "3600"}, {"message": "daily"}, 0)]
    crm, waits = session(server)
    with pytest.raises(RetriableSyncError) as caught:
        crm.call("POST", "/x", json={})
    assert caught.value.retry_after == 3600 and waits == []


def test_validation_errors_are_fatal_and_name_the_problem(server):
    Scripted.script = [
        (
            400,
            {},
            [
                {
                    "message": "bad value for restricted picklist field: X",
                    "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                }
            ],
            0,
        )
    ]
    crm, _ = session(server)
    with pytest.raises(FatalSyncError, match="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value"):
        crm.call("POST", "/x", json={})


def test_401_refreshes_once_and_replays(server):
    Scripted.script = [(401, {}, [{"errorCode": "INVALID_SESSION_ID"}], 0), (200, {}, {"ok": 1}, 0)]
    auth = Refreshing()
    crm, _ = session(server, auth)
    assert crm.call("POST", "/x", json={}).body == {"ok": 1}
    assert auth.refreshes == 1
    assert [s["auth"] for s in Scripted.seen] == ["Bearer old-token", "Bearer new-token"]


def test_401_again_after_refresh_is_fatal(server):
    Scripted.script = [(401, {}, {}, 0), (401, {}, {}, 0)]
    crm, _ = session(server, Refreshing())
    with pytest.raises(FatalSyncError, match="still unauthorized"):
        crm.call("POST", "/x", json={})


def test_timeouts_are_retriable(server):
    Scripted.script = [(200, {}, {}, 1.0)] * 2
    crm, _ = session(server, timeout=(1.0, 0.2), attempts=2)
    with pytest.raises(RetriableSyncError, match="ReadTimeout"):
        crm.call("POST", "/x", json={})


def test_secrets_never_appear_in_errors(server):
    Scripted.script = [(400, {}, {"message": f"token {TOKEN} rejected, Bearer {TOKEN}"}, 0)]
    crm, _ = session(server)
    with pytest.raises(FatalSyncError) as caught:
        crm.call("POST", "/x", json={})
    assert TOKEN not in str(caught.value) and "[redacted]" in str(caught.value)


def test_retry_after_forms():
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_rate_limit_text():
    assert parse_rate("190/10s") == (190, 10.0)
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_the_limiter_never_exceeds_its_window_across_clients(redis_client):
    a = RollingWindowLimiter(redis_client, "acct", limit=4, window_seconds=0.5)
    b = RollingWindowLimiter(redis_client, "acct", limit=4, window_seconds=0.5)
    started, sent = time.monotonic(), []
    for limiter in (a, b) * 6:  # 12 requests from two "workers" sharing one account
        limiter.acquire()
        sent.append(time.monotonic() - started)
    for i in range(len(sent) - 4):
        assert sent[i + 4] - sent[i] >= 0.45, f"5 requests within one window: {sent}"


def test_the_limiter_spreads_its_budget_over_the_window(redis_client):
    """A tenth of the budget per tenth of the window: a burst is spread, not sent then stalled."""
    limiter = RollingWindowLimiter(redis_client, "spread", limit=20, window_seconds=1.0)
    started, sent = time.monotonic(), []
    for _ in range(12):
        limiter.acquire()
        sent.append(time.monotonic() - started)
    for i in range(len(sent) - 2):
        assert sent[i + 2] - sent[i] >= 0.095, f"3 requests within a tenth of the window: {sent}"
    assert sent[-1] < 0.8, f"the budget was not used: {sent}"


def test_pause_holds_every_worker_back(redis_client):
    limiter = RollingWindowLimiter(redis_client, "acct2", limit=100, window_seconds=10)
    limiter.pause(0.3)
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= 0.25


def test_ready_in_tells_when_a_push_could_go_without_taking_a_slot(redis_client):
    limiter = RollingWindowLimiter(redis_client, "peek", limit=20, window_seconds=1.0)
    assert limiter.ready_in(2) == 0
    assert limiter.ready_in(2) == 0  # asking took nothing
    limiter.acquire()
    assert limiter.ready_in(1) == 0  # 2 per tenth of the window: one more fits
    wait = limiter.ready_in(2)
    assert 0.05 < wait <= 0.101, wait  # the first send leaves the tenth
    time.sleep(wait)
    assert limiter.ready_in(2) == 0
    started = time.monotonic()
    limiter.acquire()
    limiter.acquire()
    assert time.monotonic() - started < 0.05  # what ready_in promised, acquire gave at once


def test_ready_in_counts_the_whole_window_and_pauses(redis_client):
    limiter = RollingWindowLimiter(redis_client, "peek2", limit=3, window_seconds=0.3)
    for _ in range(3):
        limiter.acquire()
    assert 0.1 < limiter.ready_in(1) <= 0.301  # the window is full until the first send ages
    limiter.pause(2.0)
    assert 1.9 < limiter.ready_in(1) <= 2.0


def test_a_tenth_of_the_window_carries_whole_pushes(redis_client):
    """190/10s spreads 19 requests per tenth: a push of 2 would leave one slot of each unused."""
    single = RollingWindowLimiter(redis_client, "odd1", limit=30, window_seconds=10)
    paired = RollingWindowLimiter(redis_client, "odd2", limit=30, window_seconds=10, together=2)
    for limiter in (single, paired):
        limiter.acquire()
        limiter.acquire()
    assert single.ready_in(2) > 0.9  # 3 per tenth: the third alone would fit
    assert paired.ready_in(2) == 0  # 4 per tenth: a whole second push fits
    paired.acquire()
    paired.acquire()
    assert paired.ready_in(1) > 0.9
