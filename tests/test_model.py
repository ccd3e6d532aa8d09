"""Events and contact state: validation and JSON round trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidEvent
from engine.model import BehaviorEvent, Change, ContactState, normalize_email

GOOD = {
    "id": "evt-1",
    "type": "form_submitted",
    "email": "  Ann@Example.COM ",
    "occurred_at": "2026-11-26T10:00:00Z",
    "source": "typeform",
    "properties": {"form": "demo-request"},
}


def test_event_from_dict_normalizes_email_and_time():
    event = BehaviorEvent.from_dict(GOOD)
    assert event.email == "ann@example.com"
    assert event.occurred_at == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert BehaviorEvent.from_dict(event.to_dict()) == event


def test_event_times_keep_their_instant_across_zones():
    event = BehaviorEvent.from_dict({**GOOD, "occurred_at": "2026-11-26T12:00:00+02:00"})
    assert event.to_dict()["occurred_at"] == "2026-11-26T10:00:00Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email": "not-an-address"}, "email must be an address"),
        ({"email": None}, "event is missing email"),
        ({"occurred_at": "2026-11-26T10:00:00"}, "must name its time zone"),
        ({"occurred_at": "yesterday"}, "must be ISO 8601"),
        ({"occurred_at": 1764151200}, "must be an ISO 8601 string"),
        ({"type": "Form Submitted"}, "snake_case"),
        ({"id": ""}, "event is missing id"),
        ({"id": "x" * 300}, "at most 256"),
        ({"properties": ["a"]}, "properties must be an object"),
        ({"colour": "red"}, "unknown event field(s): colour"),
    ],
)
def test_bad_events_are_refused_with_a_reason(change, message):
    with pytest.raises(InvalidEvent, match=message.replace("(", r"\(").replace(")", r"\)")):
        BehaviorEvent.from_dict({**GOOD, **change})


def test_an_event_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidEvent, match="JSON object"):
        BehaviorEvent.from_dict(["not", "an", "object"])


def test_default_source_is_standard():
    event = BehaviorEvent.from_dict({k: v for k, v in GOOD.items() if k != "source"})
    assert event.source == "standard"


@given(st.emails())
def test_email_identity_is_trimmed_and_lower_cased(email):
    assert normalize_email(f"  {email.upper()} ") == email.lower()


states = st.builds(
    ContactState,
    email=st.just("ann@example.com"),
    stage=st.sampled_from([None, "lead", "sales_qualified_lead"]),
    status=st.sampled_from([None, "new"]),
    counters=st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 99)),
    status_changed_at=st.none()
    | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)),
    crm_ids=st.dictionaries(st.sampled_from(["hubspot", "salesforce"]), st.text(min_size=1)),
    version=st.integers(0, 1000),
)


@given(states)
def test_contact_state_round_trips(state):
    assert ContactState.from_dict(state.to_dict()) == state


def test_change_round_trips():
    change = Change("r", "status", "new", "connected", "refused", "stale")
    assert Change.from_dict(change.to_dict()) == change
    assert change.to_dict()["from"] == "new"


def test_a_time_that_cannot_be_expressed_in_utc_is_refused():
    with pytest.raises(InvalidEvent, match="out of range"):
        BehaviorEvent.from_dict({**GOOD, "occurred_at": "9999-12-31T23:00:00-05:00"})
