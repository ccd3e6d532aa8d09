"""The guardrails: what the rules decide, judged against the invariants of DESIGN §3.

This is the only place the lifecycle invariants live:

1. A stage never moves backward (a promotion at or behind the current stage is a recorded no-op).
2. A lead status changes only while the stage is sales_qualified_lead; entering that stage sets the
   initial status unless a rule of the same evaluation sets one; past it the status is frozen.
3. Status may move in any direction; within one evaluation the last matching rule wins.
4. An event that occurred before the event behind the last status change cannot change the
   status (it is stale), though it may still promote. Event times are compared, never processing
   times.

Invariants 5 (an event id changes state at most once) and 6 (one contact's events apply one at a
time) are about delivery, not about values: the store enforces them around this pure function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.model import (
    STATUS_STAGE,
    BehaviorEvent,
    Change,
    ContactState,
    Decision,
    Increment,
    Promote,
    Reset,
    Schedule,
    ScheduledEvent,
    SetStatus,
    Vocabulary,
    format_time,
)


@dataclass(frozen=True)
class Applied:
    """The result of one evaluation passed through the guardrails."""

    state: ContactState
    changes: tuple[Change, ...]
    scheduled: tuple[ScheduledEvent, ...]

    @property
    def applied(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.outcome == "applied")


def apply(
    vocab: Vocabulary,
    state: ContactState,
    event: BehaviorEvent,
    decisions: Sequence[Decision],
) -> Applied:
    """Judge `decisions` (in rule file order) for `event` against `state`."""
    stage, stage_changes = _promote(vocab, state.stage, decisions)
    status, status_changes = _set_status(vocab, state, event, stage, decisions, stage_changes)
    counters, counter_changes = _count(state.counters, decisions)
    scheduled, schedule_changes = _schedule(event, decisions)

    moved = stage != state.stage or status != state.status
    new_state = state.evolve(
        stage=stage,
        status=status,
        counters=counters,
        status_changed_at=event.occurred_at if status != state.status else state.status_changed_at,
        version=state.version + 1 if moved else state.version,
    )
    changes = (*stage_changes, *status_changes, *counter_changes, *schedule_changes)
    return Applied(new_state, changes, scheduled)


def _promote(
    vocab: Vocabulary, stage: str | None, decisions: Sequence[Decision]
) -> tuple[str | None, list[Change]]:
    changes = []
    for decision in decisions:
        if not isinstance(decision.action, Promote):
            continue
        target = decision.action.stage
        if target not in vocab.stages:
            changes.append(_refuse(decision, "stage", stage, target, f"unknown stage {target!r}"))
        elif vocab.rank(target) <= vocab.rank(stage):
            reason = (
                f"already at {stage}"
                if target == stage
                else f"{target} is behind {stage}: stages never move backward"
            )
            changes.append(Change(decision.rule, "stage", stage, target, "noop", reason))
        else:
            changes.append(Change(decision.rule, "stage", stage, target, "applied"))
            stage = target
    return stage, changes


def _set_status(
    vocab: Vocabulary,
    state: ContactState,
    event: BehaviorEvent,
    stage: str | None,
    decisions: Sequence[Decision],
    stage_changes: Sequence[Change],
) -> tuple[str | None, list[Change]]:
    asked = [d for d in decisions if isinstance(d.action, SetStatus)]
    changes = []
    for earlier in asked[:-1]:
        reason = f"superseded by rule {asked[-1].rule} (the last matching rule wins)"
        changes.append(
            Change(earlier.rule, "status", state.status, earlier.action.status, "noop", reason)
        )
    if asked:
        change = _judge_status(vocab, state, event, stage, asked[-1])
        changes.append(change)
        if change.outcome != "refused":
            return change.to, changes
    if stage == STATUS_STAGE and state.stage != STATUS_STAGE:
        entered_by = [c.rule for c in stage_changes if c.outcome == "applied"][-1]
        reason = f"entered {STATUS_STAGE}: initial status"
        initial = vocab.initial_status
        changes.append(Change(entered_by, "status", state.status, initial, "applied", reason))
        return initial, changes
    return state.status, changes


def _judge_status(
    vocab: Vocabulary,
    state: ContactState,
    event: BehaviorEvent,
    stage: str | None,
    decision: Decision,
) -> Change:
    target = decision.action.status  # type: ignore[union-attr]
    current = state.status
    if target not in vocab.statuses:
        return _refuse(decision, "status", current, target, f"unknown status {target!r}")
    if stage != STATUS_STAGE:
        if vocab.rank(stage) > vocab.rank(STATUS_STAGE):
            reason = f"contact is at {stage}: the lead status is frozen past {STATUS_STAGE}"
        else:
            at = stage or "no stage yet"
            reason = f"contact is at {at}: a lead status applies only at {STATUS_STAGE}"
        return _refuse(decision, "status", current, target, reason)
    changed_at = state.status_changed_at
    if changed_at is not None and event.occurred_at < changed_at:
        reason = (
            f"stale: event occurred at {format_time(event.occurred_at)}, before the last status "
            f"change at {format_time(changed_at)}"
        )
        return _refuse(decision, "status", current, target, reason)
    if target == current:
        return Change(decision.rule, "status", current, target, "noop", f"already {current}")
    return Change(decision.rule, "status", current, target, "applied")


def _count(
    counters: Mapping[str, int], decisions: Sequence[Decision]
) -> tuple[dict[str, int], list[Change]]:
    values = dict(counters)
    changes = []
    for decision in decisions:
        action = decision.action
        if isinstance(action, Increment):
            before = values.get(action.counter, 0)
            values[action.counter] = before + action.by
            field = f"counters.{action.counter}"
            changes.append(Change(decision.rule, field, before, before + action.by, "applied"))
        elif isinstance(action, Reset):
            before = values.pop(action.counter, 0)
            field = f"counters.{action.counter}"
            if before == 0:
                changes.append(Change(decision.rule, field, 0, 0, "noop", "already 0"))
            else:
                changes.append(Change(decision.rule, field, before, 0, "applied"))
    return values, changes


def _schedule(
    event: BehaviorEvent, decisions: Sequence[Decision]
) -> tuple[tuple[ScheduledEvent, ...], list[Change]]:
    scheduled, changes = [], []
    for decision in decisions:
        action = decision.action
        if not isinstance(action, Schedule):
            continue
        delayed = BehaviorEvent(
            id=scheduled_event_id(event.id, decision.rule, action.event),
            type=action.event,
            email=event.email,
            occurred_at=event.occurred_at + action.after,
            source="schedule",
            properties={"scheduled_by": decision.rule, "cause_event_id": event.id},
        )
        scheduled.append(ScheduledEvent(delayed, decision.rule))
        due = f"{action.event} due {format_time(delayed.occurred_at)}"
        changes.append(Change(decision.rule, "schedule", None, due, "applied"))
    return tuple(scheduled), changes


def scheduled_event_id(cause_id: str, rule: str, event_type: str) -> str:
    """Deterministic: a retried evaluation schedules the same event (a duplicate, not a 2nd)."""
    digest = hashlib.sha256(f"{cause_id}\0{rule}\0{event_type}".encode()).hexdigest()[:20]
    return f"sched-{digest}"


def _refuse(decision: Decision, field: str, current: object, target: object, why: str) -> Change:
    return Change(decision.rule, field, current, target, "refused", why)
