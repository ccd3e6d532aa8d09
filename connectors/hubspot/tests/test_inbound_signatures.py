"""HubSpot request validation: v3 (with its 5-minute window), v1 and v2, the URI HubSpot signed
(behind proxies, percent-escapes, non-ASCII), and every way a delivery is refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base.inbound import Delivery, SignatureError
from connectors.hubspot.inbound import (
    called_uris,
    sign_v1,
    sign_v2,
    sign_v3,
    signed_headers,
    verify,
)

SECRET = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
URL = "https://lifecycle.example.com/webhooks/hubspot"
BODY = b'[{"eventId":1,"objectId":51,"occurredAt":1795687200000}]'


def delivery(headers: dict[str, str], body: bytes = BODY, url: str = URL, now=NOW) -> Delivery:
    lowered = {k.lower(): v for k, v in headers.items()}
    return Delivery("hubspot", lowered, body, now, url=url, method="POST")


def v3_headers(url: str = URL, body: bytes = BODY, at: datetime = NOW, secret: str = SECRET):
    return signed_headers(secret, url, body, at)


def refused(d: Delivery, words: str, secret: str = SECRET) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(d, secret)
    assert words in caught.value.detail
    assert secret not in caught.value.detail


def test_v3_valid():
    verify(delivery(v3_headers()), SECRET)


def test_v3_tampered_body():
    refused(delivery(v3_headers(), body=BODY.replace(b"51", b"52")), "does not match")


def test_v3_wrong_key():
    refused(delivery(v3_headers(secret="another-app-secret")), "does not match")


def test_v3_stale():
    refused(delivery(v3_headers(at=NOW - timedelta(minutes=6))), "old")


def test_v3_future():
    refused(delivery(v3_headers(at=NOW + timedelta(minutes=6))), "future")


def test_v3_within_the_window_both_ways():
    verify(delivery(v3_headers(at=NOW - timedelta(minutes=4, seconds=59))), SECRET)
    verify(delivery(v3_headers(at=NOW + timedelta(minutes=4, seconds=59))), SECRET)


@pytest.mark.parametrize("stamp", ["", "soon", "1.7e12", "-1795687200000", " 1795687200000x"])
def test_v3_timestamp_must_be_milliseconds(stamp):
    headers = {**v3_headers(), "X-HubSpot-Request-Timestamp": stamp}
    refused(delivery(headers), "epoch milliseconds")


def test_v3_signature_in_seconds_is_refused():
    """The Ruby SDK bug (§2.2): seconds instead of milliseconds do not verify."""
    stamp = str(int(NOW.timestamp()))
    signature = base64.b64encode(sign_v3(SECRET, "POST", URL, BODY, stamp)).decode()
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp}
    refused(delivery(headers), "old")


def test_v3_not_base64():
    refused(delivery({**v3_headers(), "X-HubSpot-Signature-v3": "not base64!"}), "base64")


def test_missing_headers():
    refused(delivery({}), "missing X-HubSpot-Signature-v3")


def test_v3_takes_precedence_over_a_valid_v1():
    """An attacker who replays an old delivery cannot fall back to v1 while a v3 header is there."""
    headers = {
        **v3_headers(at=NOW - timedelta(hours=1)),
        "X-HubSpot-Signature": sign_v1(SECRET, BODY),
        "X-HubSpot-Signature-Version": "v1",
    }
    refused(delivery(headers), "old")


def test_v1_valid_tampered_wrong_key():
    headers = {"X-HubSpot-Signature": sign_v1(SECRET, BODY), "X-HubSpot-Signature-Version": "v1"}
    verify(delivery(headers), SECRET)
    refused(delivery(headers, body=BODY + b" "), "does not match (v1)")
    refused(delivery(headers), "does not match", secret="another-app-secret")


def test_v2_valid_tampered_other_url():
    signature = sign_v2(SECRET, "POST", f"{URL}?event=meeting_booked", BODY)
    headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v2"}
    verify(delivery(headers, url=f"{URL}?event=meeting_booked"), SECRET)
    refused(delivery(headers, url=f"{URL}?event=form_submitted"), "does not match (v2)")
    refused(delivery(headers, url=f"{URL}?event=meeting_booked", body=b"{}"), "does not match")


@pytest.mark.parametrize("version", ["", "v3", "v9"])
def test_v1_v2_need_a_known_version(version):
    headers = {"X-HubSpot-Signature": sign_v1(SECRET, BODY), "X-HubSpot-Signature-Version": version}
    refused(delivery(headers), "must be v1 or v2")


def test_behind_a_proxy_the_forwarded_scheme_and_host_are_signed():
    inside = "http://10.0.0.7:8000/webhooks/hubspot?event=form_submitted"
    outside = "https://lifecycle.example.com/webhooks/hubspot?event=form_submitted"
    headers = v3_headers(url=outside)
    refused(delivery(headers, url=inside), "does not match")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "lifecycle.example.com"}
    verify(delivery({**headers, **forwarded}, url=inside), SECRET)
    chained = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "lifecycle.example.com, lb"}
    verify(delivery({**headers, **chained}, url=inside), SECRET)


def test_the_uri_is_decoded_as_the_v3_docs_say():
    received = f"{URL}?event=form_submitted&ref=a%3Ab%40c%2Fd%2a"
    decoded = f"{URL}?event=form_submitted&ref=a:b@c/d*"
    assert called_uris(delivery({}, url=received)) == [decoded, received]
    verify(delivery(v3_headers(url=decoded), url=received), SECRET)
    verify(delivery(v3_headers(url=received), url=received), SECRET)  # as the SDKs sign it


def test_a_non_ascii_url_is_signed_in_its_percent_encoded_form():
    iri = f"{URL}?event=form_submitted&campaign=été"  # how Werkzeug hands the URL over
    uri = f"{URL}?event=form_submitted&campaign=%C3%A9t%C3%A9"
    verify(delivery(v3_headers(url=uri), url=iri), SECRET)


def test_unsigned_deliveries_pass_only_without_a_secret():
    verify(delivery({}), None)  # ALLOW_UNSIGNED_WEBHOOKS=1 and no HUBSPOT_CLIENT_SECRET
