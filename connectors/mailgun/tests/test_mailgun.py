"""Mailgun inbound routes: one test per fixture, the signature scheme (with the published vectors),
the web contract on a real Redis, and fuzzing."""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.formdata import read_form
from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.mailgun.inbound import SOURCE, event_types, parse, sign, verify
from connectors.testing import (
    FUZZ,
    FUZZ_WEB,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    cut_and_overwritten,
    only_event,
    post_webhook,
    quarantined,
    web_client,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
KEY = "foo"  # the signing key of the multi_mail captures (and of our derived fixtures)
WEB_KEY = "mg-signing-key-7b1d9e"
URLENCODED = "application/x-www-form-urlencoded"


def capture(name: str) -> tuple[dict[str, str], bytes]:
    """A captured HTTP request: its headers (lower-cased) and body (cut at Content-Length)."""
    head, body = re.split(rb"\r?\n\r?\n", (FIXTURES / name).read_bytes(), maxsplit=1)
    lines = head.decode().splitlines()[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return headers, body[: int(headers["content-length"])]


def delivery(name: str, now: datetime | None = None, seen=lambda key: False) -> Delivery:
    headers, body = capture(name)
    timestamp = int(read_form(body, headers["content-type"]).first("timestamp"))
    now = now or datetime.fromtimestamp(timestamp + 10, UTC)
    return Delivery("mailgun", headers, body, now, seen=seen)


def event_of(name: str) -> tuple[dict, Parsed]:
    result = parse(delivery(name))
    return only_event(result), result


# --- one test per fixture -------------------------------------------------------------------------


def test_parsed__multi_mail_valid():
    verify(delivery("parsed__multi_mail_valid.txt"), KEY)
    event, result = event_of("parsed__multi_mail_valid.txt")
    assert event == {
        "id": "<E102015D-F580-4316-81FA-7324838A3AE8@opennorth.ca>",
        "type": "email_replied",
        "email": "james@opennorth.ca",
        "occurred_at": "2013-04-16T00:20:12Z",
        "source": "mailgun",
        "properties": {
            "subject": "Test",
            "in_reply_to": None,
            "mailbox": "foo+bar@multimail.mailgun.org",
            "message_id": "<E102015D-F580-4316-81FA-7324838A3AE8@opennorth.ca>",
            "references": [],
            "text": "bold text\n\n\n\nsome more bold text\n\n\n\nsome italic text\n\n"
            "> multiline\n> quoted\n> text\n\n\n--\nSignature block",
            "reply_text": "bold text\n\n\n\nsome more bold text\n\n\n\nsome italic text",
        },
    }
    assert result.once == ["mailgun:5o56tmpwd3dnwthehwclemd-i-7u2gv9vb3u745ywj67d0mc87"]


def test_mime__multi_mail_valid():
    verify(delivery("mime__multi_mail_valid.txt"), KEY)
    event, result = event_of("mime__multi_mail_valid.txt")
    assert event == {
        "id": "<99CF7D8C-FCD4-443F-8E04-69C4E470D18F@opennorth.ca>",
        "type": "email_replied",
        "email": "james@opennorth.ca",
        "occurred_at": "2013-04-16T00:20:12Z",
        "source": "mailgun",
        "properties": {
            "subject": "Test",
            "in_reply_to": None,
            "mailbox": "foo+bar@multimail.mailgun.org",
            "message_id": "<99CF7D8C-FCD4-443F-8E04-69C4E470D18F@opennorth.ca>",
            "references": [],
            "text": "bold text\n\n\n\nsome more bold text\n\n\n\nsome italic text\n\n"
            "> multiline\n> quoted\n> text\n\n\n--\nSignature block",
        },
    }
    assert result.once == ["mailgun:5o56tmpwd3dnwthehwclemd-i-7u2gv9vb3u745ywj67d0mc87"]


def test_parsed__urlencoded_reply():
    verify(delivery("parsed__urlencoded_reply.txt"), KEY)
    event, _ = event_of("parsed__urlencoded_reply.txt")
    assert event == {
        "id": "<CAF7reply-0001@mail.example.com>",
        "type": "email_replied",
        "email": "ann@example.com",
        "occurred_at": "2026-11-26T09:15:00Z",
        "source": "mailgun",
        "properties": {
            "subject": "Re: Quick question about your pipeline",
            "in_reply_to": "<outreach-42@mail.acme.test>",
            "mailbox": "sales@replies.example.com",
            "message_id": "<CAF7reply-0001@mail.example.com>",
            "references": ["<outreach-41@mail.acme.test>", "<outreach-42@mail.acme.test>"],
            "text": "Not now, maybe next quarter.\n\nAnn\n\nOn Wed, Nov 25, 2026 at 9:00 AM Sam "
            "<sam@replies.example.com> wrote:\n> Hi Ann, do you have 15 minutes this week?",
            "reply_text": "Not now, maybe next quarter.\n\nAnn",
        },
    }


def test_parsed__auto_reply():
    d = delivery("parsed__auto_reply.txt")
    verify(d, KEY)
    result = parse(d)
    assert (result.events, result.ignored, result.unusable) == ([], 1, [])
    assert result.once == ["mailgun:0ff1ce0ff1ce0ff1ce0ff1ce0ff1ce0ff1ce0ff1ce0ff1ce00"]


def test_signature_vectors():
    vectors = json.loads((FIXTURES / "signature_vectors.json").read_text())["vectors"]
    for v in vectors:
        assert sign(v["signing_key"], v["timestamp"], v["token"]) == v["expected_signature"]
        body = urlencode(
            {"timestamp": v["timestamp"], "token": v["token"], "signature": v["expected_signature"]}
        ).encode()
        now = datetime.fromtimestamp(int(v["timestamp"]) + 299, UTC)
        verify(Delivery("mailgun", {"content-type": URLENCODED}, body, now), v["signing_key"])


def test_every_kind_has_a_fixture():
    stems = {p.name.split("__")[0] for p in FIXTURES.glob("*__*")}
    assert set(event_types) == stems


# --- the signature --------------------------------------------------------------------------------


def refused(d: Delivery, words: str, key: str = KEY) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(d, key)
    assert words in caught.value.detail


def with_fields(**changes: str | None) -> Delivery:
    """The urlencoded fixture with some fields replaced (or removed when the value is None)."""
    d = delivery("parsed__urlencoded_reply.txt")
    pairs = [(k, changes.get(k, v)) for k, v in parse_qsl(d.body.decode())]
    body = urlencode([(k, v) for k, v in pairs if v is not None]).encode()
    return Delivery("mailgun", d.headers, body, d.now, seen=d.seen)


def test_wrong_key_is_refused():
    refused(delivery("parsed__multi_mail_valid.txt"), "does not match", key="not-the-key")


def test_tampered_signed_fields_are_refused():
    refused(with_fields(token="x" + "a" * 49), "does not match")
    d = delivery("parsed__urlencoded_reply.txt")
    timestamp = str(int(d.now.timestamp()) - 20)
    refused(with_fields(timestamp=timestamp), "does not match")


def test_the_body_itself_is_not_signed_by_mailgun():
    """Mailgun signs timestamp + token only: other fields can change without breaking it."""
    verify(with_fields(subject="anything"), KEY)


def test_stale_and_future_timestamps_are_refused():
    headers, body = capture("parsed__urlencoded_reply.txt")
    sent = datetime.fromtimestamp(1795684510, UTC)
    refused(Delivery("mailgun", headers, body, sent + timedelta(minutes=6)), "old")
    refused(Delivery("mailgun", headers, body, sent - timedelta(minutes=6)), "future")
    verify(Delivery("mailgun", headers, body, sent + timedelta(minutes=4)), KEY)


def test_a_token_is_accepted_once():
    used = {"mailgun:c0ffee5e1d2f4a7b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a"}
    refused(delivery("parsed__urlencoded_reply.txt", seen=used.__contains__), "already used")


@pytest.mark.parametrize("missing", ["timestamp", "token", "signature"])
def test_missing_signature_fields_are_refused(missing):
    refused(with_fields(**{missing: None}), "missing Mailgun signature fields")


def test_a_signature_that_is_not_hex_is_refused():
    refused(with_fields(signature="zz" * 32), "does not match")


def test_unsigned_mode_skips_verification():
    verify(with_fields(signature=None), None)


def test_a_body_that_is_no_form_is_400_not_401():
    d = Delivery("mailgun", {"content-type": "multipart/form-data"}, b"--x\r\n", datetime.now(UTC))
    with pytest.raises(BadPayload):
        verify(d, KEY)


# --- attachments are never kept -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["parsed__multi_mail_valid.txt", "mime__multi_mail_valid.txt"])
def test_quarantine_keeps_the_message_without_attachments(name):
    d = delivery(name)
    body = re.sub(rb"james@opennorth\.ca|james%40opennorth\.ca", b"nobody", d.body)
    result = parse(Delivery("mailgun", d.headers, body, d.now))
    assert result.events == [] and len(result.unusable) == 1
    assert "no usable sender address" in result.unusable[0].reason
    assert b"Lorem" in body and b"Nam" in body
    assert b"Lorem" not in result.keep and b"accumsan" not in result.keep
    assert b"bold+text" in result.keep or b"bold text" in result.keep
    again = parse(Delivery("mailgun", d.headers, result.keep, d.now))  # a replay still parses
    assert len(again.unusable) == 1


# --- through the web, on a real Redis -------------------------------------------------------------


@pytest.fixture
def client(monkeypatch, redis_url, redis_client):
    return web_client(monkeypatch, redis_url, SOURCE, WEB_KEY)


def fresh(pairs: list[tuple[str, str]], token: str | None = None) -> list[tuple[str, str]]:
    """Fields signed now, as Mailgun signs each post."""
    timestamp = str(int(datetime.now(UTC).timestamp()))
    token = token or secrets.token_hex(25)
    signed = {"timestamp": timestamp, "token": token, "signature": sign(WEB_KEY, timestamp, token)}
    rest = [(k, v) for k, v in pairs if k not in signed]
    return [*rest, *signed.items()]


def fixture_pairs(name: str) -> list[tuple[str, str]]:
    return parse_qsl(capture(name)[1].decode(), keep_blank_values=True)


def post(client, pairs, content_type=URLENCODED, body=None):
    data = urlencode(pairs).encode() if body is None else body
    return post_webhook(client, "mailgun", data, content_type=content_type)


def multipart(pairs, files=()) -> tuple[bytes, str]:
    chunks = [
        f'--b0undary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in pairs
    ]
    for name, filename, content in files:
        chunks.append(
            f'--b0undary\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    return b"".join(chunks) + b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary"


def test_web_accepts_a_signed_reply(client):
    response = post(client, fresh(fixture_pairs("parsed__urlencoded_reply.txt")))
    assert response.status_code == 200  # Mailgun retries anything but 200 (and 406), 202 too
    assert response.content_type == "application/json"
    assert response.json == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "quarantined": 0,
        "events": ["<CAF7reply-0001@mail.example.com>"],
    }


def test_web_a_retry_is_a_duplicate_and_a_reused_token_is_refused(client):
    pairs = fresh(fixture_pairs("parsed__urlencoded_reply.txt"))
    assert post(client, pairs).json["accepted"] == 1
    replayed = post(client, pairs)
    assert (replayed.status_code, replayed.json["error"]) == (401, "bad_signature")
    assert "already used" in replayed.json["detail"]
    retry = post(client, fresh(pairs))  # Mailgun's retry: signed again, same message
    assert (retry.status_code, retry.json["duplicates"], retry.json["accepted"]) == (200, 1, 0)


def test_web_multipart_with_attachments(client):
    body, content_type = multipart(
        fresh(fixture_pairs("parsed__urlencoded_reply.txt")), [("attachment-1", "a.txt", b"x")]
    )
    response = post(client, None, content_type, body)
    assert (response.status_code, response.json["accepted"]) == (200, 1)


def test_web_bad_signature_is_401(client):
    pairs = [(k, "0" * 64 if k == "signature" else v) for k, v in fresh(fixture_pairs(
        "parsed__urlencoded_reply.txt"))]  # fmt: skip
    response = post(client, pairs)
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert WEB_KEY not in response.data.decode()


def test_web_unreadable_body_is_400(client):
    response = post(client, None, "multipart/form-data", b"--x\r\nnot a form")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_web_too_large_is_413(client):
    response = post(client, None, URLENCODED, b"a" * (30 * 1024 * 1024 + 1))
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_web_wrong_content_type_is_415(client):
    response = post(client, None, "application/json", b"{}")
    assert (response.status_code, response.json["error"]) == (415, "unsupported_media_type")


def test_web_unconfigured_is_404(monkeypatch, redis_url, redis_client):
    client = web_client(monkeypatch, redis_url, SOURCE, None)
    response = post(client, fresh(fixture_pairs("parsed__urlencoded_reply.txt")))
    assert_unconfigured(response, "MAILGUN_WEBHOOK_SECRET")


def test_web_auto_reply_is_ignored(client):
    response = post(client, fresh(fixture_pairs("parsed__auto_reply.txt")))
    assert response.status_code == 200
    assert (response.json["accepted"], response.json["ignored"]) == (0, 1)


def test_web_no_sender_is_quarantined_without_attachments(client):
    pairs = [
        (k, v) for k, v in fresh(fixture_pairs("parsed__urlencoded_reply.txt"))
        if k.lower() not in ("from", "sender", "message-headers")
    ]  # fmt: skip
    body, content_type = multipart(pairs, [("attachment-1", "secret.txt", b"TOP SECRET")])
    response = post(client, None, content_type, body)
    assert response.status_code == 200
    assert (response.json["accepted"], response.json["quarantined"]) == (0, 1)
    (kept,) = quarantined(client, "mailgun")  # the DB may be shared
    assert kept["source"] == "mailgun" and "no usable sender address" in kept["reason"]
    assert b"TOP SECRET" not in kept["body"] and b"Not now" in kept["body"]


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

CONTENT_TYPES = st.sampled_from(
    [URLENCODED, "multipart/form-data; boundary=b0undary", "multipart/form-data", "text/plain"]
)
FIELDS = st.sampled_from(
    [
        "from", "sender", "recipient", "subject", "message-headers", "body-plain", "body-mime",
        "stripped-text", "Message-Id", "In-Reply-To", "Date", "Auto-Submitted", "timestamp",
    ]
)  # fmt: skip
FORMS = st.lists(st.tuples(st.one_of(FIELDS, st.text(max_size=8)), st.text(max_size=60)))


def mutations():
    fixtures = [capture(p.name)[1] for p in FIXTURES.glob("*__*.txt")]
    return st.tuples(st.sampled_from(fixtures), st.integers(0, 20_000), st.binary(max_size=8))


def survives(body: bytes, content_type: str) -> None:
    d = Delivery("mailgun", {"content-type": content_type}, body, datetime.now(UTC))
    assert_verifies_or_refuses(verify, d, KEY, (BadPayload, SignatureError))
    assert_parses_or_refuses(parse, d)


@FUZZ
@given(st.binary(max_size=2_000), CONTENT_TYPES)
def test_fuzz_random_bytes(body, content_type):
    survives(body, content_type)


@FUZZ
@given(FORMS, st.booleans())
def test_fuzz_random_forms(pairs, as_multipart):
    if as_multipart:
        body, content_type = multipart(pairs)
    else:
        body, content_type = urlencode(pairs).encode(), URLENCODED
    survives(body, content_type)


@FUZZ
@given(mutations(), CONTENT_TYPES)
def test_fuzz_truncated_and_mutated_fixtures(mutation, content_type):
    for damaged in cut_and_overwritten(*mutation):
        survives(damaged, content_type)


@FUZZ_WEB
@given(FORMS, st.booleans(), st.binary(max_size=300))
def test_fuzz_web_never_500(client, pairs, as_multipart, noise):
    if as_multipart:
        body, content_type = multipart(fresh(pairs))
    else:
        body, content_type = urlencode(fresh(pairs)).encode() + noise, URLENCODED
    response = post(client, None, content_type, body)
    assert response.status_code in (200, 400, 401), response.json
