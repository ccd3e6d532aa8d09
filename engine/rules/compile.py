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

import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.model import BehaviorEvent, ContactState, Vocabulary
from engine.rules.schema import All, AnyOf, Condition, Not, Rule, RuleSet, Test

_NEGATE_CMP = {"$gt": "$lte", "$gte": "$lt", "$lt": "$gte", "$lte": "$gt"}
_CMP = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
_STAGE_CMP = {"before": "$lt", "after": "$gt", "at_least": "$gte", "at_most": "$lte"}
_DERIVED_OPS = ("matches", "contains")
_GUARD = {"$ex": {"type": 1}}
MAX_CONDITION_SIZE = 32
"""durable-rules refuses a rule whose nested and/or expression is too long (its
MAX_SEQUENCE_EXPRESSIONS: create_ruleset fails with error 113 from about 40 parts); past this
size, blocks of the rule are computed in Python instead."""


def _flag(key: str, negate: bool) -> dict[str, Any]:
    """A Python-computed condition: facts carry only the flags that are true (every extra field
    slows durable-rules down), so a false flag is an absent one."""
    return {"$nex": {f"d.{key}": 1}} if negate else {f"d.{key}": True}


def _in_python(cond: Condition) -> Test:
    """A leaf standing for a whole condition, evaluated in Python into a `d.*` boolean."""
    return Test("", "condition", cond, 0)


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

    def rule_condition(self, rule: Rule) -> dict[str, Any]:
        """The rule's condition, with its largest any:/not: blocks computed in Python while the
        whole is too long for durable-rules."""
        items = list(rule.when.items)
        sizes = [_size(_Compiler(self.vocab).condition(item)) for item in items]
        while 1 + sum(sizes) > MAX_CONDITION_SIZE:
            blocks = [i for i, item in enumerate(items) if not isinstance(item, Test)]
            if not blocks:
                return self.condition(All((_in_python(rule.when),)))
            largest = max(blocks, key=sizes.__getitem__)
            items[largest], sizes[largest] = _in_python(items[largest]), 1
        return self.condition(All(tuple(items)))

    def leaf(self, test: Test, negate: bool) -> dict[str, Any]:
        op, path, value = test.op, test.path, test.value
        if op == "condition":
            return _flag(self.derive(test), negate)
        if path.startswith("contact.counters."):
            self.counters[path.removeprefix("contact.counters.")] = None
        if op in _DERIVED_OPS or (op == "exists" and path.startswith("props.")):
            return _flag(self.derive(test), negate)
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


def _size(expr: dict[str, Any]) -> int:
    ((op, value),) = expr.items()
    if op in ("$and", "$or"):
        return 1 + sum(_size(item) for item in value)
    return 1


def compile_rules(ruleset: RuleSet) -> Compiled:
    """Every rule becomes one durable rule keyed by its name, salience = file position."""
    compiler = _Compiler(ruleset.vocab)
    definition = {}
    for rule in ruleset.rules:
        condition = compiler.rule_condition(rule)
        if condition == _GUARD:
            matcher = _GUARD
        elif "$and" in condition:
            matcher = {"$and": [_GUARD, *condition["$and"]]}
        else:
            matcher = {"$and": [_GUARD, condition]}
        definition[rule.name] = {"all": [{"m": matcher}], "pri": rule.index}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]
    name = f"lifecycle_{ruleset.version}_{digest}"
    return Compiled(name, {name: definition}, compiler.plan(), tuple(r.name for r in ruleset.rules))


# --- Facts ------------------------------------------------------------------------------------


def value_at(event: BehaviorEvent, state: ContactState, path: str) -> Any:
    """The value a rule path reads; None when absent."""
    return _reader(path)(event, state)


def _reader(path: str) -> Callable[[BehaviorEvent, ContactState], Any]:
    """A function reading `path`, with the path's parsing done once, not per event."""
    if path == "type":
        return lambda event, state: event.type
    if path in ("source", "email"):
        return lambda event, state: getattr(event, path)
    if path == "contact.stage":
        return lambda event, state: state.stage
    if path == "contact.status":
        return lambda event, state: state.status
    if path.startswith("contact.counters."):
        counter = path.removeprefix("contact.counters.")
        return lambda event, state: state.counters.get(counter, 0)
    parts = tuple(path.removeprefix("props.").split("."))

    def read(event: BehaviorEvent, state: ContactState) -> Any:
        node: Any = event.properties
        for part in parts:
            if not isinstance(node, dict) and not isinstance(node, Mapping):
                return None
            node = node.get(part)
            if node is None:
                return None
        return node

    return read


class FactBuilder:
    """Builds the one fact asserted per evaluation, carrying only what the compiled rules read.

    Each path the rules read is resolved once per event, however many rules read it.
    """

    def __init__(self, compiled: Compiled, vocab: Vocabulary):
        plan = compiled.plan
        self.vocab = vocab
        self.counters = plan.counters
        blocks = [d for d in plan.derived if d.op == "condition"]
        self.blocks = [(d.key, _holds(d.arg, vocab)) for d in blocks]
        paths = dict.fromkeys(
            [*(f"props.{p}" for p in plan.props), *(f"props.{p}" for p in plan.numeric)]
            + [d.path for d in plan.derived if d.op != "condition"]
        )
        self.reads = []
        for path in paths:
            as_prop = path.startswith("props.") and path.removeprefix("props.") in plan.props
            as_number = path.startswith("props.") and path.removeprefix("props.") in plan.numeric
            tests = tuple(
                (d.key, _predicate(d)) for d in plan.derived if d.path == path and d not in blocks
            )
            prop_at = tuple(path.split(".")) if as_prop else None
            num_at = ("num", *path.removeprefix("props.").split(".")) if as_number else None
            self.reads.append((_reader(path), prop_at, num_at, tests))

    def __call__(self, event: BehaviorEvent, state: ContactState, fact_id: str) -> dict[str, Any]:
        contact: dict[str, Any] = {
            "stage_rank": self.vocab.rank(state.stage),
            "counters": {name: state.counters.get(name, 0) for name in self.counters},
        }
        if state.stage is not None:
            contact["stage"] = state.stage
        if state.status is not None:
            contact["status"] = state.status
        derived: dict[str, bool] = {}
        fact: dict[str, Any] = {
            "sid": "0",
            "id": fact_id,
            "type": event.type,
            "source": event.source,
            "email": event.email,
            "contact": contact,
            "d": derived,
        }
        for read, prop_at, num_at, tests in self.reads:
            value = read(event, state)
            if prop_at and value is not None and isinstance(value, str | int | float | bool):
                _put(fact, prop_at, value)
            if num_at and value is not None:
                number = _as_number(value)
                if number is not None:
                    _put(fact, num_at, number)
            for key, test in tests:
                if test(value):
                    derived[key] = True
        for key, holds in self.blocks:
            if holds(event, state):
                derived[key] = True
        return fact


def build_fact(
    compiled: Compiled, vocab: Vocabulary, event: BehaviorEvent, state: ContactState, fact_id: str
) -> dict[str, Any]:
    """One fact, built without keeping a FactBuilder (tests, benchmarks' baselines)."""
    return FactBuilder(compiled, vocab)(event, state, fact_id)


def _put(fact: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, leaf = path
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


def _predicate(derived: Derived) -> Callable[[Any], bool]:
    """The Python side of a derived condition, compiled once."""
    if derived.op == "exists":
        wanted = derived.arg
        return lambda value: (value is not None) == wanted
    if derived.op == "contains":
        needle = derived.arg.lower()

        def contains(value: Any) -> bool:
            if isinstance(value, str):
                return needle in value.lower()
            if isinstance(value, list):
                return any(str(item).lower() == needle for item in value)
            return False

        return contains
    if derived.op == "matches":
        search = re.compile(derived.arg).search
        return lambda value: isinstance(value, str) and search(value) is not None
    raise ValueError(f"unknown derived op {derived.op}")


# --- Conditions evaluated in Python (blocks too long for durable-rules) -------------------------

EventTest = Callable[[BehaviorEvent, ContactState], bool]
_COMPARE = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "before": operator.lt,
    "after": operator.gt,
    "at_least": operator.ge,
    "at_most": operator.le,
}


def _holds(cond: Condition, vocab: Vocabulary) -> EventTest:
    """The same semantics as the compiled durable conditions, in plain Python."""
    if isinstance(cond, Not):
        inner = _holds(cond.item, vocab)
        return lambda event, state: not inner(event, state)
    if isinstance(cond, All | AnyOf):
        parts = [_holds(item, vocab) for item in cond.items]
        combine = all if isinstance(cond, All) else any
        return lambda event, state: combine(part(event, state) for part in parts)
    return _leaf_holds(cond, vocab)


def _leaf_holds(test: Test, vocab: Vocabulary) -> EventTest:
    read, op, arg = _reader(test.path), test.op, test.value
    if op in ("matches", "contains", "exists"):
        check = _predicate(Derived("", test.path, op, arg))
        return lambda event, state: check(read(event, state))
    if op in ("before", "after", "at_least", "at_most"):
        compare, bound = _COMPARE[op], vocab.rank(arg)
        return lambda event, state: compare(vocab.rank(state.stage), bound)
    if op in ("gt", "gte", "lt", "lte"):
        compare = _COMPARE[op]

        def number_test(event: BehaviorEvent, state: ContactState) -> bool:
            number = _as_number(read(event, state))
            return number is not None and compare(number, arg)

        return number_test
    options = arg if isinstance(arg, tuple) else (arg,)
    is_prop = test.path.startswith("props.")

    def one_of(event: BehaviorEvent, state: ContactState) -> bool:
        value = read(event, state)
        return any(_same(value, option, is_prop) for option in options)

    if op == "not":
        return lambda event, state: not one_of(event, state)
    return one_of


def _same(value: Any, option: Any, is_prop: bool) -> bool:
    """Equality as durable-rules sees it: JSON types (true is not 1); numbers in properties
    compare with numeric text."""
    if is_prop and isinstance(option, int | float) and not isinstance(option, bool):
        number = _as_number(value)
        return number is not None and number == option
    if isinstance(value, bool) or isinstance(option, bool):
        return isinstance(value, bool) and isinstance(option, bool) and value == option
    return isinstance(value, str | int | float) and value == option
