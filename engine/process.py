"""One event through the rules and the guardrails: the pure step every path shares.

The events worker, `lifecycle simulate`, `lifecycle backtest` and the scenario tests all call
`step`, so what a test shows is what production does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine import lifecycle
from engine.model import BehaviorEvent, Change, ContactState, ScheduledEvent
from engine.rules import Rules


@dataclass(frozen=True)
class Step:
    event: BehaviorEvent
    before: ContactState
    after: ContactState
    fired: tuple[str, ...]
    changes: tuple[Change, ...]
    scheduled: tuple[ScheduledEvent, ...]
    rules_version: str


def step(rules: Rules, state: ContactState, event: BehaviorEvent) -> Step:
    decisions = rules.decide(event, state)
    applied = lifecycle.apply(rules.vocab, state, event, decisions)
    fired = tuple(dict.fromkeys(d.rule for d in decisions))
    return Step(
        event, state, applied.state, fired, applied.changes, applied.scheduled, rules.version
    )


@dataclass
class ContactReplay:
    """One contact replayed in memory: its state, its steps, and the scheduled events waiting.

    A scheduled event occurs when it is due: it is processed before any later event, which is
    what the RQ scheduler does in production. Used by scenarios, simulate and backtest.
    """

    rules: Rules
    state: ContactState
    steps: list[Step] = field(default_factory=list)
    pending: list[ScheduledEvent] = field(default_factory=list)

    def process(self, event: BehaviorEvent) -> Step:
        self.fire_due(event.occurred_at)
        return self._step(event)

    def fire_due(self, until: datetime) -> None:
        while due := [s for s in self.pending if s.due_at <= until]:
            first = min(due, key=lambda s: s.due_at)
            self.pending.remove(first)
            self._step(first.event)

    def _step(self, event: BehaviorEvent) -> Step:
        result = step(self.rules, self.state, event)
        self.state = result.after
        self.pending.extend(result.scheduled)
        self.steps.append(result)
        return result
