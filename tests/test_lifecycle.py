"""The guardrails (engine.lifecycle): each invariant table-driven, then as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lifecycle import apply
from engine.model import (
    DEFAULT_STAGES,
    DEFAULT_STATUSES,
    STATUS_STAGE,
    BehaviorEvent,
    ContactState,
    Decision,
    Increment,
    Promote,
    Reset,
    Schedule,
    SetStatus,
    Vocabulary,
)

VOCAB = Vocabulary()
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SQL = STATUS_STAGE


def event(at: datetime = T0, id: str = "e1", type: str = "form_submitted") -> BehaviorEvent:
    return BehaviorEvent(id=id, type=type, email="ann@example.com", occurred_at=at)


def state(stage=None, status=None, changed_at=None, **counters) -> ContactState:
    return ContactState("ann@example.com", stage, status, counters, changed_at)


def promote(stage, rule="r"):
    return Decision(rule, Promote(stage))


def set_status(status, rule="r"):
    return Decision(rule, SetStatus(status))


# --- 1. Stages move forward only -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "target", "end", "outcome"),
    [
        (None, "subscriber", "subscriber", "applied"),
        ("lead", "marketing_qualified_lead", "marketing_qualified_lead", "applied"),
        ("lead", SQL, SQL, "applied"),  # forward jumps are allowed
        ("customer", "lead", "customer", "noop"),  # backward: recorded no-op
        ("lead", "lead", "lead", "noop"),  # same stage: no-op
        ("evangelist", "subscriber", "evangelist", "noop"),
    ],
)
def test_stage_moves_forward_only(start, target, end, outcome):
    result = apply(VOCAB, state(start), event(), [promote(target)])
    assert result.state.stage == end
    (change,) = [c for c in result.changes if c.field == "stage"]
    assert (change.from_, change.to, change.outcome) == (start, target, outcome)
    if outcome == "noop":
        assert change.reason


def test_backward_promotion_reason_names_both_stages():
    result = apply(VOCAB, state("customer"), event(), [promote("lead", "old-rule")])
    (change,) = result.changes
    assert change.rule == "old-rule"
    assert change.reason == "lead is behind customer: stages never move backward"


def test_promotions_apply_in_file_order():
    decisions = [promote("marketing_qualified_lead", "a"), promote(SQL, "b"), promote("lead", "c")]
    result = apply(VOCAB, state("lead"), event(), decisions)
    assert result.state.stage == SQL
    assert [(c.rule, c.outcome) for c in result.changes if c.field == "stage"] == [
        ("a", "applied"),
        ("b", "applied"),
        ("c", "noop"),
    ]


# --- 2. Status only at SQL; entering SQL sets the initial status; frozen past SQL ---------------


@pytest.mark.parametrize(
    ("start_stage", "start_status", "decisions", "end_status", "outcome"),
    [
        ("lead", None, [set_status("connected")], None, "refused"),
        (None, None, [set_status("connected")], None, "refused"),
        (SQL, "new", [set_status("connected")], "connected", "applied"),
        ("opportunity", "open_deal", [set_status("connected")], "open_deal", "refused"),
        ("customer", "open_deal", [set_status("bad_timing")], "open_deal", "refused"),
    ],
)
def test_status_changes_only_at_sql(start_stage, start_status, decisions, end_status, outcome):
    result = apply(VOCAB, state(start_stage, start_status), event(), decisions)
    assert result.state.status == end_status
    (change,) = [c for c in result.changes if c.field == "status"]
    assert change.outcome == outcome
    if outcome == "refused":
        assert SQL in change.reason


def test_frozen_past_sql_says_frozen():
    result = apply(VOCAB, state("opportunity", "open_deal"), event(), [set_status("new")])
    assert "frozen" in result.changes[0].reason


def test_entering_sql_sets_initial_status():
    result = apply(VOCAB, state("marketing_qualified_lead"), event(), [promote(SQL, "meeting")])
    assert (result.state.stage, result.state.status) == (SQL, "new")
    status = [c for c in result.changes if c.field == "status"]
    assert [(c.rule, c.from_, c.to, c.outcome) for c in status] == [
        ("meeting", None, "new", "applied")
    ]
    assert result.state.status_changed_at == T0


def test_entering_sql_keeps_a_status_set_in_the_same_evaluation():
    decisions = [set_status("connected", "reply"), promote(SQL, "meeting")]
    result = apply(VOCAB, state("lead"), event(), decisions)
    assert (result.state.stage, result.state.status) == (SQL, "connected")
    assert [c.to for c in result.changes if c.field == "status"] == ["connected"]


def test_custom_first_status_is_the_initial_one():
    vocab = Vocabulary(DEFAULT_STAGES, ("fresh", "working", "done"))
    result = apply(vocab, state("lead"), event(), [promote(SQL)])
    assert result.state.status == "fresh"


def test_jumping_past_sql_sets_no_status():
    result = apply(VOCAB, state("lead"), event(), [promote("customer")])
    assert (result.state.stage, result.state.status) == ("customer", None)


def test_status_set_while_leaving_sql_is_refused_and_status_frozen():
    decisions = [set_status("connected"), promote("opportunity")]
    result = apply(VOCAB, state(SQL, "new"), event(), decisions)
    assert (result.state.stage, result.state.status) == ("opportunity", "new")
    assert [c.outcome for c in result.changes if c.field == "status"] == ["refused"]


# --- 3. Any direction; the last matching rule wins ----------------------------------------------


@pytest.mark.parametrize(
    ("start", "target"),
    [("connected", "new"), ("open_deal", "attempted_to_contact"), ("new", "future_opportunity")],
)
def test_status_moves_in_any_direction(start, target):
    result = apply(VOCAB, state(SQL, start), event(), [set_status(target)])
    assert result.state.status == target


def test_last_matching_rule_wins():
    decisions = [set_status("connected", "a"), set_status("bad_timing", "b")]
    result = apply(VOCAB, state(SQL, "attempted_to_contact"), event(), decisions)
    assert result.state.status == "bad_timing"
    status = [(c.rule, c.outcome) for c in result.changes if c.field == "status"]
    assert status == [("a", "noop"), ("b", "applied")]
    assert "superseded by rule b" in result.changes[0].reason


def test_same_status_is_a_noop_and_keeps_version():
    result = apply(VOCAB, state(SQL, "connected"), event(), [set_status("connected")])
    assert result.changes[0].outcome == "noop"
    assert result.state.version == 0


# --- 4. Stale events cannot change the status ---------------------------------------------------


def test_stale_event_cannot_change_status_but_can_promote():
    start = state(SQL, "connected", changed_at=T0)
    late = event(at=T0 - timedelta(minutes=5))
    result = apply(VOCAB, start, late, [set_status("attempted_to_contact"), promote("opportunity")])
    assert result.state.stage == "opportunity"
    assert result.state.status == "connected"


def test_stale_event_is_refused_with_both_times():
    start = state(SQL, "connected", changed_at=T0)
    result = apply(VOCAB, start, event(at=T0 - timedelta(seconds=1)), [set_status("new")])
    (change,) = result.changes
    assert change.outcome == "refused"
    assert change.reason.startswith("stale: event occurred at 2026-11-26T09:59:59Z")
    assert "2026-11-26T10:00:00Z" in change.reason


def test_event_at_the_same_instant_is_not_stale():
    start = state(SQL, "connected", changed_at=T0)
    result = apply(VOCAB, start, event(at=T0), [set_status("bad_timing")])
    assert result.state.status == "bad_timing"


def test_times_compare_as_instants_across_zones():
    start = state(SQL, "connected", changed_at=T0)
    plus_two = datetime(2026, 11, 26, 11, 59, tzinfo=UTC).astimezone()  # 11:59Z in any zone
    result = apply(VOCAB, start, event(at=plus_two), [set_status("new")])
    assert result.state.status == "new"


# --- Counters and schedules ---------------------------------------------------------------------


def test_counters_increment_and_reset():
    decisions = [
        Decision("a", Increment("attempts")),
        Decision("b", Increment("attempts", by=2)),
        Decision("c", Reset("views")),
        Decision("d", Reset("never")),
    ]
    result = apply(VOCAB, state("lead", attempts=1, views=3), event(), decisions)
    assert result.state.counters == {"attempts": 4}
    assert [(c.field, c.from_, c.to, c.outcome) for c in result.changes] == [
        ("counters.attempts", 1, 2, "applied"),
        ("counters.attempts", 2, 4, "applied"),
        ("counters.views", 3, 0, "applied"),
        ("counters.never", 0, 0, "noop"),
    ]


def test_schedule_is_due_after_the_event_time_with_a_deterministic_id():
    decision = Decision("recycle", Schedule("revisit_due", timedelta(days=90)))
    first = apply(VOCAB, state(SQL, "new"), event(), [decision])
    again = apply(VOCAB, state(SQL, "new"), event(), [decision])
    (scheduled,) = first.scheduled
    assert scheduled.due_at == T0 + timedelta(days=90)
    assert scheduled.event.type == "revisit_due"
    assert scheduled.event.email == "ann@example.com"
    assert scheduled.event.properties == {"scheduled_by": "recycle", "cause_event_id": "e1"}
    assert scheduled.event.id == again.scheduled[0].event.id


def test_version_bumps_only_when_stage_or_status_change():
    assert apply(VOCAB, state("lead"), event(), [Decision("a", Increment("x"))]).state.version == 0
    assert apply(VOCAB, state("lead"), event(), [promote(SQL)]).state.version == 1


# --- Properties over random sequences of events and decisions -----------------------------------

stages = st.sampled_from(DEFAULT_STAGES)
statuses = st.sampled_from(DEFAULT_STATUSES)
actions = st.one_of(
    stages.map(Promote),
    statuses.map(SetStatus),
    st.sampled_from(["a", "b"]).map(Increment),
    st.sampled_from(["a", "b"]).map(Reset),
)
decision_lists = st.lists(
    st.builds(Decision, st.sampled_from(["r1", "r2", "r3", "r4"]), actions), max_size=6
)
offsets = st.integers(min_value=-3600, max_value=3600)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(offsets, decision_lists), min_size=1, max_size=25))
def test_invariants_hold_over_any_sequence(steps):
    current = ContactState("ann@example.com")
    clock = T0
    for i, (offset, decisions) in enumerate(steps):
        clock += timedelta(seconds=offset)  # events may arrive out of order
        ev = event(at=clock, id=f"e{i}")
        before = current
        result = apply(VOCAB, before, ev, decisions)
        current = result.state
        # 1. the stage never decreases
        assert VOCAB.rank(current.stage) >= VOCAB.rank(before.stage)
        # 2. status changes only at SQL, and entering SQL gives a status
        if current.status != before.status:
            assert current.stage == SQL
        if current.stage == SQL and before.stage != SQL:
            asked = [d.action.status for d in decisions if isinstance(d.action, SetStatus)]
            assert current.status == (asked[-1] if asked else VOCAB.initial_status)
        if current.stage != SQL and VOCAB.rank(current.stage) < VOCAB.rank(SQL):
            assert current.status is None
        # 3. the last set_status wins when the status may change
        asked = [d.action.status for d in decisions if isinstance(d.action, SetStatus)]
        stale = before.status_changed_at is not None and ev.occurred_at < before.status_changed_at
        if asked and current.stage == SQL and before.stage == SQL and not stale:
            assert current.status == asked[-1]
        # 4. a stale event never changes the status
        if stale:
            assert current.status == before.status
        # every decision is accounted for in the record
        assert len([c for c in result.changes if c.rule in {d.rule for d in decisions}]) >= len(
            [d for d in decisions if not isinstance(d.action, SetStatus)]
        )
