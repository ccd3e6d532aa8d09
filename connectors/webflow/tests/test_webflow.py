"""Webflow: one test per fixture, the signature scheme, the web contract, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
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
from connectors.webflow.inbound import (
    SIGNATURE,
    SOURCE,
    TIMESTAMP,
    event_types,
    parse,
    signed_headers,
    verify,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
SECRET = "webflow-test-secret"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def delivery(body: bytes, headers: dict[str, str] | None = None, now: datetime = NOW) -> Delivery:
    return Delivery("webflow", headers or {}, body, now)


def parsed(name: str) -> Parsed:
    return parse(delivery(raw(name)))


def event_of(name: str) -> dict:
    return only_event(parsed(name))


# --- one test per fixture -----------------------------------------------------------------------


def test_form_submission__docs_example():
    assert event_of("form_submission__docs_example.json") == {
        "id": "webflow:6321ca84df3949bfc6752327",
        "type": "form_submitted",
        "email": "zaphod@heartofgold.ai",
        "occurred_at": "2022-09-14T12:35:16.117000Z",
        "source": "webflow",
        "properties": {
            "form": "65429eadebe8a9f3a30f62d0",
            "form_name": "Contact Us",
            "fields": {
                "First Name": "Zaphod",
                "Last Name": "Beeblebrox",
                "email": "zaphod@heartofgold.ai",
                "Phone Number": 15550000000,
            },
            "site_id": "65427cf400e02b306eaa049c",
        },
    }
    assert event_types == ("form_submission",)


def test_form_submission__v1_legacy():
    assert event_of("form_submission__v1_legacy.json") == {
        "id": "webflow:6321ca84df3949bfc6752327",
        "type": "form_submitted",
        "email": "some.one@home.com",
        "occurred_at": "2022-09-14T12:35:16.117000Z",
        "source": "webflow",
        "properties": {
            "form": "Sample Form",  # v1 names no form id: the name stands in
            "form_name": "Sample Form",
            "fields": {"name": "Some One", "email": "some.one@home.com"},
            "site_id": "62749158efef318abc8d5a0f",
        },
    }


def test_form_submission__email_address_field():
    assert event_of("form_submission__email_address_field.json") == {
        "id": "webflow:6745a1b2c3d4e5f601234567",
        "type": "form_submitted",
        "email": "ann.lee@example.com",
        "occurred_at": "2026-11-26T10:00:00.250000Z",
        "source": "webflow",
        "properties": {
            "form": "6745a0f1e2d3c4b5a6978812",
            "form_name": "Demo Request",
            "fields": {
                "Full Name": "Ann Lee",
                "Work Email Address": "Ann.Lee@Example.com",
                "Referred by": "friend@example.net",
                "Team size": "11-50",
            },
            "site_id": "65427cf400e02b306eaa049c",
        },
    }


def test_form_submission__unnamed_email_field():
    assert event_of("form_submission__unnamed_email_field.json") == {
        "id": "webflow:6745b2c3d4e5f60712345678",
        "type": "form_submitted",
        "email": "bo@example.org",
        "occurred_at": "2026-11-26T11:00:00Z",
        "source": "webflow",
        "properties": {
            "form": "6745b1a0f9e8d7c6b5a49321",
            "form_name": "Newsletter",
            "fields": {"Your contact": " bo@example.org ", "Phone": 15550000001},
            "site_id": "65427cf400e02b306eaa049c",
        },
    }


def test_form_submission__no_email():
    result = parsed("form_submission__no_email.json")
    assert (result.events, result.ignored) == ([], 0)
    (unusable,) = result.unusable
    assert unusable.reason.startswith("no email")
    assert unusable.item["id"] == "6745c3d4e5f6071823456789"


def test_site_publish__docs_example():
    assert parsed("site_publish__docs_example.json") == Parsed(ignored=1)


def test_signature_vector__derived():
    vector = json.loads(raw("signature_vector__derived.json"))
    body, headers = vector["body"].encode(), vector["headers"]
    sent = datetime.fromtimestamp(int(headers[TIMESTAMP]) / 1000, UTC)
    assert signed_headers(vector["secret"], body, sent)[SIGNATURE] == headers[SIGNATURE]
    verify(delivery(body, headers, now=sent + timedelta(seconds=3)), vector["secret"])
    assert parse(delivery(body)) == parsed("form_submission__docs_example.json")


# --- the signature ------------------------------------------------------------------------------

BODY = b'{"triggerType":"form_submission","payload":{}}'


def signed(body: bytes = BODY, *, secret: str = SECRET, sent: datetime = NOW, now=NOW):
    return delivery(body, signed_headers(secret, body, sent), now=now)


def test_valid_signature_verifies_within_five_minutes():
    verify(signed(sent=NOW - timedelta(minutes=4, seconds=59)), SECRET)
    verify(signed(sent=NOW + timedelta(minutes=4, seconds=59)), SECRET)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"secret": "another-secret"}, "does not match"),
        ({"sent": NOW - timedelta(minutes=5, seconds=2)}, "old"),
        ({"sent": NOW + timedelta(minutes=5, seconds=2)}, "future"),
    ],
)
def test_wrong_key_stale_and_future_fail(change, words):
    with pytest.raises(SignatureError, match=words) as caught:
        verify(signed(**change), SECRET)
    assert SECRET not in str(caught.value)


def test_tampered_body_fails():
    good = signed()
    with pytest.raises(SignatureError, match="does not match"):
        verify(delivery(BODY.replace(b"{}", b'{"x":1}'), dict(good.headers)), SECRET)


def test_timestamp_is_part_of_the_signed_message():
    headers = signed_headers(SECRET, BODY, NOW)
    headers[TIMESTAMP] = str(int(headers[TIMESTAMP]) + 1)
    with pytest.raises(SignatureError, match="does not match"):
        verify(delivery(BODY, headers), SECRET)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "missing"),
        ({TIMESTAMP: "1764158400000"}, "missing"),
        ({SIGNATURE: "ab" * 32}, "missing"),
        ({TIMESTAMP: "soon", SIGNATURE: "ab" * 32}, "epoch milliseconds"),
        ({TIMESTAMP: "-1764158400000", SIGNATURE: "ab" * 32}, "epoch milliseconds"),
        ({TIMESTAMP: "1" * 5000, SIGNATURE: "ab" * 32}, "epoch milliseconds"),
        ({TIMESTAMP: "1764158400", SIGNATURE: "ab" * 32}, "old"),  # seconds, not milliseconds
    ],
)
def test_bad_headers(headers, words):
    with pytest.raises(SignatureError, match=words):
        verify(delivery(BODY, headers), SECRET)


def test_a_replay_inside_the_window_verifies_and_is_deduped_by_the_submission_id():
    """The window bounds replays; inside it, the submission id makes a replay a duplicate."""
    body = raw("form_submission__docs_example.json")
    first = parse(signed(body, now=NOW))
    verify(signed(body, now=NOW + timedelta(minutes=2)), SECRET)
    assert parse(signed(body, now=NOW + timedelta(minutes=2))).events[0].id == first.events[0].id


def test_unsigned_allowed_only_without_a_secret():
    verify(delivery(BODY), None)  # the web reaches this only with ALLOW_UNSIGNED_WEBHOOKS=1


# --- parsing edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{not json", b"[]", b'"x"', b'{"a": Infinity}'])
def test_unparsable_bodies(body):
    with pytest.raises(BadPayload):
        parse(delivery(body))


TWO_ADDRESSES = {"a": "x@y.co", "b": "z@y.co"}
NUMERIC_TIME = {"submittedAt": 1663, "data": {"email": "x@y.co"}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"triggerType": "form_submission"}, "payload is missing"),
        ({"triggerType": "form_submission", "payload": {"data": {}}}, "payload.id"),
        ({"triggerType": "form_submission", "payload": {"id": "1", "data": []}}, "no email"),
        (
            {"triggerType": "form_submission", "payload": {"id": "1", "data": TWO_ADDRESSES}},
            "no email",  # two addresses and no field says which is the person's: ambiguous
        ),
        (
            {"triggerType": "form_submission", "payload": {"id": "1", **NUMERIC_TIME}},
            "occurred_at must be an ISO 8601 string",
        ),
    ],
)
def test_unusable_submissions_are_kept(body, reason):
    (unusable,) = parse(delivery(json.dumps(body).encode())).unusable
    assert unusable.reason.startswith(reason)


def test_missing_submitted_at_falls_back_to_delivery_time():
    body = {"triggerType": "form_submission", "payload": {"id": "1", "data": {"Email": "a@b.co"}}}
    (event,) = parse(delivery(json.dumps(body).encode())).events
    assert (event.occurred_at, event.email) == (NOW, "a@b.co")


# --- through the web app ------------------------------------------------------------------------


@pytest.fixture
def client(redis_url, redis_client, monkeypatch):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, body: bytes, *, secret=SECRET, sent=None, content_type="application/json"):
    headers = signed_headers(secret, body, sent or datetime.now(UTC))
    return post_webhook(client, "webflow", body, headers, content_type)


def test_web_accepts_then_dedupes_the_vendor_retry(client):
    body, ids = raw("form_submission__docs_example.json"), ["webflow:6321ca84df3949bfc6752327"]
    first = post(client, body, sent=datetime.now(UTC) - timedelta(seconds=30))
    assert (first.status_code, first.json) == (202, counts(1, events=ids))
    retry = post(client, body)  # Webflow's next attempt: a new timestamp, the same submission
    assert (retry.status_code, retry.json) == (202, counts(duplicates=1, events=ids))


def test_web_ignores_triggers_we_do_not_map(client):
    response = post(client, raw("site_publish__docs_example.json"))
    assert (response.status_code, response.json) == (202, counts(ignored=1))


def test_web_quarantines_a_submission_without_email(client):
    body = raw("form_submission__no_email.json")
    response = post(client, body)
    assert (response.status_code, response.json) == (202, counts(quarantined=1))
    (kept,) = quarantined(client, "webflow")  # a shared Redis: ours only
    assert (kept["source"], kept["body"]) == ("webflow", body)
    assert kept["reason"].startswith("no email")


@pytest.mark.parametrize(
    ("body", "change", "status", "error"),
    [
        (b"{}", {"secret": "wrong-secret"}, 401, "bad_signature"),
        (b"{}", {"skew": timedelta(minutes=-6)}, 401, "bad_signature"),
        (b"{}", {"skew": timedelta(minutes=6)}, 401, "bad_signature"),
        (b"{not json", {}, 400, "bad_payload"),
        (b"x" * (1024 * 1024 + 1), {}, 413, "payload_too_large"),
        (b"{}", {"content_type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_web_refusals(client, body, change, status, error):
    change = dict(change)
    if "skew" in change:  # computed now, not when the parameters were collected
        change["sent"] = datetime.now(UTC) + change.pop("skew")
    response = post(client, body, **change)
    assert (response.status_code, response.json["error"]) == (status, error)
    assert response.json["detail"]


def test_web_missing_signature_is_401(client):
    response = post_webhook(client, "webflow", b"{}")
    assert (response.status_code, response.json["error"]) == (401, "bad_signature")


def test_web_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    client = web_client(monkeypatch, redis_url, SOURCE, None, allow_unsigned_webhooks=False)
    response = post(client, raw("form_submission__docs_example.json"))
    assert_unconfigured(response, "WEBFLOW_WEBHOOK_SECRET")


# --- fuzzing: only Parsed, BadPayload or SignatureError; never a 500 ------------------------------

FIELD_NAMES = st.sampled_from(["email", "Email", "Work email", "x"]) | st.text(max_size=6)
PAYLOAD = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=300),
        "data": st.dictionaries(FIELD_NAMES, st.emails() | JSON),
    },
    optional={
        "name": JSON,
        "formId": JSON,
        "siteId": JSON,
        "submittedAt": st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat) | JSON,
        "schema": st.lists(
            st.fixed_dictionaries({}, optional={"fieldName": FIELD_NAMES, "fieldType": JSON}) | JSON
        )
        | JSON,
    },
)
SHAPED = st.fixed_dictionaries(
    {"triggerType": st.just("form_submission"), "payload": PAYLOAD}
) | st.fixed_dictionaries({"_id": JSON, "data": JSON}, optional={"name": JSON, "d": JSON})
BODIES = st.binary(max_size=512) | encoded(JSON) | encoded(SHAPED)
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


def mutated(data: st.DataObject) -> bytes:
    return truncated_and_flipped(data, raw("form_submission__docs_example.json"))


@FUZZ
@given(body=BODIES)
def test_fuzz_parse(body):
    assert_parses_or_refuses(parse, delivery(body))


@FUZZ
@given(data=st.data())
def test_fuzz_parse_mutated_fixture(data):
    assert_parses_or_refuses(parse, delivery(mutated(data)))


@FUZZ
@given(
    body=st.binary(max_size=256),
    timestamp=st.text(max_size=20) | st.integers(0, 2 * 10**13).map(str),
    signature=st.text(max_size=70),
    secret=st.text(min_size=1),
)
def test_fuzz_verify(body, timestamp, signature, secret):
    headers = {TIMESTAMP: timestamp, SIGNATURE: signature}
    assert_verifies_or_refuses(verify, delivery(body, headers), secret)


def test_fuzz_web_never_500(client):
    @FUZZ
    @given(body=BODIES, data=st.data())
    def check(body, data):
        if data.draw(st.booleans()):
            body = mutated(data)
        headers = signed_headers(SECRET, body, datetime.now(UTC))
        if data.draw(st.booleans()):
            headers[data.draw(st.sampled_from([TIMESTAMP, SIGNATURE]))] = data.draw(
                st.text(PRINTABLE, max_size=40)
            )
        response = post_webhook(client, "webflow", body, headers)
        assert response.status_code in (202, 400, 401), response.json

    check()
