"""Postmark inbound: one test per fixture, HTTP Basic auth, the web contract on a real Redis, and
fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import Delivery, Parsed, SignatureError
from connectors.base.signatures import basic_auth_header
from connectors.postmark.inbound import SOURCE, event_types, parse, verify
from connectors.testing import (
    FUZZ,
    FUZZ_WEB,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    cut_and_overwritten,
    json_values,
    only_event,
    post_basic,
    quarantined,
    web_client,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRET = "postmark-inbound-secret-9a4e"
NOW = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)


def message(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def delivery(body: bytes, headers: dict[str, str] | None = None) -> Delivery:
    return Delivery("postmark", headers or {}, body, NOW)


def parsed(data: object) -> Parsed:
    return parse(delivery(json.dumps(data).encode()))


def event_of(name: str) -> dict:
    result = parse(delivery((FIXTURES / name).read_bytes()))
    assert result.once == []
    return only_event(result)


# --- one test per fixture -------------------------------------------------------------------------


def test_inbound__anymail_basics():
    assert event_of("inbound__anymail_basics.json") == {
        "id": "<CAEPk3R+4Zr@mail.example.org>",
        "type": "email_replied",
        "email": "from+test@example.org",
        "occurred_at": "2017-10-12T01:31:04Z",
        "source": "postmark",
        "properties": {
            "subject": "Test subject",
            "in_reply_to": None,
            "mailbox": "test@inbound.example.com",
            "message_id": "<CAEPk3R+4Zr@mail.example.org>",
            "references": [],
            "text": "Test body plain",
            "reply_text": "stripped plaintext body",
        },
    }


def test_inbound__reply_with_attachment():
    assert event_of("inbound__reply_with_attachment.json") == {
        "id": "<CAPdana-9001@mail.example.net>",
        "type": "email_replied",
        "email": "dana.lee@example.net",
        "occurred_at": "2026-11-26T16:05:42Z",
        "source": "postmark",
        "properties": {
            "subject": "Re: Your trial",
            "in_reply_to": "<outreach-99@mail.acme.test>",
            "mailbox": "sales+c42@inbound.acme.test",
            "message_id": "<CAPdana-9001@mail.example.net>",
            "references": ["<outreach-98@mail.acme.test>", "<outreach-99@mail.acme.test>"],
            "text": "Not now, we signed with a competitor last month.\n\nDana\n\n"
            "On Tue, Nov 24, 2026, Sam wrote:\n> How is the trial going?",
            "reply_text": "Not now, we signed with a competitor last month.\n\nDana",
            "mailbox_hash": "c42",
        },
    }


def test_inbound__auto_reply():
    result = parse(delivery((FIXTURES / "inbound__auto_reply.json").read_bytes()))
    assert (result.events, result.ignored, result.unusable) == ([], 1, [])


def test_every_kind_has_a_fixture():
    assert set(event_types) == {p.name.split("__")[0] for p in FIXTURES.glob("*__*")}


# --- ids, times and what is ignored ---------------------------------------------------------------


def test_without_an_rfc_message_id_postmarks_id_is_used():
    data = message("inbound__anymail_basics.json")
    data["Headers"] = [h for h in data["Headers"] if h["Name"] != "Message-ID"]
    (event,) = parsed(data).events
    assert event.id == "postmark:22c74902-a0c1-4511-804f2-341342852c90"


@pytest.mark.parametrize("date", ["", "not a date", "Wed, 11 Oct 2099 18:31:04 -0700"])
def test_arrival_time_stands_in_for_a_missing_bad_or_far_future_date(date):
    data = {**message("inbound__anymail_basics.json"), "Date": date}
    (event,) = parsed(data).events
    assert event.occurred_at == NOW


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Auto-Submitted", "auto-generated"),
        ("X-Autoreply", "yes"),
        ("X-Autorespond", "Out of office"),
        ("Precedence", "bulk"),
        ("Precedence", "auto_reply"),
        ("Precedence", "junk"),
        ("Return-Path", "<>"),
        ("Content-Type", 'multipart/report; report-type="delivery-status"'),
    ],
)
def test_automatic_messages_are_ignored(header, value):
    data = message("inbound__anymail_basics.json")
    data["Headers"] = [{"Name": header, "Value": value}, *data["Headers"]]
    result = parsed(data)
    assert (result.events, result.ignored) == ([], 1)


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example.com", "postmaster@example.com"])
def test_bounces_from_system_senders_are_ignored(sender):
    data = {**message("inbound__anymail_basics.json"), "FromFull": {"Email": sender}}
    assert parsed(data).ignored == 1


@pytest.mark.parametrize(("header", "value"), [("Auto-Submitted", "no"), ("Precedence", "list")])
def test_people_writing_from_lists_or_saying_no_are_kept(header, value):
    data = message("inbound__anymail_basics.json")
    data["Headers"] = [{"Name": header, "Value": value}, *data["Headers"]]
    assert len(parsed(data).events) == 1


def test_quarantine_keeps_the_message_without_attachment_content():
    data = message("inbound__reply_with_attachment.json")
    data["FromFull"], data["From"] = {"Email": ""}, ""
    data["RawEmail"] = (
        "From: x\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        "Content-Type: text/plain\r\n\r\nNot now\r\n--zz\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="c.pdf"\r\n\r\nRAW-SECRET\r\n--zz--\r\n'
    )
    result = parsed(data)
    assert result.events == [] and "no usable sender address" in result.unusable[0].reason
    kept = json.loads(result.keep)
    assert kept["Attachments"] == [
        {"Name": "contract.pdf", "ContentType": "application/pdf", "ContentLength": 36}
    ]
    assert "RAW-SECRET" not in kept["RawEmail"] and "Not now" in kept["RawEmail"]
    assert kept["TextBody"] == data["TextBody"]


# --- HTTP Basic auth ------------------------------------------------------------------------------


def test_basic_auth_with_the_secret_verifies():
    verify(delivery(b"", {"authorization": basic_auth_header(SECRET, "postmark")}), SECRET)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "HTTP Basic credentials required"),
        ({"authorization": basic_auth_header("wrong")}, "wrong HTTP Basic credentials"),
        ({"authorization": "Basic bm9jb2xvbg=="}, "wrong HTTP Basic credentials"),
        ({"authorization": "Basic %%%"}, "malformed"),
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


def post(client, body: bytes, content_type="application/json", secret=SECRET):
    return post_basic(client, "postmark", body, secret, content_type)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_web_accepts_a_reply_and_a_retry_is_a_duplicate(client):
    first = post(client, fixture("inbound__reply_with_attachment.json"))
    assert first.status_code == 200  # Postmark retries "a non-200 code", 202 too
    assert first.content_type == "application/json"
    assert first.json == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "quarantined": 0,
        "events": ["<CAPdana-9001@mail.example.net>"],
    }
    retry = post(client, fixture("inbound__reply_with_attachment.json"))
    assert (retry.status_code, retry.json["accepted"], retry.json["duplicates"]) == (200, 0, 1)


def test_web_wrong_password_is_401(client):
    response = post(client, fixture("inbound__anymail_basics.json"), secret="guess")
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")
    assert SECRET not in response.data.decode()


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"text"', b"\xff\xfe\x00"])
def test_web_unparsable_body_is_400(client, body):
    response = post(client, body)
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_web_too_large_is_413(client):
    response = post(client, b" " * (30 * 1024 * 1024 + 1))
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_web_wrong_content_type_is_415(client):
    response = post(client, b"a=1", "application/x-www-form-urlencoded")
    assert (response.status_code, response.json["error"]) == (415, "unsupported_media_type")


def test_web_unconfigured_is_404(monkeypatch, redis_url, redis_client):
    client = web_client(monkeypatch, redis_url, SOURCE, None)
    response = post(client, fixture("inbound__anymail_basics.json"))
    assert_unconfigured(response, "POSTMARK_WEBHOOK_SECRET")


def test_web_auto_reply_is_ignored(client):
    response = post(client, fixture("inbound__auto_reply.json"))
    assert response.status_code == 200
    assert (response.json["accepted"], response.json["ignored"]) == (0, 1)


def test_web_no_sender_is_quarantined_without_attachments(client):
    data = message("inbound__reply_with_attachment.json")
    data["FromFull"], data["From"] = {}, ""
    response = post(client, json.dumps(data).encode())
    assert response.status_code == 200
    assert (response.json["accepted"], response.json["quarantined"]) == (0, 1)
    (kept,) = quarantined(client, "postmark")  # the DB may be shared
    assert kept["source"] == "postmark" and "no usable sender address" in kept["reason"]
    body = json.loads(kept["body"])
    assert "Content" not in body["Attachments"][0] and body["Subject"] == "Re: Your trial"


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

JSON = json_values(text_size=20, max_leaves=20)
KEYS = st.sampled_from(
    ["FromFull", "From", "Subject", "Date", "Headers", "TextBody", "OriginalRecipient", "ToFull",
     "MessageID", "Attachments", "RawEmail", "StrippedTextReply", "MailboxHash"]
)  # fmt: skip
HEADER = st.fixed_dictionaries(
    {"Name": st.sampled_from(["Message-ID", "Date", "x"]), "Value": JSON}
)
MESSAGES = st.dictionaries(KEYS, JSON | st.lists(HEADER, max_size=3))


def survives(body: bytes) -> None:
    d = delivery(body)
    assert_verifies_or_refuses(verify, d, SECRET)
    assert_parses_or_refuses(parse, d)


@FUZZ
@given(st.binary(max_size=2_000))
def test_fuzz_random_bytes(body):
    survives(body)


@FUZZ
@given(JSON | MESSAGES)
def test_fuzz_random_json(data):
    survives(json.dumps(data).encode())


@FUZZ
@given(
    st.sampled_from([p.read_bytes() for p in FIXTURES.glob("*__*.json")]),
    st.integers(0, 3_000),
    st.binary(max_size=8),
)
def test_fuzz_truncated_and_mutated_fixtures(body, cut, noise):
    for damaged in cut_and_overwritten(body, cut, noise):
        survives(damaged)


@FUZZ_WEB
@given(MESSAGES | JSON)
def test_fuzz_web_never_500(client, data):
    response = post(client, json.dumps(data).encode())
    assert response.status_code in (200, 400), response.json
