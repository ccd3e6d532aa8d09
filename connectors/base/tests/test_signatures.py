"""Shared signature checks added for several sources: millisecond windows, Basic-auth sources."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base.inbound import Delivery, SignatureError
from connectors.base.signatures import basic_auth_header, verify_basic_auth, within_window_ms

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MILLIS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize("offset", [0, -299_999, -300_000, 299_999, 300_999])
def test_within_window_ms_accepts_five_minutes_either_side(offset):
    """Milliseconds are rounded down to whole seconds before the window is applied."""
    assert within_window_ms(str(MILLIS + offset), NOW, "x-ts") == MILLIS + offset


@pytest.mark.parametrize(
    ("timestamp", "words"),
    [
        ("", "x-ts must be epoch milliseconds"),
        ("soon", "x-ts must be epoch milliseconds"),
        ("-1", "x-ts must be epoch milliseconds"),
        (" 1", "x-ts must be epoch milliseconds"),
        ("١٢٣", "x-ts must be epoch milliseconds"),  # digits, but not ASCII ones
        ("1" * 17, "x-ts must be epoch milliseconds"),
        (str(MILLIS - 300_001), "old"),
        (str(MILLIS + 301_000), "future"),
        (str(MILLIS // 1000), "old"),  # seconds, not milliseconds
    ],
)
def test_within_window_ms_refusals(timestamp, words):
    with pytest.raises(SignatureError, match=words):
        within_window_ms(timestamp, NOW, "x-ts")


def test_verify_basic_auth():
    def delivery(headers: dict[str, str]) -> Delivery:
        return Delivery("any", headers, b"", NOW)

    verify_basic_auth(delivery({"authorization": basic_auth_header("s3cret", "anyone")}), "s3cret")
    verify_basic_auth(delivery({}), None)  # only with ALLOW_UNSIGNED_WEBHOOKS=1
    with pytest.raises(SignatureError, match="HTTP Basic credentials required"):
        verify_basic_auth(delivery({}), "s3cret")
    with pytest.raises(SignatureError, match="wrong HTTP Basic credentials"):
        verify_basic_auth(delivery({"authorization": basic_auth_header("guess")}), "s3cret")
