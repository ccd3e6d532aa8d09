"""A plain-Python reading of the rules grammar: the test oracle for the durable-rules compilation.

It interprets the typed conditions directly (DESIGN §5 semantics, README "Rules") so that any
difference with what the compiled ruleset fires in durable-rules is a compilation bug.
"""

from __future__ import annotations

import re
from typing import Any

from engine.model import BehaviorEvent, ContactState, Vocabulary
from engine.rules.compile import value_at
from engine.rules.schema import All, AnyOf, Condition, Not, RuleSet, Test


def fired(ruleset: RuleSet, event: BehaviorEvent, state: ContactState) -> list[str]:
    return [r.name for r in ruleset.rules if holds(r.when, ruleset.vocab, event, state)]


def holds(cond: Condition, vocab: Vocabulary, event: BehaviorEvent, state: ContactState) -> bool:
    if isinstance(cond, All):
        return all(holds(c, vocab, event, state) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(holds(c, vocab, event, state) for c in cond.items)
    if isinstance(cond, Not):
        return not holds(cond.item, vocab, event, state)
    return _test(cond, vocab, value_at(event, state, cond.path))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def _equals(value: Any, arg: Any, path: str) -> bool:
    if isinstance(arg, bool) or isinstance(value, bool):
        return type(value) is type(arg) and value == arg
    if path.startswith("props.") and isinstance(arg, int | float):
        number = _number(value)
        return number is not None and number == arg
    if isinstance(value, list | dict):
        return False
    return value == arg


def _test(test: Test, vocab: Vocabulary, value: Any) -> bool:
    op, arg, path = test.op, test.value, test.path
    if op == "eq":
        return _equals(value, arg, path)
    if op in ("in", "not"):
        options = arg if isinstance(arg, tuple) else (arg,)
        found = any(_equals(value, option, path) for option in options)
        return found if op == "in" else not found
    if op == "exists":
        return (value is not None) == arg
    if op in ("gt", "gte", "lt", "lte"):
        number = _number(value) if path.startswith("props.") else value
        if number is None:
            return False
        return {"gt": number > arg, "gte": number >= arg, "lt": number < arg, "lte": number <= arg}[
            op
        ]
    if op == "matches":
        return isinstance(value, str) and re.search(arg, value) is not None
    if op == "contains":
        if isinstance(value, str):
            return arg.lower() in value.lower()
        if isinstance(value, list):
            return any(str(item).lower() == arg.lower() for item in value)
        return False
    rank, bound = vocab.rank(value), vocab.rank(arg)
    return {
        "before": rank < bound,
        "after": rank > bound,
        "at_least": rank >= bound,
        "at_most": rank <= bound,
    }[op]
