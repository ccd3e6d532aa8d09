"""`lifecycle backtest`: the stored event history replayed through two rule sets, in memory.

The `lc:inbox` stream is also the event log. `read_history` reads it oldest first and keeps what
a replay needs: each event id once (a requeued or unparked entry is the same event), only events
that occurred in the window, and no delayed event the engine made itself (`source: schedule`):
each side schedules its own, and they fire when due, as `ContactReplay` does (production's RQ
scheduler). Events known only by a CRM record id get the email the engine learned for it.

`backtest` is pure: every contact's events go through `ContactReplay` once with the current rules
and once with the candidate, contacts start from nothing at the window's start, and what is kept
per side is the funnel (the shape of `GET /api/funnel`, computed in memory the way the events
worker counts it) plus, per contact, the end stage and status. Contacts whose outcome differs are
counted by transition, with examples naming the rules that made the difference. One contact is
replayed at a time, so memory holds the events and the funnel counters, not every step.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.errors import InvalidEvent
from engine.model import BehaviorEvent, ContactState, format_time
from engine.process import ContactReplay, Step
from engine.rules import Rules

Progress = Callable[[int], None]
"""Called with how many more events were handled (read, or replayed)."""

SCHEDULED_SOURCE = "schedule"
"""The source of the delayed events `schedule:` actions make (engine.lifecycle)."""


# --- The history ---------------------------------------------------------------------------------


@dataclass
class History:
    """What a replay needs from the event log, and what was left out and why."""

    events: list[BehaviorEvent] = field(default_factory=list)
    entries: int = 0
    """stream entries read"""
    duplicates: int = 0
    """entries of an event id seen before (a requeue, an unparked event)"""
    scheduled: int = 0
    """delayed events made by the engine: each side of the replay makes its own"""
    outside: int = 0
    """events that occurred before the window"""
    unreadable: int = 0
    unresolved: int = 0
    """events known only by a CRM record id the engine never learned"""
    since: datetime | None = None

    def skipped(self) -> str:
        parts = [
            (self.duplicates, "duplicate entries"),
            (self.scheduled, "engine-scheduled events (each side schedules its own)"),
            (self.outside, "events before the window"),
            (self.unreadable, "unreadable entries"),
            (self.unresolved, "events whose CRM record id was never resolved"),
        ]
        return ", ".join(f"{n:,} {what}" for n, what in parts if n) or "nothing"


def history_from_entries(
    entries: Iterable[Mapping[str, Any]],
    since: datetime | None = None,
    emails_for: Callable[[list[tuple[str, str]]], Mapping[tuple[str, str], str]] | None = None,
    progress: Progress | None = None,
) -> History:
    """Inbox entries (fields `e`, `src`, `at`; str or bytes keys), oldest first, as a History.

    `emails_for` resolves (crm, record id) pairs to emails for events that carry only those.
    """
    history = History(since=since)
    seen: set[str] = set()
    unresolved: list[BehaviorEvent] = []
    handled = 0
    for fields in entries:
        history.entries += 1
        handled += 1
        if progress is not None and handled == 1000:
            progress(handled)
            handled = 0
        event = _event(fields)
        if event is None:
            history.unreadable += 1
            continue
        if event.id in seen:
            history.duplicates += 1
            continue
        seen.add(event.id)
        if event.source == SCHEDULED_SOURCE:
            history.scheduled += 1
        elif since is not None and event.occurred_at < since:
            history.outside += 1
        elif not event.resolved:
            unresolved.append(event)
            history.events.append(event)
        else:
            history.events.append(event)
    if progress is not None and handled:
        progress(handled)
    if unresolved:
        _resolve(history, unresolved, emails_for)
    return history


def _event(fields: Mapping[Any, Any]) -> BehaviorEvent | None:
    raw = fields.get("e", fields.get(b"e"))
    try:
        return BehaviorEvent.from_dict(json.loads(raw))
    except (TypeError, ValueError, InvalidEvent):
        return None


def _resolve(
    history: History,
    pending: list[BehaviorEvent],
    emails_for: Callable[[list[tuple[str, str]]], Mapping[tuple[str, str], str]] | None,
) -> None:
    refs = sorted({(e.crm, e.crm_id) for e in pending})  # type: ignore[misc]
    found = emails_for(refs) if emails_for is not None and refs else {}  # type: ignore[arg-type]
    resolved: dict[str, BehaviorEvent] = {}
    for event in pending:
        email = found.get((event.crm, event.crm_id))  # type: ignore[arg-type]
        if email:
            resolved[event.id] = BehaviorEvent(
                event.id,
                event.type,
                email,
                event.occurred_at,
                event.source,
                event.properties,
                event.crm,
                event.crm_id,
            )
    kept = []
    for event in history.events:
        if event.resolved:
            kept.append(event)
        elif event.id in resolved:
            kept.append(resolved[event.id])
        else:
            history.unresolved += 1
    history.events = kept


def read_history(
    client: Any,
    since: datetime | None = None,
    chunk: int = 5000,
    progress: Progress | None = None,
) -> History:
    """Read the inbox stream (the event log) from Redis, oldest first. Redis trouble raises
    engine.store.StoreUnavailable."""
    from engine.store import INBOX, Store, unavailable_as_error

    store = Store(client)

    def entries() -> Iterable[Mapping[Any, Any]]:
        start = "-"
        while True:
            with unavailable_as_error():
                batch = client.xrange(INBOX, min=start, max="+", count=chunk)
            for _, fields in batch:
                yield fields
            if len(batch) < chunk:
                return
            last = batch[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))

    def emails_for(refs: list[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        for i in range(0, len(refs), chunk):
            with unavailable_as_error():
                found.update(store.crm_emails(refs[i : i + chunk]))
        return found

    return history_from_entries(entries(), since, emails_for, progress)


def stored_event_count(client: Any) -> int:
    """Entries in the event log (an upper bound of what a backtest replays)."""
    from engine.store import INBOX, unavailable_as_error

    with unavailable_as_error():
        return int(client.xlen(INBOX))


# --- One side of the replay: the funnel, counted the way the events worker counts it ------------


@dataclass
class Funnel:
    """The funnel counters of one rule set over the replayed contacts (engine.pipeline._account)."""

    rules: Rules
    contacts: int = 0
    current: Counter[str | None] = field(default_factory=Counter)
    reached: Counter[str] = field(default_factory=Counter)
    hours: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)

    def count(self, replay: ContactReplay) -> None:
        if not replay.steps:
            return
        self.contacts += 1
        vocab = self.rules.vocab
        first_seen = replay.steps[0].event.occurred_at
        for result in replay.steps:
            before, after = result.before, result.after
            if after.stage != before.stage:
                newly = vocab.stages[vocab.rank(before.stage) + 1 : vocab.rank(after.stage) + 1]
                for stage in newly:
                    self.reached[stage] += 1
                    hours = (result.event.occurred_at - first_seen).total_seconds() / 3600
                    self.hours[stage].append(round(max(0.0, hours), 3))
            self.fired.update(result.fired)
        self.current[replay.state.stage] += 1
        if replay.state.status:
            self.statuses[replay.state.status] += 1

    def report(self) -> dict[str, Any]:
        """The shape of engine.web.api.funnel_report (GET /api/funnel)."""
        vocab = self.rules.vocab
        rows, previous = [], None
        for stage in vocab.stages:
            reached = self.reached.get(stage, 0)
            rows.append(
                {
                    "stage": stage,
                    "current": self.current.get(stage, 0),
                    "reached": reached,
                    "conversion_from_previous": round(reached / previous, 4) if previous else None,
                    "median_hours_to_reach": _median(self.hours.get(stage, [])),
                }
            )
            previous = reached
        names = [rule.name for rule in self.rules.ruleset.rules]
        return {
            "total_contacts": self.contacts,
            "stages": rows,
            "statuses": {s: self.statuses.get(s, 0) for s in vocab.statuses},
            "rules": {name: {"fired": self.fired.get(name, 0)} for name in names},
            "rules_version": self.rules.version,
        }


def _median(values: list[float]) -> float | None:
    """As the store computes it: the middle score, or the mean of the two middle ones."""
    if not values:
        return None
    ordered = sorted(values)
    low, high = (len(ordered) - 1) // 2, len(ordered) // 2
    return round((ordered[low] + ordered[high]) / 2, 2)


# --- Contacts whose outcome changes ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    stage: str | None
    status: str | None

    def __str__(self) -> str:
        stage = self.stage or "(no stage)"
        return f"{stage} / {self.status}" if self.status else stage


@dataclass(frozen=True)
class Divergence:
    """The first event the two sides handled differently."""

    event_id: str
    type: str
    occurred_at: str
    current: tuple[str, ...] | None
    """rules fired with the current rules (None: this side never saw the event)"""
    candidate: tuple[str, ...] | None


@dataclass(frozen=True)
class ContactDiff:
    email: str
    current: Outcome
    candidate: Outcome
    only_current: tuple[str, ...]
    """stage and status changes ("rule: field → value") made only with the current rules"""
    only_candidate: tuple[str, ...]
    divergence: Divergence | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "current": {"stage": self.current.stage, "status": self.current.status},
            "candidate": {"stage": self.candidate.stage, "status": self.candidate.status},
            "changes_only_current": list(self.only_current),
            "changes_only_candidate": list(self.only_candidate),
            "first_difference": None
            if self.divergence is None
            else {
                "event_id": self.divergence.event_id,
                "type": self.divergence.type,
                "occurred_at": self.divergence.occurred_at,
                "current_fired": _listed(self.divergence.current),
                "candidate_fired": _listed(self.divergence.candidate),
            },
        }


def _listed(fired: tuple[str, ...] | None) -> list[str] | None:
    return None if fired is None else list(fired)


def _decisive(steps: Sequence[Step]) -> Counter[str]:
    """The stage and status changes applied, as "rule: field → value" (a multiset)."""
    return Counter(
        f"{c.rule}: {c.field} → {c.to}"
        for s in steps
        for c in s.changes
        if c.outcome == "applied" and c.field in ("stage", "status")
    )


def _divergence(left: Sequence[Step], right: Sequence[Step]) -> Divergence | None:
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else None
        b = right[i] if i < len(right) else None
        if a is not None and b is not None and a.event.id == b.event.id:
            if a.fired == b.fired and a.changes == b.changes:
                continue
            return Divergence(
                a.event.id, a.event.type, format_time(a.event.occurred_at), a.fired, b.fired
            )
        # Here one side handled an event the other did not: a delayed event only it scheduled.
        if a is not None and (b is None or a.event.source == SCHEDULED_SOURCE):
            return Divergence(
                a.event.id, a.event.type, format_time(a.event.occurred_at), a.fired, None
            )
        assert b is not None
        return Divergence(b.event.id, b.event.type, format_time(b.event.occurred_at), None, b.fired)
    return None


def diff_contact(email: str, current: ContactReplay, candidate: ContactReplay) -> ContactDiff:
    before, after = _decisive(current.steps), _decisive(candidate.steps)
    return ContactDiff(
        email,
        Outcome(current.state.stage, current.state.status),
        Outcome(candidate.state.stage, candidate.state.status),
        tuple(sorted(before - after)),
        tuple(sorted(after - before)),
        _divergence(current.steps, candidate.steps),
    )


# --- The backtest --------------------------------------------------------------------------------


@dataclass
class Result:
    current: dict[str, Any]
    candidate: dict[str, Any]
    events: int
    contacts: int
    changed: int
    transitions: Counter[tuple[Outcome, Outcome]]
    examples: list[ContactDiff]
    now: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "contacts": self.contacts,
            "changed_contacts": self.changed,
            "current": self.current,
            "candidate": self.candidate,
            "difference": difference(self.current, self.candidate),
            "transitions": [
                {
                    "current": {"stage": a.stage, "status": a.status},
                    "candidate": {"stage": b.stage, "status": b.status},
                    "contacts": n,
                }
                for (a, b), n in self.transitions.most_common()
            ],
            "examples": [example.to_dict() for example in self.examples],
            "replayed_until": format_time(self.now),
        }


def backtest(
    events: Sequence[BehaviorEvent],
    current: Rules,
    candidate: Rules,
    now: datetime,
    examples: int = 5,
    progress: Progress | None = None,
) -> Result:
    """Replay `events` (each id once; the caller dedupes) through both rule sets, per contact.

    Each contact's events run in occurred_at order (ties keep their order in `events`); delayed
    events fire when due, and those due by `now` fire at the end, as the scheduler would have.
    """
    by_contact: dict[str, list[BehaviorEvent]] = defaultdict(list)
    for event in events:
        by_contact[event.email].append(event)
    sides = Funnel(current), Funnel(candidate)
    transitions: Counter[tuple[Outcome, Outcome]] = Counter()
    kept: dict[tuple[Outcome, Outcome], list[ContactDiff]] = defaultdict(list)
    handled = 0
    for email, group in by_contact.items():
        group.sort(key=lambda e: e.occurred_at)
        replays = []
        for side in sides:
            replay = ContactReplay(side.rules, ContactState(email))
            for event in group:
                replay.process(event)
            replay.fire_due(now)
            side.count(replay)
            replays.append(replay)
        left, right = replays
        if (left.state.stage, left.state.status) != (right.state.stage, right.state.status):
            key = (
                Outcome(left.state.stage, left.state.status),
                Outcome(right.state.stage, right.state.status),
            )
            transitions[key] += 1
            if len(kept[key]) < examples:
                kept[key].append(diff_contact(email, left, right))
        handled += len(group)
        if progress is not None and handled >= 1000:
            progress(handled)
            handled = 0
    if progress is not None and handled:
        progress(handled)
    return Result(
        sides[0].report(),
        sides[1].report(),
        len(events),
        len(by_contact),
        sum(transitions.values()),
        transitions,
        _pick_examples(transitions, kept, examples),
        now,
    )


def _pick_examples(
    transitions: Counter[tuple[Outcome, Outcome]],
    kept: Mapping[tuple[Outcome, Outcome], list[ContactDiff]],
    count: int,
) -> list[ContactDiff]:
    """Up to `count` examples, taking one of each transition in turn (most frequent first)."""
    order = [key for key, _ in transitions.most_common()]
    picked: list[ContactDiff] = []
    for turn in range(count):
        for key in order:
            if len(picked) >= count:
                return picked
            if turn < len(kept[key]):
                picked.append(kept[key][turn])
    return picked


# --- The difference and its rendering ------------------------------------------------------------


def difference(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """candidate - current: per stage (now, reached, conversion), per status, per rule fired."""
    rows_a = {row["stage"]: row for row in current["stages"]}
    rows_b = {row["stage"]: row for row in candidate["stages"]}
    stages = []
    for stage in _union(rows_a, rows_b):
        a, b = rows_a.get(stage, {}), rows_b.get(stage, {})
        conv_a, conv_b = a.get("conversion_from_previous"), b.get("conversion_from_previous")
        stages.append(
            {
                "stage": stage,
                "current": b.get("current", 0) - a.get("current", 0),
                "reached": b.get("reached", 0) - a.get("reached", 0),
                "conversion_from_previous": None
                if conv_a is None or conv_b is None
                else round(conv_b - conv_a, 4),
            }
        )
    statuses = {
        s: candidate["statuses"].get(s, 0) - current["statuses"].get(s, 0)
        for s in _union(current["statuses"], candidate["statuses"])
    }
    fired_a = {k: v["fired"] for k, v in current["rules"].items()}
    fired_b = {k: v["fired"] for k, v in candidate["rules"].items()}
    rules = {r: fired_b.get(r, 0) - fired_a.get(r, 0) for r in _union(fired_a, fired_b)}
    return {
        "stages": stages,
        "statuses": {k: v for k, v in statuses.items() if v},
        "rules_fired": {k: v for k, v in rules.items() if v},
    }


def _union(first: Iterable[str], second: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def render(
    result: Result,
    current_name: str,
    candidate_name: str,
    history: History | None = None,
) -> str:
    """The side-by-side funnel, the difference and the examples, as text for the CLI."""
    a, b = result.current, result.candidate
    diff = difference(a, b)
    window = (
        f"since {format_time(history.since)}"
        if history is not None and history.since
        else "the whole stored history"
    )
    lines = [
        f"Backtest over {window}: {result.events:,} events, {result.contacts:,} contacts, "
        f"replayed until {format_time(result.now)}",
        f"  current:   {current_name} (version {a['rules_version']})",
        f"  candidate: {candidate_name} (version {b['rules_version']})",
    ]
    if history is not None:
        lines.append(f"  left out: {history.skipped()}")
    lines += [
        "",
        f"  {'':<26}{'---- current ----':>21}  {'--- candidate ---':>21}  "
        f"{'--- difference ---':>22}",
        f"  {'stage':<26}"
        + f"{'now':>6}{'reached':>8}{'conv.':>7}  " * 2
        + f"{'now':>6}{'reached':>8}{'conv.':>8}",
    ]
    rows_a = {row["stage"]: row for row in a["stages"]}
    rows_b = {row["stage"]: row for row in b["stages"]}
    for row in diff["stages"]:
        stage = row["stage"]
        line = f"  {stage:<26}"
        for side in (rows_a.get(stage), rows_b.get(stage)):
            if side is None:
                line += f"{'-':>6}{'-':>8}{'-':>7}  "
            else:
                line += (
                    f"{side['current']:>6,}{side['reached']:>8,}"
                    f"{_percent(side['conversion_from_previous']):>7}  "
                )
        conv = row["conversion_from_previous"]
        points = "-" if conv is None else f"{conv * 100:+.1f}pt" if conv else "0"
        line += f"{_signed(row['current']):>6}{_signed(row['reached']):>8}{points:>8}"
        lines.append(line.rstrip())
    statuses = ", ".join(f"{k} {_signed(v)}" for k, v in diff["statuses"].items())
    fired = ", ".join(f"{k} {_signed(v)}" for k, v in diff["rules_fired"].items())
    lines.append(f"  lead statuses (candidate - current): {statuses or 'no difference'}")
    lines.append(f"  rules fired (candidate - current): {fired or 'no difference'}")
    lines.append("")
    if not result.changed:
        lines.append("No contact ends differently with the candidate rules.")
        return "\n".join(lines)
    share = result.changed / result.contacts
    lines.append(
        f"{result.changed:,} of {result.contacts:,} contacts ({share:.1%}) end differently "
        "(current → candidate):"
    )
    for (before, after), n in result.transitions.most_common(10):
        lines.append(f"  {n:>7,}  {before} → {after}")
    if len(result.transitions) > 10:
        rest = sum(n for _, n in result.transitions.most_common()[10:])
        lines.append(f"  {rest:>7,}  in {len(result.transitions) - 10} other transition(s)")
    if result.examples:
        lines += ["", f"Examples ({len(result.examples)}):"]
        for example in result.examples:
            lines.extend(_example_lines(example))
    return "\n".join(lines)


def _example_lines(example: ContactDiff) -> list[str]:
    lines = [f"  {example.email}: {example.current} → {example.candidate}"]
    for change in example.only_current:
        lines.append(f"      - {change}   (current rules only)")
    for change in example.only_candidate:
        lines.append(f"      + {change}   (candidate rules only)")
    d = example.divergence
    if d is not None:
        lines.append(
            f"      first difference: {d.occurred_at} {d.type} [{d.event_id}]: current fired "
            f"{_fired(d.current)}; candidate fired {_fired(d.candidate)}"
        )
    return lines


def _fired(names: tuple[str, ...] | None) -> str:
    if names is None:
        return "nothing (no such event on this side)"
    return f"[{', '.join(names)}]" if names else "nothing"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"
