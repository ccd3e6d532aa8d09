"""Cal.com: one test per fixture, the signature scheme, the web contract, and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.inbound import Delivery, Parsed, SignatureError
from connectors.calcom.inbound import SOURCE, event_id, parse, signature, verify
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
SECRET = VECTOR["secret"]
NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CREATED_ID = "calcom-787b880d4b35f817638305e1cb1a95d1bf36f6ff7613d36cae31ab31ea178118"
CANCELLED_ID = "calcom-f2113fc94b4dfb9e13cf6d60b3b59bf9f0227a61e13024aa2c932a5d60c4d222"
RESCHEDULED_ID = "calcom-2db4cc1ffc8d9dec18f37335b457897133917b13c8ee831cd3fed6269f1273d5"
FORM_ID = "calcom-c20f66a125ef6032d85e13421303974626a43034eb949c32d3fa2db0c3adcf65"
BOOKING = {
    "meeting_type": "Strategy Session",
    "organizer": "organizer@example.com",
    "organizer_name": "Organizer Name",
    "location": "integrations:video-provider",
    "event_type_slug": "standard-event-type",
    "name": "Guest User",
    "timezone": "UTC",
    "guests": ["additional-guest@example.com"],
}
CANCELLED = {
    **BOOKING,
    "start_time": "2024-01-04T10:00:00Z",
    "end_time": "2024-01-04T10:15:00Z",
    "title": "Strategy Session: Organizer & Guest",
    "event_type_id": 100,
    "booking_uid": "unique-booking-identifier",
    "booking_id": 200,
    "status": "CANCELLED",
}


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_fixture(name: str) -> Parsed:
    return parse(Delivery("calcom", {}, load(name), NOW))


def events_of(name: str) -> list[dict]:
    return mapped_events(parse_fixture(name))


def meeting(id_: str, type_: str, occurred_at: str, **properties) -> dict:
    return {
        "id": id_,
        "type": type_,
        "email": "guest@example.com",
        "occurred_at": occurred_at,
        "source": "calcom",
        "properties": properties,
    }


# --- one test per fixture ----------------------------------------------------------------------


def test_BOOKING_CREATED_docs_example():
    assert events_of("BOOKING_CREATED.docs-example.json") == [
        meeting(
            CREATED_ID,
            "meeting_booked",
            "2024-01-01T00:00:00Z",
            **BOOKING,
            start_time="2024-01-01T10:00:00Z",
            end_time="2024-01-01T10:15:00Z",
            title="Strategy Session between Organizer and Guest",
            event_type_id=123,
            booking_uid="unique-booking-id",
            booking_id=100,
            status="ACCEPTED",
        )
    ]
    identity = ["unique-booking-id", "guest@example.com", "2024-01-01T10:00:00Z", None]
    assert event_id("BOOKING_CREATED", *identity) == CREATED_ID


def test_BOOKING_RESCHEDULED_docs_example():
    assert events_of("BOOKING_RESCHEDULED.docs-example.json") == [
        meeting(
            RESCHEDULED_ID,
            "meeting_rescheduled",
            "2024-01-01T10:00:00Z",
            **BOOKING,
            start_time="2024-01-10T14:30:00Z",
            end_time="2024-01-10T14:45:00Z",
            title="Strategy Session: Organizer & Guest",
            event_type_id=100,
            booking_uid="new-booking-unique-id",
            booking_id=201,
            status="ACCEPTED",
            previous_booking_uid="previous-booking-unique-id",
            previous_booking_id=200,
            previous_start_time="2024-01-05T14:30:00Z",
            previous_end_time="2024-01-05T14:45:00Z",
        )
    ]


def test_BOOKING_CANCELLED_docs_example():
    assert events_of("BOOKING_CANCELLED.docs-example.json") == [
        meeting(
            CANCELLED_ID,
            "meeting_canceled",
            "2024-01-01T15:00:00Z",
            **CANCELLED,
            cancel_reason="I am no longer able to attend this session.",
            reschedule_requested=False,
        )
    ]


def test_BOOKING_CANCELLED__request_reschedule_derived():
    """The host asked for another time: still a cancellation (the booker may never rebook), marked
    so rules can tell. Same booking as the docs example, so the same id, whatever createdAt says."""
    assert events_of("BOOKING_CANCELLED__request_reschedule.derived.json") == [
        meeting(
            CANCELLED_ID,
            "meeting_canceled",
            "2024-01-02T08:00:00Z",
            **CANCELLED,
            cancel_reason="Could we find a slot later this week?",
            canceled_by="organizer@example.com",
            reschedule_requested=True,
        )
    ]


def test_BOOKING_NO_SHOW_UPDATED_docs_example():
    parsed = parse_fixture("BOOKING_NO_SHOW_UPDATED.docs-example.json")
    assert (parsed.events, parsed.ignored, parsed.unusable) == ([], 1, [])


def test_FORM_SUBMITTED_docs_example():
    """A routing form without an email question: mapped, but unusable -> quarantined."""
    parsed = parse_fixture("FORM_SUBMITTED.docs-example.json")
    assert (parsed.events, parsed.ignored) == ([], 0)
    assert [u.reason for u in parsed.unusable] == [
        "the form response has no email answer (add an email question)"
    ]


def test_FORM_SUBMITTED__with_email_derived():
    assert events_of("FORM_SUBMITTED__with_email.derived.json") == [
        {
            "id": FORM_ID,
            "type": "form_submitted",
            "email": "prospect@example.com",
            "occurred_at": "2024-01-02T09:30:00Z",
            "source": "calcom",
            "properties": {
                "form": "00000000-0000-0000-0000-000000000000",
                "form_name": "Customer Intake Form",
                "fields": {
                    "Email": "prospect@example.com",
                    "What Language do you prefer": ["Placeholder Language"],
                    "Where are you from": ["Placeholder Location"],
                },
            },
        }
    ]


def test_derived_signature_vector():
    body = VECTOR["body"].encode()
    given = VECTOR["headers"]["X-Cal-Signature-256"]
    verify(Delivery("calcom", {"x-cal-signature-256": given}, body, NOW), SECRET)
    assert signature(SECRET, body) == given
    assert json.loads(body) == json.loads(load("BOOKING_CREATED.docs-example.json"))


def test_seats_of_one_booking_are_distinct_events():
    """Seated events share one booking uid: each booker's event keeps its own id."""
    envelope = json.loads(load("BOOKING_CREATED.docs-example.json"))
    envelope["payload"]["attendees"].reverse()
    (other,) = parse(Delivery("calcom", {}, json.dumps(envelope).encode(), NOW)).events
    assert other.email == "additional-guest@example.com"
    assert other.id != CREATED_ID


# --- signatures --------------------------------------------------------------------------------

BODY = load("BOOKING_CREATED.docs-example.json")


def delivery(header: str | None, body: bytes = BODY) -> Delivery:
    headers = {} if header is None else {"x-cal-signature-256": header}
    return Delivery("calcom", headers, body, NOW)


def test_valid_signature_verifies_in_either_case_of_hex():
    verify(delivery(signature(SECRET, BODY)), SECRET)
    verify(delivery(signature(SECRET, BODY).upper()), SECRET)


@pytest.mark.parametrize(
    ("header", "body", "words"),
    [
        pytest.param(signature(SECRET, BODY), BODY.replace(b"Guest", b"Ghost"), "not match",
                     id="tampered"),
        pytest.param(signature("wrong-key", BODY), BODY, "does not match", id="wrong-key"),
        pytest.param(None, BODY, "missing", id="missing"),
        pytest.param("", BODY, "missing", id="empty"),
        pytest.param("no-secret-provided", BODY, "without a secret", id="no-secret-provided"),
        pytest.param("sha256=" + signature(SECRET, BODY), BODY, "not a hex", id="prefixed"),
        pytest.param(signature(SECRET, BODY)[:-2], BODY, "not a hex", id="short"),
    ],
)  # fmt: skip
def test_bad_signatures_are_refused(header, body, words):
    with pytest.raises(SignatureError) as refused:
        verify(delivery(header, body), SECRET)
    assert words in refused.value.detail
    assert SECRET not in refused.value.detail


def test_no_replay_window_a_captured_delivery_verifies_at_any_time():
    """Cal.com signs no timestamp: verification cannot refuse an old delivery (documented);
    the event id makes a replay a duplicate while the idempotency record lasts."""
    late = Delivery(
        "calcom",
        {"x-cal-signature-256": signature(SECRET, BODY)},
        BODY,
        datetime.max.replace(tzinfo=UTC),
    )
    verify(late, SECRET)


def test_unsigned_deliveries_pass_only_without_a_secret():
    verify(delivery(None), None)  # the web calls this only with ALLOW_UNSIGNED_WEBHOOKS=1


# --- through the web app -----------------------------------------------------------------------


@pytest.fixture
def client(redis_url, redis_client, monkeypatch):
    return web_client(monkeypatch, redis_url, SOURCE, SECRET)


def post(client, body: bytes, *, secret=SECRET, content_type="application/json"):
    headers = {"X-Cal-Webhook-Version": "2021-10-20"}
    if secret is not None:
        headers["X-Cal-Signature-256"] = signature(secret, body)
    return post_webhook(client, "calcom", body, headers, content_type)


def test_web_a_booking_is_accepted(client):
    response = post(client, BODY)
    assert (response.status_code, tally(response)) == (202, (1, 0, 0, 0))
    assert response.json["events"] == [CREATED_ID]


def test_web_a_resend_is_a_duplicate_even_with_a_new_createdAt(client):
    post(client, BODY)
    envelope = json.loads(BODY)
    envelope["createdAt"] = "2024-01-01T00:05:00.000Z"
    resend = post(client, json.dumps(envelope).encode())
    assert (resend.status_code, tally(resend)) == (202, (0, 1, 0, 0))


def test_web_booked_rescheduled_canceled_are_three_events(client):
    names = ["BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED"]
    answers = [post(client, load(f"{n}.docs-example.json")) for n in names]
    assert [tally(a) for a in answers] == [(1, 0, 0, 0)] * 3
    assert [a.json["events"] for a in answers] == [[CREATED_ID], [RESCHEDULED_ID], [CANCELLED_ID]]


def test_web_unmapped_trigger_is_ignored(client):
    response = post(client, load("BOOKING_NO_SHOW_UPDATED.docs-example.json"))
    assert (response.status_code, tally(response)) == (202, (0, 0, 1, 0))


def test_web_no_email_is_quarantined_and_kept(client):
    body = load("FORM_SUBMITTED.docs-example.json")
    response = post(client, body)
    assert (response.status_code, tally(response)) == (202, (0, 0, 0, 1))
    (kept,) = quarantined(client)
    assert (kept["source"], json.loads(kept["body"])) == ("calcom", json.loads(body))
    assert "no email" in kept["reason"]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"secret": "wrong-key"}, 401, "bad_signature"),
        ({"secret": None}, 401, "bad_signature"),
        ({"content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
)
def test_web_refusals(client, kwargs, status, error):
    response = post(client, BODY, **kwargs)
    assert (response.status_code, response.json["error"]) == (status, error)


def test_web_unparsable_body_is_400(client):
    response = post(client, b"triggerEvent=BOOKING_CREATED")
    assert (response.status_code, response.json["error"]) == (400, "bad_payload")


def test_web_too_large_is_413(client):
    response = post(client, b" " * (SOURCE.max_bytes + 1))
    assert (response.status_code, response.json["error"]) == (413, "payload_too_large")


def test_web_unset_secret_is_404(redis_url, redis_client, monkeypatch):
    client = web_client(monkeypatch, redis_url, SOURCE, None)
    assert_unconfigured(post(client, BODY), "CALCOM_WEBHOOK_SECRET")


# --- fuzzing -----------------------------------------------------------------------------------

ODD_VALUES = odd_values("BOOKING_CREATED", "FORM_SUBMITTED", "2024-01-01T10:00:00Z")
DOCS = json_fixtures(FIXTURES)
BODIES = odd_bodies(DOCS, ODD_VALUES)


def _parse_safely(body: bytes) -> None:
    assert_parses_or_refuses(parse, Delivery("calcom", {}, body, NOW))


def test_every_field_of_every_fixture_replaced_by_each_odd_value():
    """Exhaustive where random mutation is thin: each slot of each fixture, each odd value."""
    for body in every_slot_replaced(DOCS, ODD_VALUES):
        _parse_safely(body)


@FUZZ
@given(BODIES)
def test_fuzz_parse(body):
    _parse_safely(body)


@FUZZ
@given(st.text(max_size=200) | st.just(signature(SECRET, BODY)), BODIES)
def test_fuzz_verify(header, body):
    assert_verifies_or_refuses(verify, delivery(header, body), SECRET)


@FUZZ_WEB
@given(body=BODIES, signed=st.booleans())
def test_fuzz_web_never_500(client, body, signed):
    response = post(client, body, secret=SECRET if signed else None)
    assert response.status_code in (202, 400, 401, 413), response.json
