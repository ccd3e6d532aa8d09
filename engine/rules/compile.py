"""Typed rules → durable-rules JSON ruleset definitions, plus the plan for building each fact.

durable-rules matches; Python prepares what it cannot match correctly (see
shared/reference/durable-rules-and-rq.md):

- Regular expressions (`matches:`) and `contains:` are computed in Python into boolean `d.*`
  fields of the fact: durable's `$mt` is a Lua-like dialect in which Python regexes silently fail.
- `exists:` on event properties is computed too, so list and object values count as present.
- Numbers compared against event properties read a `num.*` copy coerced from numeric strings
  (form answers arrive as text).
- `not` is pushed down to the leaves (De Morgan), and every negated leaf also matches a missing
  field: durable's `$neq` does not match when the field is absent.
- Every rule also requires `type` to exist, so the constant session's own state fact, which
  durable asserts on first use, never matches a rule made only of negations.
- Stages compare by rank (`contact.stage_rank`), -1 before the first stage.

No durable_rules import here: the output is plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.model import BehaviorEvent, ContactState, Vocabulary
from engine.rules.schema import All, Condition, Not, RuleSet, Test

_NEGATE_CMP = {"$gt": "$lte", "$gte": "$lt", "$lt": "$gte", "$lte": "$gt"}
_CMP = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
_STAGE_CMP = {"before": "$lt", "after": "$gt", "at_least": "$gte", "at_most": "$lte"}
_DERIVED_OPS = ("matches", "contains")
_GUARD = {"$ex": {"type": 1}}


@dataclass(frozen=True)
class Derived:
    """A boolean computed in Python into the fact as `d.<key>`."""

    key: str
    path: str
    op: str  # matches | contains | exists
    arg: Any


@dataclass(frozen=True)
class FactPlan:
    """What each fact must carry for the compiled rules to see it."""

    props: tuple[str, ...]
    numeric: tuple[str, ...]
    counters: tuple[str, ...]
    derived: tuple[Derived, ...]


@dataclass(frozen=True)
class Compiled:
    name: str
    definition: dict[str, Any]
    plan: FactPlan
    rule_names: tuple[str, ...]


class _Compiler:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.props: dict[str, None] = {}
        self.numeric: dict[str, None] = {}
        self.counters: dict[str, None] = {}
        self.derived: dict[tuple[str, str, Any], Derived] = {}

    def condition(self, cond: Condition, negate: bool = False) -> dict[str, Any]:
        if isinstance(cond, Test):
            return self.leaf(cond, negate)
        if isinstance(cond, Not):
            return self.condition(cond.item, not negate)
        parts = [self.condition(item, negate) for item in cond.items]
        conjunction = isinstance(cond, All) != negate
        if not parts:
            # An empty All always holds; an empty AnyOf never does.
            holds = isinstance(cond, All) != negate
            return _GUARD if holds else {"$nex": {"type": 1}}
        if len(parts) == 1:
            return parts[0]
        return {"$and" if conjunction else "$or": parts}

    def leaf(self, test: Test, negate: bool) -> dict[str, Any]:
        op, path, value = test.op, test.path, test.value
        if path.startswith("contact.counters."):
            self.counters[path.removeprefix("contact.counters.")] = None
        if op in _DERIVED_OPS or (op == "exists" and path.startswith("props.")):
            return {f"d.{self.derive(test)}": not negate}
        if op == "exists":
            return {("$nex" if value == negate else "$ex"): {path: 1}}
        if op in _STAGE_CMP:
            return self.compare(
                _STAGE_CMP[op], "contact.stage_rank", self.vocab.rank(value), negate
            )
        if op in _CMP:
            return self.compare(_CMP[op], self.numeric_path(path), value, negate)
        values = value if op in ("in", "not") and isinstance(value, tuple) else (value,)
        return self.one_of(path, values, negate if op != "not" else not negate)

    def one_of(self, path: str, values: tuple, negate: bool) -> dict[str, Any]:
        parts = [self.equals(path, v, negate) for v in values]
        if len(parts) == 1:
            return parts[0]
        return {"$and" if negate else "$or": parts}

    def equals(self, path: str, value: Any, negate: bool) -> dict[str, Any]:
        if (
            path.startswith("props.")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            path = self.numeric_path(path)
        elif path.startswith("props."):
            self.props[path.removeprefix("props.")] = None
        if not negate:
            return {path: value}
        return {"$or": [{"$nex": {path: 1}}, {"$neq": {path: value}}]}

    def compare(self, op: str, path: str, value: Any, negate: bool) -> dict[str, Any]:
        if not negate:
            return {op: {path: value}}
        return {"$or": [{"$nex": {path: 1}}, {_NEGATE_CMP[op]: {path: value}}]}

    def numeric_path(self, path: str) -> str:
        if not path.startswith("props."):
            return path
        self.numeric[path.removeprefix("props.")] = None
        return f"num.{path.removeprefix('props.')}"

    def derive(self, test: Test) -> str:
        key = (test.path, test.op, test.value)
        if key not in self.derived:
            self.derived[key] = Derived(f"d{len(self.derived)}", test.path, test.op, test.value)
        return self.derived[key].key

    def plan(self) -> FactPlan:
        return FactPlan(
            tuple(self.props),
            tuple(self.numeric),
            tuple(self.counters),
            tuple(self.derived.values()),
        )


def compile_rules(ruleset: RuleSet) -> Compiled:
    """Every rule becomes one durable rule keyed by its name, salience = file position."""
    compiler = _Compiler(ruleset.vocab)
    definition = {}
    for rule in ruleset.rules:
        condition = compiler.condition(rule.when)
        if condition == _GUARD:
            matcher = _GUARD
        elif "$and" in condition:
            matcher = {"$and": [_GUARD, *condition["$and"]]}
        else:
            matcher = {"$and": [_GUARD, condition]}
        definition[rule.name] = {"all": [{"m": matcher}], "pri": rule.index}
    name = f"lifecycle_{ruleset.version}"
    return Compiled(name, {name: definition}, compiler.plan(), tuple(r.name for r in ruleset.rules))


# --- Facts ------------------------------------------------------------------------------------


def value_at(event: BehaviorEvent, state: ContactState, path: str) -> Any:
    """The value a rule path reads; None when absent."""
    if path == "type":
        return event.type
    if path in ("source", "email"):
        return getattr(event, path)
    if path == "contact.stage":
        return state.stage
    if path == "contact.status":
        return state.status
    if path.startswith("contact.counters."):
        return state.counters.get(path.removeprefix("contact.counters."), 0)
    node: Any = event.properties
    for part in path.removeprefix("props.").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def build_fact(
    compiled: Compiled, vocab: Vocabulary, event: BehaviorEvent, state: ContactState, fact_id: str
) -> dict[str, Any]:
    """The one fact asserted per evaluation: only what the compiled rules read."""
    plan = compiled.plan
    contact: dict[str, Any] = {
        "stage_rank": vocab.rank(state.stage),
        "counters": {name: state.counters.get(name, 0) for name in plan.counters},
    }
    if state.stage is not None:
        contact["stage"] = state.stage
    if state.status is not None:
        contact["status"] = state.status
    fact: dict[str, Any] = {
        "sid": "0",
        "id": fact_id,
        "type": event.type,
        "source": event.source,
        "email": event.email,
        "contact": contact,
    }
    for path in plan.props:
        value = value_at(event, state, f"props.{path}")
        if isinstance(value, str | int | float | bool):
            _put(fact, f"props.{path}", value)
    for path in plan.numeric:
        number = _as_number(value_at(event, state, f"props.{path}"))
        if number is not None:
            _put(fact, f"num.{path}", number)
    fact["d"] = {d.key: _derive(d, value_at(event, state, d.path)) for d in plan.derived}
    return fact


def _put(fact: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = fact
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return None
        return number if number == number and abs(number) != float("inf") else None
    return None


def _derive(derived: Derived, value: Any) -> bool:
    if derived.op == "exists":
        return (value is not None) == derived.arg
    if derived.op == "contains":
        if isinstance(value, str):
            return derived.arg.lower() in value.lower()
        if isinstance(value, list):
            return any(str(item).lower() == derived.arg.lower() for item in value)
        return False
    if derived.op == "matches":
        return isinstance(value, str) and _regex(derived.arg).search(value) is not None
    raise ValueError(f"unknown derived op {derived.op}")


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
    return compiled
