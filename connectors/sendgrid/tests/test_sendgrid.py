"""SendGrid Inbound Parse: one test per fixture, HTTP Basic auth, the web contract on a real Redis,
and fuzzing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import Delivery, SignatureError
from connectors.base.signatures import basic_auth_header
from connectors.sendgrid.inbound import SOURCE, event_types, parse, verify
from connectors.testing import (
    FUZZ,
    FUZZ_WEB,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    cut_and_overwritten,
    only_event,
    post_basic,
    quarantined,
    web_client,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRET = "sendgrid-parse-secret-31c7"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONTENT_TYPE = "multipart/form-data; boundary=xYzZY"  # as the SDK's send.py posts the samples


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def delivery(body: bytes, headers: dict[str, str] | None = None) -> Delivery:
    return Delivery("sendgrid", {"content-type": CONTENT_TYPE, **(headers or {})}, body, NOW)


def event_of(name: str) -> dict:
    result = parse(delivery(raw(name)))
    assert result.once == []
    return only_event(result)


# --- one test per fixture -------------------------------------------------------------------------


def test_parsed__default_data():
    assert event_of("parsed__default_data.txt") == {
        # no Message-ID in this sample: a hash of sender, date, subject and text
        "id": "sendgrid:sha256:555d17814b30ccaee790eafa3fe88a1e94a04538",
        "type": "email_replied",
        "email": "test@example.com",
        "occurred_at": "2016-08-11T01:10:13Z",
        "source": "sendgrid",
        "properties": {
            "subject": "Testing non-raw",
            "in_reply_to": None,
            "mailbox": "inbound@inbound.example.com",
            "message_id": None,
            "references": [],
            "text": "Hello Twilio SendGrid!",
        },
    }


def test_raw__raw_data():
    assert event_of("raw__raw_data.txt") == {
        "id": "sendgrid:sha256:bb50dcb9b170d3285cd9eb90adb9d4dc6a9096ad",
        "type": "email_replied",
        "email": "test@example.com",
        "occurred_at": "2016-08-10T21:44:21Z",
        "source": "sendgrid",
        "properties": {
            "subject": "Testing with Request.bin",
            "in_reply_to": None,
            "mailbox": "inbound@inbound.inbound.com",
            "message_id": None,
            "references": [],
            "text": "Hello Twilio SendGrid!",
        },
    }


def test_parsed__reply_with_attachment():
    assert event_of("parsed__reply_with_attachment.txt") == {
        "id": "<CAJ9chloe-0042@mail.example.fr>",
        "type": "email_replied",
        "email": "chloe.martin@example.fr",
        "occurred_at": "2026-11-26T09:20:01Z",
        "source": "sendgrid",
        "properties": {
            "subject": "Re: Café meeting",
            "in_reply_to": "<outreach-77@mail.acme.test>",
            "mailbox": "sales@replies.example.com",
            "message_id": "<CAJ9chloe-0042@mail.example.fr>",
            "references": ["<outreach-76@mail.acme.test>", "<outreach-77@mail.acme.test>"],
            "text": "Not now — ask me again in January.\n\nChloé\n\n> Shall we meet at the café?",
        },
    }


def test_parsed__delivery_status_notification():
    result = parse(delivery(raw("parsed__delivery_status_notification.txt")))
    assert (result.events, result.ignored, result.unusable) == ([], 1, [])


def test_every_kind_has_a_fixture():
    assert set(event_types) == {p.name.split("__")[0] for p in FIXTURES.glob("*__*")}


def test_the_charset_of_each_field_is_honoured():
    body = raw("parsed__reply_with_attachment.txt")
    latin = body.replace("Re: Café meeting".encode(), "Re: Café meeting".encode("latin-1"))
    latin = latin.replace(b'"subject": "UTF-8"', b'"subject": "iso-8859-1"')
    (event,) = parse(delivery(latin)).events
    assert event.properties["subject"] == "Re: Café meeting"


def test_quarantine_keeps_the_post_without_attachments():
    body = raw("parsed__reply_with_attachment.txt").replace(b"chloe.martin@example.fr", b"nobody")
    result = parse(delivery(body))
    assert result.events == [] and "no usable sender address" in result.unusable[0].reason
    assert b"budget 40k" in body and b"budget 40k" not in result.keep
    assert b"PNG" in body and b"PNG" not in result.keep
    assert b"Not now" in result.keep and b'name="attachment-info"' in result.keep
    assert len(parse(delivery(result.keep)).unusable) == 1  # a replay still parses


def test_quarantine_strips_attachments_from_a_raw_mime_post():
    mime = (
        b"From: nobody\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\nNot now\r\n"
        b"--zz\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b'filename="x.pdf"\r\n\r\nSECRET-PDF\r\n--zz--\r\n'
    )
    body = b'--xYzZY\r\nContent-Disposition: form-data; name="email"\r\n\r\n' + mime
    body += b"\r\n--xYzZY--\r\n"
    result = parse(delivery(body))
    assert len(result.unusable) == 1
    assert b"SECRET-PDF" not in result.keep and b"Not now" in result.keep


# --- HTTP Basic auth ------------------------------------------------------------------------------


def test_basic_auth_with_the_secret_verifies():
    verify(delivery(b"", {"authorization": basic_auth_header(SECRET, "anyone")}), SECRET)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "HTTP Basic credentials required"),
        ({"authorization": basic_auth_header("wrong")}, "wrong HTTP Basic credentials"),
        ({"authorization": "Basic !!!"}, "malformed"),
        ({"authorization": "Bearer " + SECRET}, "HTTP Basic credentials required"),
    ],
)
def test_bad_credentials_are_refused(headers, words):
    with pytest.raises(SignatureError) as caught:
        verify(delivery(b"", headers), SECRET)
    assert words in caught.value.detail and SECRET not in caught.value.detail


def test_unsigned_mode_skips_verification():
    verify(delivery(b""), None)


# --- through the web, on a real Redis -------------------------------------------------------------


@pytest.fixture
def client(monkeypatch, redis_url, redis_client):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, body: bytes, content_type: str = CONTENT_TYPE, secret: str = SECRET):
    return post_basic(client, "sendgrid", body, secret, content_type)


def test_web_accepts_a_reply_and_a_retry_is_a_duplicate(client):
    first = post(client, raw("parsed__reply_with_attachment.txt"))
    assert first.status_code == 202
    assert first.json == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "quarantined": 0,
        "events": ["<CAJ9chloe-0042@mail.example.fr>"],
    }
    retry = post(client, raw("parsed__reply_with_attachment.txt"))
    assert (retry.status_code, retry.json["accepted"], retry.json["duplicates"]) == (202, 0, 1)


def test_web_a_retry_without_message_id_is_a_duplicate(client):
    assert post(client, raw("parsed__default_data.txt")).json["accepted"] == 1
    assert post(client, raw("parsed__default_data.txt")).json["duplicates"] == 1


def test_web_wrong_password_is_401(client):
    response = post(client, raw("parsed__default_data.txt"), secret="guess")
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert SECRET not in response.data.decode()


def test_web_unreadable_body_is_400(client):
    response = post(client, b"--xYzZY\r\ntruncated", CONTENT_TYPE)
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")
    response = post(client, raw("parsed__default_data.txt"), "multipart/form-data")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_web_too_large_is_413(client):
    response = post(client, b"a" * (30 * 1024 * 1024 + 1))
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_web_wrong_content_type_is_415(client):
    response = post(client, b"{}", "application/json")
    assert (response.status_code, response.json["error"]) == (415, "unsupported_media_type")


def test_web_unconfigured_is_404(monkeypatch, redis_url, redis_client):
    client = web_client(monkeypatch, redis_url, SOURCE, None)
    response = post(client, raw("parsed__default_data.txt"))
    assert_unconfigured(response, "SENDGRID_WEBHOOK_SECRET")


def test_web_bounce_is_ignored(client):
    response = post(client, raw("parsed__delivery_status_notification.txt"))
    assert response.status_code == 202
    assert (response.json["accepted"], response.json["ignored"]) == (0, 1)


def test_web_no_sender_is_quarantined_without_attachments(client):
    body = raw("parsed__reply_with_attachment.txt").replace(b"chloe.martin@example.fr", b"nobody")
    response = post(client, body)
    assert response.status_code == 202
    assert (response.json["accepted"], response.json["quarantined"]) == (0, 1)
    (kept,) = quarantined(client, "sendgrid")  # the DB may be shared
    assert kept["source"] == "sendgrid" and "no usable sender address" in kept["reason"]
    assert b"budget 40k" not in kept["body"] and b"Not now" in kept["body"]
    assert "authorization" not in kept["headers"].lower()


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

CONTENT_TYPES = st.sampled_from([CONTENT_TYPE, "multipart/form-data", "multipart/form-data; a=b"])
NAMES = st.sampled_from(
    ["headers", "from", "to", "subject", "text", "envelope", "charsets", "email"]
)


def form(fields: list[tuple[str, bytes, bool]]) -> bytes:
    chunks = []
    for name, value, is_file in fields:
        filename = '; filename="f.bin"' if is_file else ""
        head = f'--xYzZY\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'
        chunks.append(head.encode() + value + b"\r\n")
    return b"".join(chunks) + b"--xYzZY--\r\n"


FORMS = st.lists(
    st.tuples(st.one_of(NAMES, st.text("abc", max_size=3)), st.binary(), st.booleans())
)


def survives(body: bytes, content_type: str = CONTENT_TYPE) -> None:
    d = Delivery("sendgrid", {"content-type": content_type}, body, NOW)
    assert_verifies_or_refuses(verify, d, SECRET)
    assert_parses_or_refuses(parse, d)


@FUZZ
@given(st.binary(max_size=2_000), CONTENT_TYPES)
def test_fuzz_random_bytes(body, content_type):
    survives(body, content_type)


@FUZZ
@given(FORMS)
def test_fuzz_random_forms(fields):
    survives(form(fields))


@FUZZ
@given(
    st.sampled_from([p.read_bytes() for p in FIXTURES.glob("*__*.txt")]),
    st.integers(0, 3_000),
    st.binary(max_size=8),
)
def test_fuzz_truncated_and_mutated_fixtures(body, cut, noise):
    for damaged in cut_and_overwritten(body, cut, noise):
        survives(damaged)


@FUZZ_WEB
@given(FORMS, st.binary(max_size=200))
def test_fuzz_web_never_500(client, fields, noise):
    response = post(client, form(fields) + noise)
    assert response.status_code in (202, 400), response.json
