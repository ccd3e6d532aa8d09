"""Signature checks shared by the sources: HMAC over raw bytes, constant-time compares, replay
windows measured against an injected `now` (never a clock read here)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime

from connectors.base.inbound import SignatureError

REPLAY_WINDOW_SECONDS = 300


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
