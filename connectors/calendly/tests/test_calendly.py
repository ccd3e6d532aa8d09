"""Calendly: one test per fixture, the signature scheme, the web contract, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import Delivery, Parsed, SignatureError
from connectors.calendly.inbound import SOURCE, event_id, parse, signature_header, verify
from connectors.testing import (
    FUZZ,
    FUZZ_WEB,
    assert_parses_or_refuses,
    assert_unconfigured,
    assert_verifies_or_refuses,
    every_slot_replaced,
    json_fixtures,
    mapped_events,
    odd_bodies,
    odd_values,
    post_webhook,
    quarantined,
    tally,
    web_client,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
VECTOR = json.loads((FIXTURES / "derived-signature-vector.json").read_text())
SECRET = VECTOR["signing_key"]
NOW = datetime(2020, 11, 23, 18, 0, tzinfo=UTC)
EVENT_A = "https://api.calendly.com/scheduled_events/AAAAAAAAAAAAAAAA"
EVENT_B = "https://api.calendly.com/scheduled_events/BBBBBBBBBBBBBBBB"
INVITEE_A = f"{EVENT_A}/invitees/AAAAAAAAAAAAAAAA"
INVITEE_B = f"{EVENT_B}/invitees/BBBBBBBBBBBBBBBB"
BOOKED_ID = "calendly-cd5670f8208e4c964e8173a7aa5067ecf5ec4ff91302fb13c134f7c3381a7d75"
CANCELED_ID = "calendly-1e62e1ed5232b7659a1f0e3d286b4c34c2662c32fee6db1810b96f39be98c9b1"
RESCHEDULED_ID = "calendly-ff2eff9be67d9d0e767a5991c397616e9d96345389464e1e9fb1c15ae47883bb"
INVITEE = {"name": "John Doe", "timezone": "America/New_York"}
SLOT_PROPS = {
    "meeting_type": "15 Minute Meeting",
    "organizer": "host@example.com",
    "organizer_name": "Host Name",
    "location": "https://zoom.us/j/00000000000",
    "location_type": "zoom",
}


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_fixture(name: str) -> Parsed:
    return parse(Delivery("calendly", {}, load(name), NOW))


def events_of(name: str) -> list[dict]:
    return mapped_events(parse_fixture(name))


# --- one test per fixture ----------------------------------------------------------------------


def test_invitee_created_openapi_example():
    assert events_of("invitee.created.openapi-example.json") == [
        {
            "id": BOOKED_ID,
            "type": "meeting_booked",
            "email": "test@example.com",
            "occurred_at": "2020-11-23T17:51:19Z",
            "source": "calendly",
            "properties": {"scheduled_event": EVENT_A, "invitee": INVITEE_A, **INVITEE},
        }
    ]
    assert event_id("invitee.created", INVITEE_A, "2020-11-23T17:51:19.000000Z") == BOOKED_ID


def test_invitee_canceled_openapi_example():
    assert events_of("invitee.canceled.openapi-example.json") == [
        {
            "id": CANCELED_ID,
            "type": "meeting_canceled",
            "email": "test@example.com",
            "occurred_at": "2020-11-23T17:54:22Z",
            "source": "calendly",
            "properties": {
                "scheduled_event": EVENT_A,
                "invitee": INVITEE_A,
                **INVITEE,
                "cancel_reason": "Meeting Conflict",
                "canceled_by": "John Doe",
            },
        }
    ]
    assert CANCELED_ID != BOOKED_ID  # the same invitee's booking and cancellation stay distinct


def test_routing_form_submission_created_openapi_example():
    """No email in the payload (the submitter is a URI): not mapped, counted as ignored."""
    parsed = parse_fixture("routing_form_submission.created.openapi-example.json")
    assert (parsed.events, parsed.ignored, parsed.unusable) == ([], 1, [])


def test_invitee_created__scheduled_event_derived():
    assert events_of("invitee.created__scheduled_event.derived.json") == [
        {
            "id": BOOKED_ID,
            "type": "meeting_booked",
            "email": "test@example.com",
            "occurred_at": "2020-11-23T17:51:19Z",
            "source": "calendly",
            "properties": {
                **SLOT_PROPS,
                "start_time": "2020-11-25T15:00:00Z",
                "end_time": "2020-11-25T15:15:00Z",
                "scheduled_event": EVENT_A,
                "event_type": "https://api.calendly.com/event_types/AAAAAAAAAAAAAAAA",
                "invitee": INVITEE_A,
                **INVITEE,
                "answers": {"What would you like to discuss?": "Pricing for 20 seats"},
                "tracking": {"utm_source": "newsletter"},
            },
        }
    ]


def test_invitee_canceled__rescheduled_derived():
    """The old half of a reschedule is not a cancellation: the new half carries the reschedule."""
    parsed = parse_fixture("invitee.canceled__rescheduled.derived.json")
    assert (parsed.events, parsed.ignored, parsed.unusable) == ([], 1, [])


def test_invitee_created__rescheduled_derived():
    assert events_of("invitee.created__rescheduled.derived.json") == [
        {
            "id": RESCHEDULED_ID,
            "type": "meeting_rescheduled",
            "email": "test@example.com",
            "occurred_at": "2020-11-24T09:00:01Z",
            "source": "calendly",
            "properties": {
                **SLOT_PROPS,
                "start_time": "2020-11-26T16:00:00Z",
                "end_time": "2020-11-26T16:15:00Z",
                "scheduled_event": EVENT_B,
                "event_type": "https://api.calendly.com/event_types/AAAAAAAAAAAAAAAA",
                "invitee": INVITEE_B,
                **INVITEE,
                "previous_invitee": INVITEE_A,
            },
        }
    ]


def test_derived_signature_vector():
    body = VECTOR["body"].encode()
    header = VECTOR["header"]["Calendly-Webhook-Signature"]
    at = datetime.fromtimestamp(int(VECTOR["t"]) + 10, UTC)
    verify(Delivery("calendly", {"calendly-webhook-signature": header}, body, at), SECRET)
    assert signature_header(SECRET, body, datetime.fromtimestamp(int(VECTOR["t"]), UTC)) == header


def test_a_time_that_cannot_be_written_in_utc_is_quarantined_not_a_crash():
    envelope = json.loads(load("invitee.created.openapi-example.json"))
    envelope["created_at"] = "9999-12-31T23:00:00-05:00"  # year 10000 in UTC
    parsed = parse(Delivery("calendly", {}, json.dumps(envelope).encode(), NOW))
    assert parsed.events == []
    assert [u.reason for u in parsed.unusable] == [
        "created_at is out of range: '9999-12-31T23:00:00-05:00'"
    ]


# --- signatures --------------------------------------------------------------------------------

BODY = load("invitee.created.openapi-example.json")


def delivery(header: str | None, body: bytes = BODY, now: datetime = NOW) -> Delivery:
    headers = {} if header is None else {"calendly-webhook-signature": header}
    return Delivery("calendly", headers, body, now)


def test_valid_signature_verifies():
    verify(delivery(signature_header(SECRET, BODY, NOW)), SECRET)


def test_a_rotated_key_listing_two_v1_values_verifies():
    good = signature_header(SECRET, BODY, NOW)
    other = signature_header("old-key", BODY, NOW).partition(",")[2]
    verify(delivery(f"{good.partition(',')[0]},{other},{good.partition(',')[2]}"), SECRET)


SIGNED = signature_header(SECRET, BODY, NOW)
LATER, EARLIER = NOW + timedelta(seconds=301), NOW - timedelta(seconds=301)
ZEROS = "0" * 64


@pytest.mark.parametrize(
    ("header", "body", "now", "words"),
    [
        pytest.param(SIGNED, BODY.replace(b"John", b"Jane"), NOW, "not match", id="tampered"),
        pytest.param(signature_header("k", BODY, NOW), BODY, NOW, "not match", id="wrong-key"),
        pytest.param(SIGNED, BODY, LATER, "old", id="stale"),
        pytest.param(SIGNED, BODY, EARLIER, "future", id="future"),
        pytest.param(None, BODY, NOW, "missing", id="missing"),
        pytest.param("", BODY, NOW, "missing", id="empty"),
        pytest.param(f"v1={ZEROS}", BODY, NOW, "exactly one t=", id="no-t"),
        pytest.param(SIGNED.partition(",")[0], BODY, NOW, "no v1=", id="no-v1"),
        pytest.param(f"{SIGNED.partition(',')[0]},v1=zz", BODY, NOW, "no v1=", id="bad-hex"),
        pytest.param(f"t=soon,v1={ZEROS}", BODY, NOW, "exactly one t=", id="bad-t"),
        pytest.param(f"t=1,t=2,v1={ZEROS}", BODY, NOW, "exactly one t=", id="two-t"),
    ],
)
def test_bad_signatures_are_refused(header, body, now, words):
    with pytest.raises(SignatureError) as refused:
        verify(delivery(header, body, now), SECRET)
    assert words in refused.value.detail
    assert SECRET not in refused.value.detail


def test_unsigned_deliveries_pass_only_without_a_secret():
    verify(delivery(None), None)  # the web calls this only with ALLOW_UNSIGNED_WEBHOOKS=1


# --- through the web app -----------------------------------------------------------------------


@pytest.fixture
def client(redis_url, redis_client, monkeypatch):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, body: bytes, *, secret=SECRET, now=None, content_type="application/json"):
    headers = {}
    if secret is not None:
        now = now or datetime.now(UTC)
        headers["Calendly-Webhook-Signature"] = signature_header(secret, body, now)
    return post_webhook(client, "calendly", body, headers, content_type)


def test_web_a_booking_is_accepted(client):
    response = post(client, BODY)
    assert response.status_code == 202
    assert tally(response) == (1, 0, 0, 0)
    assert response.json["events"] == [BOOKED_ID]


def test_web_a_retry_is_a_duplicate(client):
    post(client, BODY)
    retry = post(client, BODY, now=datetime.now(UTC) + timedelta(seconds=30))
    assert (retry.status_code, tally(retry)) == (202, (0, 1, 0, 0))


def test_web_a_reschedule_is_one_meeting_rescheduled(client):
    old_half = post(client, load("invitee.canceled__rescheduled.derived.json"))
    new_half = post(client, load("invitee.created__rescheduled.derived.json"))
    assert tally(old_half) == (0, 0, 1, 0)
    assert tally(new_half) == (1, 0, 0, 0)
    assert new_half.json["events"] == [RESCHEDULED_ID]


def test_web_unmapped_event_is_ignored(client):
    response = post(client, load("routing_form_submission.created.openapi-example.json"))
    assert (response.status_code, tally(response)) == (202, (0, 0, 1, 0))


def test_web_no_email_is_quarantined_and_kept(client):
    envelope = json.loads(BODY)
    del envelope["payload"]["email"]
    body = json.dumps(envelope).encode()
    response = post(client, body)
    assert (response.status_code, tally(response)) == (202, (0, 0, 0, 1))
    (kept,) = quarantined(client)
    assert (kept["source"], json.loads(kept["body"])) == ("calendly", envelope)
    assert "no email" in kept["reason"]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"secret": "wrong-key"}, 401, "bad_signature"),
        ({"secret": None}, 401, "bad_signature"),
        ({"now": datetime.now(UTC) - timedelta(minutes=6)}, 401, "bad_signature"),
        ({"content_type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_web_refusals(client, kwargs, status, error):
    response = post(client, BODY, **kwargs)
    assert (response.status_code, response.json["error"]) == (status, error)


def test_web_unparsable_body_is_400(client):
    response = post(client, b"{not json")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_web_too_large_is_413(client):
    response = post(client, b" " * (SOURCE.max_bytes + 1))
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_web_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    client = web_client(monkeypatch, redis_url, SOURCE, None)
    assert_unconfigured(post(client, BODY), "CALENDLY_WEBHOOK_SECRET")


# --- fuzzing -----------------------------------------------------------------------------------

ODD_VALUES = odd_values("invitee.created", "invitee.canceled", "2020-11-23T17:51:19Z")
DOCS = json_fixtures(FIXTURES)
BODIES = odd_bodies(DOCS, ODD_VALUES)


def _parse_safely(body: bytes) -> None:
    assert_parses_or_refuses(parse, Delivery("calendly", {}, body, NOW))


def test_every_field_of_every_fixture_replaced_by_each_odd_value():
    """Exhaustive where random mutation is thin: each slot of each fixture, each odd value."""
    for body in every_slot_replaced(DOCS, ODD_VALUES):
        _parse_safely(body)


@FUZZ
@given(BODIES)
def test_fuzz_parse(body):
    _parse_safely(body)


@FUZZ
@given(st.text(max_size=200) | st.just(signature_header(SECRET, BODY, NOW)), BODIES)
def test_fuzz_verify(header, body):
    assert_verifies_or_refuses(verify, delivery(header, body), SECRET)


@FUZZ_WEB
@given(body=BODIES, signed=st.booleans())
def test_fuzz_web_never_500(client, body, signed):
    response = post(client, body, secret=SECRET if signed else None)
    assert response.status_code in (202, 400, 401, 413), response.json
