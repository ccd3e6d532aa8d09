"""The only user of `requests`: one session per CRM account, timeouts, auth that may refresh once,
the shared rate limiter, retries that honour Retry-After, and the split between retriable and fatal
failures. Secrets never appear in an error or a log line.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests

from engine.errors import FatalSyncError, RetriableSyncError

log = logging.getLogger("connectors.http")
RETRY_STATUSES = frozenset({408, 423, 425, 429, 477, 500, 502, 503, 504, 520, 521, 522, 523, 524})


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: Any
    """Parsed JSON when the CRM sent JSON, else the text."""
    headers: Mapping[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name) or self.headers.get(name.lower())


class Auth(Protocol):
    def headers(self) -> dict[str, str]: ...

    def refresh(self) -> bool:
        """Get new credentials after a 401; False when that cannot help (a static token)."""
        ...

    def secrets(self) -> list[str]: ...


class BearerToken:
    """A static token (HubSpot private apps)."""

    def __init__(self, token: str):
        self._token = token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> bool:
        return False

    def secrets(self) -> list[str]:
        return [self._token]


Classifier = Callable[[HttpResult], tuple[bool, str]]
"""A failed response -> (retriable?, the CRM's message)."""


def default_classify(result: HttpResult) -> tuple[bool, str]:
    return result.status in RETRY_STATUSES, _message(result.body)


class Limiter(Protocol):
    def acquire(self) -> float: ...

    def pause(self, seconds: float) -> None: ...


class CrmSession:
    """Calls one CRM account. `call` returns the result of an accepted status, or raises
    RetriableSyncError (after its own bounded retries) or FatalSyncError."""

    def __init__(
        self,
        name: str,
        base_url: str,
        auth: Auth,
        *,
        limiter: Limiter | None = None,
        classify: Classifier = default_classify,
        timeout: tuple[float, float] = (3.05, 30.0),
        attempts: int = 4,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        extra_headers: Mapping[str, str] | None = None,
    ):
        self.name, self.base_url = name, base_url.rstrip("/")
        self.auth, self.limiter, self.classify = auth, limiter, classify
        self.timeout, self.attempts, self.max_wait, self.sleep = timeout, attempts, max_wait, sleep
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", **(extra_headers or {})})
        self.last_headers: Mapping[str, str] = {}

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Iterable[int] = (200, 201, 204, 207),
    ) -> HttpResult:
        accepted, refreshed = frozenset(ok), False
        for attempt in range(1, self.attempts + 1):
            error, wait = self._attempt(method, path, json, params, headers, accepted)
            if isinstance(error, HttpResult):
                return error
            if error is None:  # a 401 that a fresh token may cure, once
                if refreshed:
                    raise FatalSyncError(
                        self._redact(
                            f"{self.name}: still unauthorized after "
                            "getting a new token; check credentials"
                        )
                    )
                refreshed = True
                continue
            if attempt == self.attempts or (wait is not None and wait > self.max_wait):
                raise error
            self.sleep(wait if wait is not None else _backoff(attempt))
        raise AssertionError("unreachable")

    def _attempt(self, method, path, json, params, headers, accepted):
        """One try: (result, None) on success, (None, None) to retry after a refresh, or
        (error, seconds to wait) for a retriable failure. Fatal failures raise."""
        if self.limiter is not None:
            self.limiter.acquire()
        url = f"{self.base_url}{path}" if path.startswith("/") else path
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                params=params,
                timeout=self.timeout,
                headers={**self.auth.headers(), **(headers or {})},
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            return RetriableSyncError(f"{self.name} {method} {path}: {type(exc).__name__}"), None
        result = _result(response)
        self.last_headers = result.headers
        if result.status in accepted:
            return result, None
        if result.status == 401 and self.auth.refresh():
            log.info("%s: token refreshed after a 401", self.name)
            return None, None
        retriable, message = self.classify(result)
        detail = self._redact(f"{self.name} {method} {path} -> {result.status}: {message}")
        if not retriable:
            raise FatalSyncError(detail)
        wait = retry_after(result.header("Retry-After"))
        if result.status == 429 and self.limiter is not None:
            self.limiter.pause(wait if wait is not None else 1.0)
        return RetriableSyncError(detail, retry_after=wait), wait

    def close(self) -> None:
        self.session.close()

    def _redact(self, text: str) -> str:
        for secret in self.auth.secrets():
            if secret:
                text = text.replace(secret, "[redacted]")
        return re.sub(r"(?i)(bearer\s+)[^\s\"']+", r"\1[redacted]", text)


def _result(response: requests.Response) -> HttpResult:
    try:
        body: Any = response.json() if response.content else None
    except ValueError:
        body = response.text
    return HttpResult(response.status_code, body, dict(response.headers))


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None when absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _backoff(attempt: int) -> float:
    return min(20.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def _message(body: Any) -> str:
    """The CRM's own words: HubSpot {"message"}, Salesforce [{"message", "errorCode"}], text."""
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_description") or body)[:500]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        code = first.get("errorCode") or first.get("statusCode") or ""
        return f"{code}: {first.get('message', '')}".strip(": ")[:500]
    return str(body or "")[:500]
