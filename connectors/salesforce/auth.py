"""How the client talks to Salesforce, apart from what it says: OAuth 2.0 client credentials
against the org's My Domain, which failures are worth retrying, and the org's API allocation.

- `ClientCredentials` is the base's `Auth`: it fetches a token on first use and again after a 401
  INVALID_SESSION_ID (the base replays the call once). Tokens stay in the worker's memory, never in
  Redis or a log; each worker process holds its own (client credentials may mint many).
- `classify` sorts failed responses: 403 REQUEST_LIMIT_EXCEEDED is retryable, and pauses every
  worker through the shared limiter (TotalRequests, the daily allocation: long; concurrency: short).
- `GuardedLimiter` fails fast while such a long pause is on, instead of blocking a worker for it.
- `ApiUsage` is the `Sforce-Limit-Info` header (`api-usage=used/max`), read from every response.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from connectors.base.http import RETRY_STATUSES, CrmSession, HttpResult
from connectors.base.ratelimit import RollingWindowLimiter
from engine.config import ConfigError
from engine.errors import FatalSyncError, RetriableSyncError

log = logging.getLogger("connectors.salesforce")

TOKEN_PATH = "/services/oauth2/token"
DAILY_LIMIT_PAUSE = 900.0
"""TotalRequests (or our own max_api_usage) reached: no request for ~15 minutes, all workers."""
CONCURRENCY_PAUSE = 1.0
FAIL_FAST_AFTER = 30.0
"""A pause longer than this fails the push at once (retryable) rather than block the worker."""
RETRYABLE_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "UNKNOWN_EXCEPTION"}
)
_USAGE = re.compile(r"(?:^|[;\s])api-usage=(\d+)/(\d+)")


def first_error(body: Any) -> tuple[str, str]:
    """(errorCode, message) of a REST error array, an OAuth error object, or a text body."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return str(first.get("errorCode") or first.get("statusCode") or ""), str(
            first.get("message") or ""
        )
    if isinstance(body, dict):
        return str(body.get("error") or ""), str(body.get("error_description") or body)
    return "", " ".join(str(body or "").split())[:200]


def make_classifier(limiter: GuardedLimiter | None) -> Callable[[HttpResult], tuple]:
    def classify(result: HttpResult) -> tuple[bool, str]:
        code, message = first_error(result.body)
        text = f"{code}: {message}" if code else message or f"HTTP {result.status}"
        if code == "REQUEST_LIMIT_EXCEEDED":
            daily = "TotalRequests" in message
            if limiter is not None:
                jitter = random.uniform(0.8, 1.5)
                limiter.pause(DAILY_LIMIT_PAUSE if daily else CONCURRENCY_PAUSE * jitter, text)
            return True, text
        retriable = code in RETRYABLE_CODES or result.status in RETRY_STATUSES
        return retriable or result.status == 420, text[:500]

    return classify


class GuardedLimiter:
    """The shared rolling-window limiter, except that a long pause (the org's daily allocation is
    spent) raises RetriableSyncError at once: the contacts back off in the store instead."""

    def __init__(self, inner: RollingWindowLimiter, client: redis.Redis):
        self.inner, self._redis = inner, client
        self.reason_key = f"{inner.pause_key}:why"

    def acquire(self) -> float:
        paused_ms = int(self._redis.pttl(self.inner.pause_key))
        if paused_ms > FAIL_FAST_AFTER * 1000:
            why = self._redis.get(self.reason_key)
            raise RetriableSyncError(
                f"salesforce: every push paused for {paused_ms // 1000} s after "
                f"{why.decode() if why else 'a request limit answer'}",
                retry_after=paused_ms / 1000,
            )
        return self.inner.acquire()

    def ready_in(self, requests: int = 1) -> float:
        """As RollingWindowLimiter.ready_in, but 0 during a long pause: a push then fails at once
        and its contacts back off, rather than a job waiting hours for it."""
        if int(self._redis.pttl(self.inner.pause_key)) > FAIL_FAST_AFTER * 1000:
            return 0.0
        return self.inner.ready_in(requests)

    def pause(self, seconds: float, why: str = "") -> None:
        """Every worker holds back `seconds`; `why` is shown while a long pause fails pushes."""
        self.inner.pause(seconds)
        if why:
            self._redis.set(self.reason_key, why[:300], px=max(1, int(seconds * 1000)))


@dataclass(frozen=True)
class ApiUsage:
    """The org's daily API allocation as the last response told it (`Sforce-Limit-Info`)."""

    used: int
    limit: int
    header: str
    at: float

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    @classmethod
    def parse(cls, header: str | None, at: float | None = None) -> ApiUsage | None:
        found = _USAGE.search(header or "")
        if not found:
            return None
        stamp = time.time() if at is None else at
        return cls(int(found.group(1)), int(found.group(2)), header or "", stamp)

    def fields(self) -> dict[str, str]:
        values = {"used": self.used, "limit": self.limit, "header": self.header, "at": self.at}
        return {k: str(v) for k, v in values.items()}


class _NoAuth:
    def __init__(self, secret: str):
        self._secret = secret

    def headers(self) -> dict[str, str]:
        return {}

    def refresh(self) -> bool:
        return False

    def secrets(self) -> list[str]:
        return [self._secret]


class _FormBody:
    """Stands in for the token session's requests.Session: sends the `json=` mapping as an
    application/x-www-form-urlencoded body, which the token endpoint requires (the base's
    `call` only sends JSON; it should take `data=`)."""

    def __init__(self, session: Any):
        self._session = session
        self.headers = session.headers

    def request(self, method: str, url: str, *, json: Any = None, **kwargs: Any) -> Any:
        return self._session.request(method, url, data=json, **kwargs)

    def close(self) -> None:
        self._session.close()


def _classify_token(result: HttpResult) -> tuple[bool, str]:
    code, message = first_error(result.body)
    text = f"{code}: {message}" if code else message or f"HTTP {result.status}"
    return result.status in RETRY_STATUSES, text[:500]


class ClientCredentials:
    """OAuth 2.0 client credentials: POST <login url>/services/oauth2/token."""

    def __init__(
        self,
        login_url: str,
        client_id: str,
        client_secret: str,
        on_instance: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._id, self._secret, self.on_instance = client_id, client_secret, on_instance
        self._http = CrmSession(
            "salesforce oauth",
            login_url,
            _NoAuth(client_secret),
            classify=_classify_token,
            attempts=3,
            sleep=sleep,
        )
        self._http.session = _FormBody(self._http.session)  # type: ignore[assignment]
        self._token: str | None = None
        self._lock = threading.Lock()
        self.instance_url: str | None = None
        self.fetches = 0

    def ensure(self) -> None:
        """Have a token (and so the instance URL) before the first API call."""
        if self._token is None:
            with self._lock:
                if self._token is None:
                    self._fetch()

    def headers(self) -> dict[str, str]:
        self.ensure()
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> bool:
        stale = self._token
        with self._lock:
            if self._token == stale:  # else another thread got a new one meanwhile
                self._fetch()
        return True

    def secrets(self) -> list[str]:
        return [s for s in (self._secret, self._token) if s]

    def close(self) -> None:
        self._http.close()

    def _fetch(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._id,
            "client_secret": self._secret,
        }
        try:
            body = self._http.call("POST", TOKEN_PATH, json=form, ok=(200,)).body
        except FatalSyncError as exc:
            raise FatalSyncError(
                f"{exc.detail} (check SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET, that the "
                "connected app allows the client credentials flow with a Run As user, and that "
                "SALESFORCE_LOGIN_URL is the org's My Domain URL)"
            ) from None
        if (
            not isinstance(body, dict)
            or not body.get("access_token")
            or not body.get("instance_url")
        ):
            raise RetriableSyncError("salesforce oauth: token answer without access_token")
        self._token = str(body["access_token"])
        self.instance_url = str(body["instance_url"]).rstrip("/")
        self.fetches += 1
        self.on_instance(self.instance_url)
        log.info("salesforce: new access token for %s", self.instance_url)


def login_url(raw: str | None) -> str:
    """SALESFORCE_LOGIN_URL, checked: the org's My Domain (https; http only on loopback)."""
    if not raw:
        raise ConfigError("SALESFORCE_LOGIN_URL is not set (the org's My Domain URL)")
    parts = urlsplit(raw.strip())
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ConfigError(f"SALESFORCE_LOGIN_URL must be an https URL, got {raw!r}")
    if parts.hostname in ("login.salesforce.com", "test.salesforce.com"):
        raise ConfigError(
            "SALESFORCE_LOGIN_URL: the client credentials flow needs the org's My Domain URL "
            f"(https://<domain>.my.salesforce.com), not {parts.hostname}"
        )
    if parts.path.strip("/") or parts.query:
        raise ConfigError(
            f"SALESFORCE_LOGIN_URL: give the bare My Domain URL, without a path: {raw!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def api_version(raw: str) -> str:
    """SALESFORCE_API_VERSION as vNN.0; sObject Collections need 42.0 or later."""
    found = re.fullmatch(r"v?(\d{2,3})\.0", (raw or "").strip())
    if not found or int(found.group(1)) < 42:
        raise ConfigError(
            f"SALESFORCE_API_VERSION: a version like v64.0 (42.0 or later), got {raw!r}"
        )
    return f"v{found.group(1)}.0"
