"""Signature checks shared by the sources: HMAC over raw bytes, constant-time compares, replay
windows measured against an injected `now` (never a clock read here)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime

from connectors.base.inbound import Delivery, SignatureError

REPLAY_WINDOW_SECONDS = 300
_MILLIS = re.compile(r"[0-9]{1,16}")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def same(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def b64decode_strict(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid base64") from None


def within_window(timestamp: str, now: datetime, window: int = REPLAY_WINDOW_SECONDS) -> int:
    """Unix seconds from a header, refused when outside now ± window (replays, skewed clocks)."""
    try:
        seconds = int(timestamp)
    except (TypeError, ValueError):
        raise SignatureError("timestamp header is not a whole number of seconds") from None
    drift = seconds - now.timestamp()
    if drift < -window:
        raise SignatureError(f"timestamp is {int(-drift)} s old (more than {window} s): a replay?")
    if drift > window:
        raise SignatureError(f"timestamp is {int(drift)} s in the future (more than {window} s)")
    return seconds


def within_window_ms(
    timestamp: str, now: datetime, header: str, window: int = REPLAY_WINDOW_SECONDS
) -> int:
    """Unix milliseconds from a header (1 to 16 ASCII digits), refused when outside now ± window
    (checked by `within_window` on the seconds, rounded down); `header` names it in refusals."""
    if not _MILLIS.fullmatch(timestamp):
        raise SignatureError(f"{header} must be epoch milliseconds")
    within_window(str(int(timestamp) // 1000), now, window)
    return int(timestamp)


def check_basic_auth(headers: Mapping[str, str], secret: str) -> None:
    """HTTP Basic auth for vendors that do not sign: any user name, the password is the secret
    (`https://any:<secret>@host/webhooks/<source>`)."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise SignatureError(
            "HTTP Basic credentials required (the password is the source's secret)"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise SignatureError("malformed HTTP Basic credentials") from None
    _, colon, password = decoded.partition(":")
    if not colon or not same(password.encode(), secret.encode()):
        raise SignatureError("wrong HTTP Basic credentials")


def basic_auth_header(secret: str, user: str = "webhook") -> str:
    """The Authorization header a vendor sends for `https://user:secret@...` (for tests)."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def verify_basic_auth(delivery: Delivery, secret: str | None) -> None:
    """The verifier of a source that does not sign (HTTP Basic auth, the password is the secret).
    Without a secret nothing is checked: the web calls it so only with ALLOW_UNSIGNED_WEBHOOKS=1."""
    if secret is None:
        return
    check_basic_auth(delivery.headers, secret)
