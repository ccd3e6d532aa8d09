"""Typeform: one test per fixture, the signature scheme, the web contract, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.testing import (
    FUZZ,
    JSON,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    counts,
    encoded,
    only_event,
    post_webhook,
    quarantined,
    truncated_and_flipped,
    web_client,
)
from connectors.typeform.inbound import HEADER, SOURCE, event_types, parse, sign, verify

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRET = "typeform-test-secret"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def delivery(body: bytes, headers: dict[str, str] | None = None) -> Delivery:
    return Delivery("typeform", headers or {}, body, NOW)


def parsed(name: str) -> Parsed:
    return parse(delivery(raw(name)))


def event_of(name: str) -> dict:
    return only_event(parsed(name))


# --- one test per fixture -------------------------------------------------------------------------


def test_form_response__docs_example():
    assert event_of("form_response__docs_example.json") == {
        "id": "typeform:LtWXD3crgy",
        "type": "form_submitted",
        "email": "laura@example.com",
        "occurred_at": "2018-01-18T18:17:02Z",
        "source": "typeform",
        "properties": {
            "form": "lT4Z3j",
            "form_name": "Webhooks example",
            "fields": {
                "readable_ref_long_text": "It's cold right now! I live in an older medium-sized "
                "city with a university. Geographically, the area is hilly.",
                "readable_ref_email": "laura@example.com",
                "readable_ref_short_text": "Laura",
                "readable_ref_date": "2005-10-15",
                "readable_ref_picture_choice": ["London", "Sydney"],
                "readable_ref_number1": 5,
                "readable_ref_legal": True,
                "readable_ref_multiple_choice": "London",
                "readable_ref_yes_no": False,
                "readable_ref_opinion_scale": 2,
                "readable_ref_rating": 3,
                "readable_ref_number2": 4,
                "readable_ref_calendly": "https://calendly.com/scheduled_events/EVENT_TYPE/"
                "invitees/INVITEE",
            },
            "response_id": "a3a12ec67a1365927098a606107fac15",
            "hidden": {"user_id": "abc123456"},
            "score": 9,
        },
    }


def test_form_response__hidden_email():
    assert event_of("form_response__hidden_email.json") == {
        "id": "typeform:01HZX8K2N4Q6R8T0V2W4Y6Z8A0",
        "type": "form_submitted",
        "email": "ann.lee@example.com",
        "occurred_at": "2026-11-26T10:00:00Z",
        "source": "typeform",
        "properties": {
            "form": "dMq8cYhw",
            "form_name": "Demo request",
            "fields": {
                "team-size": "11-50",
                "products": ["Analytics", "An API"],
                "01HZX8M5A7C9E1G3J5L7N9Q1S3": "We need it before Q1.",
            },
            "response_id": "9m3kz1x2c4v6b8n0m2q4w6e8r0t2y4u6",
            "hidden": {"utm_source": "newsletter", "contact_email": "Ann.Lee@Example.com"},
        },
    }


def test_form_response__email_question():
    assert event_of("form_response__email_question.json") == {
        "id": "typeform:01HZX9B7D9F1H3K5M7P9R1T3V5",
        "type": "form_submitted",
        "email": "bo@example.org",
        "occurred_at": "2026-11-26T11:30:15Z",
        "source": "typeform",
        "properties": {
            "form": "Kp2LmN4o",
            "form_name": "Contact sales",
            "fields": {"Your name": "Bo Chen", "Work email": " bo@example.org "},
            "response_id": "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6",
            "hidden": {},
        },
    }


def test_form_response__no_email():
    result = parsed("form_response__no_email.json")
    assert (result.events, result.ignored) == ([], 0)
    (unusable,) = result.unusable
    assert unusable.reason.startswith("no email")
    assert unusable.item["event_id"] == "01HZXA0C2E4G6J8L0N2Q4S6U8W"


def test_form_response_partial__derived():
    assert parsed("form_response_partial__derived.json") == Parsed(ignored=1)
    assert event_types == ("form_response",)


def test_signature_vector__derived():
    vector = json.loads(raw("signature_vector__derived.json"))
    body = vector["body"].encode()
    assert sign(vector["secret"], body) == vector["headers"]["Typeform-Signature"]
    verify(delivery(body, {HEADER: vector["headers"]["Typeform-Signature"]}), vector["secret"])
    assert parse(delivery(body)) == parsed("form_response__docs_example.json")


# --- the signature --------------------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET) -> Delivery:
    return delivery(body, {HEADER: sign(secret, body)})


def test_valid_signature_verifies():
    verify(signed(raw("form_response__docs_example.json")), SECRET)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "missing Typeform-Signature"),
        ({HEADER: ""}, "missing Typeform-Signature"),
        ({HEADER: "xkH6CHwxXxzLQeoiFn+0UP/dXzv8qn3slcfWc1E71nM="}, "must read sha256="),
        ({HEADER: "sha1=xkH6CHwxXxzLQeoiFn+0UP/dXzv8qn3slcfWc1E71nM="}, "must read sha256="),
        ({HEADER: "sha256="}, "must read sha256="),
        ({HEADER: "sha256=not base64!"}, "not valid base64"),
        ({HEADER: "sha256=" + "A" * 44}, "does not match"),
    ],
)
def test_bad_signature_headers(headers, words):
    with pytest.raises(SignatureError, match=words):
        verify(delivery(raw("form_response__docs_example.json"), headers), SECRET)


def test_tampered_body_fails():
    body = raw("form_response__docs_example.json")
    headers = {HEADER: sign(SECRET, body)}
    with pytest.raises(SignatureError, match="does not match"):
        verify(delivery(body.replace(b"laura@", b"mallory@"), headers), SECRET)


def test_wrong_key_fails_and_the_secret_is_never_echoed():
    with pytest.raises(SignatureError) as caught:
        verify(signed(raw("form_response__docs_example.json"), "another-secret"), SECRET)
    assert SECRET not in str(caught.value)


def test_no_replay_window_in_the_scheme():
    """Typeform signs no timestamp: an old delivery still verifies; its event id dedupes it."""
    old = Delivery("typeform", {}, b"{}", datetime(2040, 1, 1, tzinfo=UTC))
    verify(Delivery(old.source, {HEADER: sign(SECRET, b"{}")}, b"{}", old.now), SECRET)


def test_unsigned_allowed_only_without_a_secret():
    verify(delivery(b"{}"), None)  # the web reaches this only with ALLOW_UNSIGNED_WEBHOOKS=1


# --- parsing edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{not json", b"[]", b'"x"', b"NaN", b'{"a": NaN}'])
def test_unparsable_bodies(body):
    with pytest.raises(BadPayload):
        parse(delivery(body))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"event_type": "form_response"}, "form_response is missing"),
        ({"event_type": "form_response", "form_response": {}}, "event_id is missing"),
        (
            {"event_id": "e", "event_type": "form_response", "form_response": {"hidden": {}}},
            "no email",
        ),
        (
            {
                "event_id": "e",
                "event_type": "form_response",
                "form_response": {"hidden": {"email": "a@b.co"}, "submitted_at": "yesterday"},
            },
            "occurred_at must be ISO 8601",
        ),
    ],
)
def test_unusable_submissions_are_kept(body, reason):
    (unusable,) = parse(delivery(json.dumps(body).encode())).unusable
    assert unusable.reason.startswith(reason)


def test_missing_submitted_at_falls_back_to_delivery_time():
    body = {"event_id": "e", "event_type": "form_response", "form_response": {"hidden": {}}}
    body["form_response"]["hidden"]["email"] = "ann@example.com"
    (event,) = parse(delivery(json.dumps(body).encode())).events
    assert event.occurred_at == NOW


# --- through the web app --------------------------------------------------------------------------


@pytest.fixture
def client(redis_url, redis_client, monkeypatch):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, body: bytes, secret: str = SECRET, content_type: str = "application/json"):
    return post_webhook(
        client, "typeform", body, {"Typeform-Signature": sign(secret, body)}, content_type
    )


def test_web_accepts_then_dedupes_the_vendor_retry(client):
    body = raw("form_response__docs_example.json")
    ids = ["typeform:LtWXD3crgy"]
    first = post(client, body)
    assert (first.status_code, first.json) == (202, counts(1, events=ids))
    retry = post(client, body)  # Typeform's retry: the same bytes, the same event_id
    assert (retry.status_code, retry.json) == (202, counts(duplicates=1, events=ids))


def test_web_ignores_kinds_we_do_not_map(client):
    response = post(client, raw("form_response_partial__derived.json"))
    assert (response.status_code, response.json) == (202, counts(ignored=1))


def test_web_quarantines_a_submission_without_email(client):
    body = raw("form_response__no_email.json")
    response = post(client, body)
    assert (response.status_code, response.json) == (202, counts(quarantined=1))
    (kept,) = quarantined(client, "typeform")  # a shared Redis: ours only
    assert (kept["source"], kept["body"]) == ("typeform", body)
    assert kept["reason"].startswith("no email")


@pytest.mark.parametrize(
    ("body", "secret", "content_type", "status", "error"),
    [
        (b"{}", "wrong-secret", "application/json", 401, "bad_signature"),
        (b"{not json", SECRET, "application/json", 400, "bad_payload"),
        (b"x" * (1024 * 1024 + 1), SECRET, "application/json", 413, "payload_too_large"),
        (b"{}", SECRET, "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_web_refusals(client, body, secret, content_type, status, error):
    response = post(client, body, secret, content_type)
    assert (response.status_code, response.json["error"]) == (status, error)
    assert response.json["detail"]


def test_web_missing_signature_is_401(client):
    response = post_webhook(client, "typeform", b"{}")
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")


def test_web_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    client = web_client(monkeypatch, redis_url, SOURCE, None, allow_unsigned_webhooks=False)
    response = post(client, raw("form_response__docs_example.json"))
    assert_unconfigured(response, "TYPEFORM_WEBHOOK_SECRET")


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

ANSWER = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "email", "choice", "choices", "number"]) | JSON},
    optional={
        "field": st.fixed_dictionaries({}, optional={"id": JSON, "ref": JSON}) | JSON,
        "text": JSON,
        "email": st.emails() | JSON,
        "choice": st.fixed_dictionaries({}, optional={"label": JSON, "other": JSON}) | JSON,
        "choices": st.fixed_dictionaries({}, optional={"labels": JSON, "other": JSON}) | JSON,
    },
)
RESPONSE = st.fixed_dictionaries(
    {
        "hidden": st.dictionaries(st.sampled_from(["email", "e_mail", "x"]), st.emails() | JSON),
        "answers": st.lists(ANSWER, max_size=4),
    },
    optional={
        "form_id": JSON,
        "token": JSON,
        "submitted_at": st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat) | JSON,
        "calculated": JSON,
        "definition": st.fixed_dictionaries(
            {}, optional={"title": JSON, "fields": st.lists(JSON | ANSWER) | JSON}
        ),
    },
)
SHAPED = st.fixed_dictionaries(
    {
        "event_type": st.just("form_response"),
        "event_id": st.text(min_size=1, max_size=300),
        "form_response": RESPONSE,
    }
).map(lambda body: json.dumps(body).encode())


def mutated(data: st.DataObject) -> bytes:
    return truncated_and_flipped(data, raw("form_response__docs_example.json"))


PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
BODIES = st.binary(max_size=512) | encoded(JSON) | SHAPED | SHAPED


@FUZZ
@given(body=BODIES)
def test_fuzz_parse(body):
    assert_parses_or_refuses(parse, delivery(body))


@FUZZ
@given(data=st.data())
def test_fuzz_parse_mutated_fixture(data):
    assert_parses_or_refuses(parse, delivery(mutated(data)))


@FUZZ
@given(body=st.binary(max_size=256), header=st.text(max_size=80), secret=st.text(min_size=1))
def test_fuzz_verify(body, header, secret):
    assert_verifies_or_refuses(verify, delivery(body, {HEADER: header}), secret)


def test_fuzz_web_never_500(client):
    @FUZZ
    @given(body=BODIES, data=st.data())
    def check(body, data):
        if data.draw(st.booleans()):
            body = mutated(data)
        signature = data.draw(st.just(sign(SECRET, body)) | st.text(PRINTABLE, max_size=60))
        response = post_webhook(client, "typeform", body, {"Typeform-Signature": signature})
        assert response.status_code in (202, 400, 401), response.json

    check()
