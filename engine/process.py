"""One event through the rules and the guardrails: the pure step every path shares.

The events worker, `lifecycle simulate`, `lifecycle backtest` and the scenario tests all call
`step`, so what a test shows is what production does.
"""

from __future__ import annotations

from dataclasses import dataclass

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
