"""Static checks of a parsed rules file (DESIGN §5), beyond what the grammar already refuses.

Errors (the file is refused): duplicate rule names, promotions that can only reach contacts
already at or past the target (a demotion in disguise), rules that can never fire.
Warnings: unknown event types (with a "did you mean"), status rules that can match contacts
outside sales_qualified_lead (the guardrail would refuse them), more than 8 statuses, counters
read but never counted.

The analysis over-approximates what a rule can match, so an error is always a real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from engine.errors import Problem
from engine.model import STANDARD_EVENT_TYPES, STATUS_STAGE, Increment, Promote, SetStatus
from engine.rules.schema import All, AnyOf, Condition, Not, Rule, RuleSet, Test, did_you_mean

MAX_STATUSES = 8
_STAGE_BOUNDS = ("before", "after", "at_least", "at_most")
_EXACT_OPS = ("eq", "in", "not", "exists", *_STAGE_BOUNDS)
"""Matchers whose complement is known exactly (so `not:` of them narrows what can match)."""
_NONE = None


def lint(ruleset: RuleSet) -> list[Problem]:
    """Every finding, in file order."""
    findings = _file_findings(ruleset)
    seen: dict[str, int] = {}
    counted = _counted(ruleset.rules)
    for rule in ruleset.rules:
        if rule.name in seen:
            message = f"duplicate rule name (first defined at line {seen[rule.name]})"
            findings.append(Problem(ruleset.file, rule.line, "error", message, rule.name))
        seen.setdefault(rule.name, rule.line)
        findings.extend(_RuleLint(ruleset, rule, counted).findings())
    return sorted(findings, key=lambda p: p.line)


def _file_findings(ruleset: RuleSet) -> list[Problem]:
    if len(ruleset.vocab.statuses) > MAX_STATUSES:
        line = ruleset.lines.get("statuses", 1)
        message = (
            f"{len(ruleset.vocab.statuses)} lead statuses: more than {MAX_STATUSES} makes "
            "the sales view hard to use; consider merging some"
        )
        return [Problem(ruleset.file, line, "warning", message)]
    return []


def _counted(rules: Iterable[Rule]) -> set[str]:
    return {a.counter for r in rules for a in r.then if isinstance(a, Increment)}


class _RuleLint:
    def __init__(self, ruleset: RuleSet, rule: Rule, counted: set[str]):
        self.ruleset, self.rule, self.counted = ruleset, rule, counted
        self.vocab = ruleset.vocab
        self.out: list[Problem] = []

    def report(self, line: int, severity: str, message: str) -> None:
        self.out.append(Problem(self.ruleset.file, line, severity, message, self.rule.name))

    def findings(self) -> list[Problem]:
        self.unknown_events()
        self.unread_counters()
        stages = self.possible_stages()
        if not self.can_fire(stages):
            return self.out
        self.backward_promotions(stages)
        self.status_outside_sql(stages)
        return self.out

    # names

    def known_events(self) -> tuple[str, ...]:
        return (*STANDARD_EVENT_TYPES, *self.ruleset.events)

    def unknown_events(self) -> None:
        known = self.known_events()
        for test in _tests(self.rule.when):
            if test.path == "type" and test.op in ("eq", "in", "not"):
                values = test.value if isinstance(test.value, tuple) else (test.value,)
                for name in values:
                    if name not in known:
                        self.report(test.line, "warning", _unknown_event(name, known))
        for action, line in zip(self.rule.then, self.rule.action_lines, strict=True):
            if action.kind == "schedule" and action.event not in known:
                self.report(line, "warning", _unknown_event(action.event, known))

    def unread_counters(self) -> None:
        for test in _tests(self.rule.when):
            counter = test.path.removeprefix("contact.counters.")
            if test.path.startswith("contact.counters.") and counter not in self.counted:
                self.report(
                    test.line,
                    "warning",
                    f"counter {counter!r} is read but no rule increments it (it stays 0)",
                )

    # reachability

    def stage_conditions(self) -> set[str | None]:
        universe: set[str | None] = {_NONE, *self.vocab.stages}
        return _domain(self.rule.when, "contact.stage", universe, self.stage_set)

    def possible_stages(self) -> set[str | None]:
        """Stages a contact can be at when this rule fires (a status needs SQL or later)."""
        stages = self.stage_conditions()
        if None not in self.possible_statuses():
            sql = self.vocab.rank(STATUS_STAGE)
            stages = {s for s in stages if self.vocab.rank(s) >= sql}
        return stages

    def possible_statuses(self) -> set[str | None]:
        universe = {None, *self.vocab.statuses}
        return _domain(self.rule.when, "contact.status", universe, _value_set(universe))

    def stage_set(self, test: Test) -> set[str | None]:
        stages = self.vocab.stages
        rank = self.vocab.rank
        if test.op in ("eq", "in", "not"):
            named = set(test.value) if isinstance(test.value, tuple) else {test.value}
            return named if test.op != "not" else {_NONE, *stages} - named
        if test.op == "exists":
            return set(stages) if test.value else {_NONE}
        if test.op not in _STAGE_BOUNDS:
            return {_NONE, *stages}
        bound = rank(test.value)
        keep = {
            "before": lambda r: r < bound,
            "after": lambda r: r > bound,
            "at_least": lambda r: r >= bound,
            "at_most": lambda r: r <= bound,
        }[test.op]
        return {s for s in (_NONE, *stages) if keep(rank(s))}

    def can_fire(self, stages: set[str | None]) -> bool:
        why = self.contradiction(stages)
        if why:
            self.report(self.rule.line, "error", f"this rule can never fire: {why}")
        return why is None

    def contradiction(self, stages: set[str | None]) -> str | None:
        if not self.stage_conditions():
            return "its contact.stage conditions exclude every stage"
        if not self.possible_statuses():
            return "its contact.status conditions exclude every status"
        if not stages:
            return (
                "it needs a lead status, which only contacts at or past sales_qualified_lead have"
            )
        named = {v for t in _tests(self.rule.when) if t.path == "type" for v in _values(t)}
        universe = {None, *STANDARD_EVENT_TYPES, *self.ruleset.events, *named}
        if not _domain(self.rule.when, "type", universe, _value_set(universe), open_ended=True):
            return "its event conditions exclude every event type"
        return _range_conflict(self.rule.when)

    # guardrail previews

    def backward_promotions(self, stages: set[str | None]) -> None:
        for action, line in zip(self.rule.then, self.rule.action_lines, strict=True):
            if not isinstance(action, Promote):
                continue
            target = self.vocab.rank(action.stage)
            if all(self.vocab.rank(s) >= target for s in stages):
                self.report(
                    line,
                    "error",
                    f"promote: {action.stage} only matches contacts already at or past "
                    f"{action.stage}: a backward move the guardrail turns into a no-op",
                )

    def status_outside_sql(self, stages: set[str | None]) -> None:
        promotes_to_sql = any(
            isinstance(a, Promote) and a.stage == STATUS_STAGE for a in self.rule.then
        )
        sql_rank = self.vocab.rank(STATUS_STAGE)
        outside = [
            s or "no stage"
            for s in sorted(stages, key=self.vocab.rank)
            if s != STATUS_STAGE and not (promotes_to_sql and self.vocab.rank(s) < sql_rank)
        ]
        for action, line in zip(self.rule.then, self.rule.action_lines, strict=True):
            if isinstance(action, SetStatus) and outside:
                self.report(
                    line,
                    "warning",
                    f"set_status: {action.status} can match contacts outside {STATUS_STAGE} "
                    f"({', '.join(outside)}); the guardrail refuses it there. "
                    f"Add `contact.stage: {STATUS_STAGE}` to the conditions",
                )


def _unknown_event(name: str, known: tuple[str, ...]) -> str:
    return (
        f"event type {name!r} is neither standard nor listed under `events:`"
        f"{did_you_mean(name, known)}"
    )


def _tests(cond: Condition) -> Iterable[Test]:
    if isinstance(cond, Test):
        yield cond
    elif isinstance(cond, Not):
        yield from _tests(cond.item)
    else:
        for item in cond.items:
            yield from _tests(item)


def _values(test: Test) -> tuple:
    return test.value if isinstance(test.value, tuple) else (test.value,)


def _value_set(universe: set):
    def values(test: Test) -> set:
        named = set(test.value) if isinstance(test.value, tuple) else {test.value}
        if test.op in ("eq", "in"):
            return named
        if test.op == "not":
            return universe - named | {_OTHER}
        if test.op == "exists":
            return (universe - {None}) | {_OTHER} if test.value else {None}
        return universe | {_OTHER}

    return values


_OTHER = object()
"""Stands for any value outside a finite universe (an unlisted custom event type, say)."""


def _domain(cond: Condition, path: str, universe: set, leaf, open_ended: bool = False) -> set:
    """Over-approximation of the values of `path` for which `cond` can hold."""
    everything = universe | ({_OTHER} if open_ended else set())
    if isinstance(cond, Test):
        if cond.path != path:
            return everything
        values = leaf(cond)
        return values if open_ended else values & universe
    if isinstance(cond, All):
        result = everything
        for item in cond.items:
            result = result & _domain(item, path, universe, leaf, open_ended)
        return result
    if isinstance(cond, AnyOf):
        result: set = set()
        for item in cond.items:
            result |= _domain(item, path, universe, leaf, open_ended)
        return result
    inner = cond.item
    exact = all(t.path == path and t.op in _EXACT_OPS for t in _tests(inner))
    if exact and isinstance(inner, All) and len(inner.items) == 1:
        return everything - _domain(inner.items[0], path, universe, leaf, open_ended)
    return everything


def _top_level_leaves(when: All) -> Iterable[Test]:
    """The rule's top-level tests; `not: {x: {exists: b}}` reads as `x: {exists: not b}`."""
    for item in when.items:
        if isinstance(item, Test):
            yield item
        elif isinstance(item, Not) and isinstance(item.item, All) and len(item.item.items) == 1:
            (inner,) = item.item.items
            if isinstance(inner, Test) and inner.op == "exists":
                yield replace(inner, value=not inner.value)


def _range_conflict(when: All) -> str | None:
    """Contradictions among the top-level conditions on one number or property."""
    low: dict[str, tuple[float, bool]] = {}
    high: dict[str, tuple[float, bool]] = {}
    absent: dict[str, str] = {}
    present: dict[str, str] = {}
    for test in _top_level_leaves(when):
        path, op, value = test.path, test.op, test.value
        if op == "exists":
            (present if value else absent)[path] = test.label
            continue
        if op not in ("not",):
            present[path] = test.label
        if op in ("gt", "gte"):
            # (value, strict): for a lower bound the larger value, then the strict one, binds
            low[path] = max(low.get(path, (float("-inf"), False)), (value, op == "gt"))
        elif op in ("lt", "lte"):
            bound = high.get(path, (float("inf"), False))
            if value < bound[0] or (value == bound[0] and op == "lt"):
                high[path] = (value, op == "lt")
    for path in low.keys() & high.keys():
        (lo, lo_strict), (hi, hi_strict) = low[path], high[path]
        if lo > hi or (lo == hi and (lo_strict or hi_strict)):
            return f"no number is both above {lo} and below {hi} for {present[path]}"
    for path in sorted(absent.keys() & present.keys()):
        if not path.startswith("contact.counters."):
            return f"{present[path]} must both exist and be absent"
    return None
