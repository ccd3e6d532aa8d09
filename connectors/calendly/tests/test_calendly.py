"""Calendly: one test per fixture, the signature scheme, the web contract, and fuzzing."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors
from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.calendly.inbound import SOURCE, event_id, parse, signature_header, verify
from engine.web import create_app

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
    parsed = parse_fixture(name)
    assert (parsed.ignored, parsed.unusable) == (0, [])
    return [event.to_dict() for event in parsed.events]


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
    monkeypatch.setitem(connectors.SOURCES, "calendly", SOURCE)
    app = create_app({"redis_url": redis_url, "webhook_secrets": {"calendly": SECRET}})
    return app.test_client()


def post(client, body: bytes, *, secret=SECRET, now=None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if secret is not None:
        now = now or datetime.now(UTC)
        headers["Calendly-Webhook-Signature"] = signature_header(secret, body, now)
    return client.post("/webhooks/calendly", data=body, headers=headers)


def counts(response) -> tuple[int, int, int, int]:
    body = response.json
    return body["accepted"], body["duplicates"], body["ignored"], body["quarantined"]


def test_web_a_booking_is_accepted(client):
    response = post(client, BODY)
    assert response.status_code == 202
    assert counts(response) == (1, 0, 0, 0)
    assert response.json["events"] == [BOOKED_ID]


def test_web_a_retry_is_a_duplicate(client):
    post(client, BODY)
    retry = post(client, BODY, now=datetime.now(UTC) + timedelta(seconds=30))
    assert (retry.status_code, counts(retry)) == (202, (0, 1, 0, 0))


def test_web_a_reschedule_is_one_meeting_rescheduled(client):
    old_half = post(client, load("invitee.canceled__rescheduled.derived.json"))
    new_half = post(client, load("invitee.created__rescheduled.derived.json"))
    assert counts(old_half) == (0, 0, 1, 0)
    assert counts(new_half) == (1, 0, 0, 0)
    assert new_half.json["events"] == [RESCHEDULED_ID]


def test_web_unmapped_event_is_ignored(client):
    response = post(client, load("routing_form_submission.created.openapi-example.json"))
    assert (response.status_code, counts(response)) == (202, (0, 0, 1, 0))


def test_web_no_email_is_quarantined_and_kept(client):
    envelope = json.loads(BODY)
    del envelope["payload"]["email"]
    body = json.dumps(envelope).encode()
    response = post(client, body)
    assert (response.status_code, counts(response)) == (202, (0, 0, 0, 1))
    (kept,) = client.application.extensions["lifecycle"].store.quarantined()
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
    monkeypatch.setitem(connectors.SOURCES, "calendly", SOURCE)
    client = create_app({"redis_url": redis_url, "webhook_secrets": {}}).test_client()
    response = post(client, BODY)
    assert response.status_code == 404
    assert "CALENDLY_WEBHOOK_SECRET" in response.json["detail"]


# --- fuzzing -----------------------------------------------------------------------------------

ODD_VALUES = [
    *(
        "a@b.co",
        "",
        " ",
        "invitee.created",
        "invitee.canceled",
        "2020-11-23T17:51:19Z",
        "\ud800",
        True,
        0,
        1e308,
        None,
    ),
    *("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"),  # out of range in UTC
]
ODD = st.sampled_from(ODD_VALUES)
JSON = st.recursive(
    ODD | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
DOCS = [json.loads(p.read_bytes()) for p in FIXTURES.glob("*.json") if "signature" not in p.name]


def _slots(node):
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield node, key
        yield from _slots(child)


@st.composite
def mutated_bodies(draw) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(DOCS)))
    slots = list(_slots(doc))
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(slots))
        parent[key] = draw(JSON)
    body = json.dumps(doc).encode()
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


FUNCTION_SCOPED = HealthCheck.function_scoped_fixture  # one app serves every example
BODIES = st.binary(max_size=400) | JSON.map(lambda v: json.dumps(v).encode()) | mutated_bodies()


def _parse_safely(body: bytes) -> None:
    try:
        result = parse(Delivery("calendly", {}, body, NOW))
    except BadPayload:
        return
    assert isinstance(result, Parsed)
    for event in result.events:
        event.to_dict()  # what the store writes must be writable


def test_every_field_of_every_fixture_replaced_by_each_odd_value():
    """Exhaustive where random mutation is thin: each slot of each fixture, each odd value."""
    for doc in DOCS:
        for index in range(len(list(_slots(doc)))):
            for value in ODD_VALUES:
                copied = copy.deepcopy(doc)
                parent, key = list(_slots(copied))[index]
                parent[key] = value
                _parse_safely(json.dumps(copied).encode())


@settings(max_examples=200, deadline=None)
@given(BODIES)
def test_fuzz_parse(body):
    _parse_safely(body)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.just(signature_header(SECRET, BODY, NOW)), BODIES)
def test_fuzz_verify(header, body):
    with contextlib.suppress(SignatureError):
        verify(delivery(header, body), SECRET)


@settings(max_examples=200, deadline=None, suppress_health_check=[FUNCTION_SCOPED])
@given(body=BODIES, signed=st.booleans())
def test_fuzz_web_never_500(client, body, signed):
    response = post(client, body, secret=SECRET if signed else None)
    assert response.status_code in (202, 400, 401, 413), response.json
