"""rules.yaml → typed rules (DESIGN §5). Every problem names file, line and rule.

The grammar:

    version: 1
    stages: [...]            # optional, ordered; default: the standard lifecycle
    statuses: [...]          # optional; the first is the initial status
    events: [...]            # optional: custom event types (a list, or a map name -> description)
    crm: {...}               # CRM field mapping (read by the connectors)
    rules:
      - name: slug
        description: text
        when: {<key>: <matcher>, ...}
        then: <action> | [<action>, ...]
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from engine.errors import Problem, RulesError
from engine.model import (
    DEFAULT_STAGES,
    DEFAULT_STATUSES,
    STATUS_STAGE,
    Action,
    Increment,
    Promote,
    Reset,
    Schedule,
    SetStatus,
    Vocabulary,
)
from engine.rules.yamlsource import Located, LocatedList, load_yaml

# --- The typed form ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """One leaf condition: `path op value`. Paths: type, source, email, contact.stage,
    contact.status, contact.counters.<name>, props.<event property path>."""

    path: str
    op: str
    value: Any
    line: int
    key: str = ""
    """The key as the user wrote it (`event`, `form`...), for messages."""

    @property
    def label(self) -> str:
        return self.key or self.path


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Test | All | AnyOf | Not


@dataclass(frozen=True)
class Rule:
    name: str
    index: int
    line: int
    when: All
    then: tuple[Action, ...]
    action_lines: tuple[int, ...]
    description: str = ""


@dataclass(frozen=True)
class RuleSet:
    """A parsed rules file. `version` is the content hash shown in every audit record."""

    file: str
    version: str
    vocab: Vocabulary
    rules: tuple[Rule, ...]
    events: tuple[str, ...] = ()
    crm: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    """Line of each top-level key, for findings about the file as a whole."""


STAGE_OPS = ("before", "after", "at_least", "at_most")
NUMBER_OPS = ("gt", "gte", "lt", "lte")
MATCHER_OPS = ("in", "not", "matches", "contains", "exists", *NUMBER_OPS, *STAGE_OPS)
RESERVED = ("event", "source", "email", "any", "not")
TOP_LEVEL = ("version", "stages", "statuses", "events", "crm", "rules")
RULE_KEYS = ("name", "description", "when", "then")
ACTION_KEYS = ("promote", "set_status", "increment", "reset", "schedule")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_duration(raw: object) -> timedelta | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return timedelta(seconds=raw)
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    if not match or int(match.group(1)) <= 0:
        return None
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


# --- Parsing -----------------------------------------------------------------------------------


class _Parser:
    """Walks the located YAML tree, collecting every error instead of stopping at the first."""

    def __init__(self, filename: str):
        self.file = filename
        self.problems: list[Problem] = []
        self.vocab = Vocabulary()
        self.rule: str | None = None

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, "error", message, self.rule))

    def document(self, doc: object, text: str) -> RuleSet:
        if not isinstance(doc, Located):
            self.error(1, "a rules file is a mapping with a `rules:` list")
            raise RulesError(self.problems)
        for key in doc:
            if key not in TOP_LEVEL:
                hint = did_you_mean(key, TOP_LEVEL)
                self.error(doc.line_of(key), f"unknown top-level key {key!r}{hint}")
        version = doc.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version != 1:
            self.error(doc.line_of("version"), "only `version: 1` is understood")
        stages = self.names(doc, "stages", DEFAULT_STAGES)
        statuses = self.names(doc, "statuses", DEFAULT_STATUSES)
        if STATUS_STAGE not in stages:
            self.error(
                doc.line_of("stages"),
                f"stages must keep {STATUS_STAGE}: the lead status applies at that stage",
            )
        # Names are checked against the user's own lists even when those are refused, so one
        # mistake gives one error.
        self.vocab = Vocabulary(stages, statuses)
        events = self.event_names(doc)
        crm = doc.get("crm") or {}
        if not isinstance(crm, dict):
            self.error(doc.line_of("crm"), "crm must be a mapping (hubspot:, salesforce:)")
            crm = {}
        rules = self.rules(doc)
        if self.problems:
            raise RulesError(self.problems)
        return RuleSet(
            self.file, version_of(text), self.vocab, rules, events, crm, dict(doc.key_lines)
        )

    def names(self, doc: Located, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = doc.get(key)
        if raw is None:
            return default
        if not isinstance(raw, list) or not raw:
            self.error(doc.line_of(key), f"{key} must be a non-empty list of names")
            return default
        names = []
        for i, name in enumerate(raw):
            line = raw.line_of(i) if isinstance(raw, LocatedList) else doc.line_of(key)
            if not isinstance(name, str) or not _NAME.match(name):
                self.error(line, f"{key}: {name!r} is not a snake_case name")
            elif name in names:
                self.error(line, f"{key}: {name!r} is listed twice")
            else:
                names.append(name)
        return tuple(names) or default

    def event_names(self, doc: Located) -> tuple[str, ...]:
        raw = doc.get("events")
        if raw is None:
            return ()
        raw_lines: list[int] = []
        if isinstance(raw, Located):
            raw_lines = [raw.line_of(name) for name in raw]
            raw = list(raw)
        if not isinstance(raw, list):
            self.error(doc.line_of("events"), "events must list custom event type names")
            return ()
        lines = raw.item_lines if isinstance(raw, LocatedList) else raw_lines
        good = []
        for i, name in enumerate(raw):
            if isinstance(name, str) and _NAME.match(name):
                good.append(name)
            else:
                line = lines[i] if i < len(lines) else doc.line_of("events")
                self.error(line, f"events: {name!r} is not a snake_case name")
        return tuple(good)

    def rules(self, doc: Located) -> tuple[Rule, ...]:
        raw = doc.get("rules")
        if not isinstance(raw, LocatedList):
            self.error(doc.line_of("rules"), "`rules:` must be a list of rules")
            return ()
        rules = []
        for index, item in enumerate(raw):
            rule = self.one_rule(index, item, raw.line_of(index))
            if rule is not None:
                rules.append(rule)
        self.rule = None
        return tuple(rules)

    def one_rule(self, index: int, raw: object, line: int) -> Rule | None:
        self.rule = None
        if not isinstance(raw, Located):
            self.error(line, "each rule is a mapping with name, when and then")
            return None
        name = raw.get("name")
        if not isinstance(name, str) or not _SLUG.match(name):
            self.error(raw.line_of("name"), f"rule #{index + 1}: name must be a slug, got {name!r}")
            name = f"#{index + 1}"
        self.rule = name
        for key in raw:
            if key not in RULE_KEYS:
                hint = did_you_mean(key, RULE_KEYS)
                self.error(raw.line_of(key), f"unknown rule key {key!r}{hint}")
        description = raw.get("description") or ""
        when = raw.get("when", Located())
        if not isinstance(when, Located):
            self.error(raw.line_of("when"), "when must be a mapping of conditions")
            when = Located()
        conditions = All(tuple(self.conditions(when)))
        if "then" not in raw:
            self.error(raw.line, "a rule needs `then:` (one action or a list)")
        actions = self.actions(raw.get("then"), raw.line_of("then"))
        return Rule(
            name=name,
            index=index,
            line=raw.line_of("name"),
            when=conditions,
            then=tuple(a for a, _ in actions),
            action_lines=tuple(line for _, line in actions),
            description=str(description),
        )

    # conditions

    def conditions(self, when: Located) -> list[Condition]:
        out: list[Condition] = []
        for key, value in when.items():
            line = when.line_of(key)
            if key == "any":
                out.append(self.any_of(value, line))
            elif key == "not":
                if not isinstance(value, Located) or not value:
                    self.error(line, "not: takes a mapping of conditions that must not hold")
                    continue
                out.append(Not(All(tuple(self.conditions(value)))))
            else:
                path = self.path(key, line)
                if path is not None:
                    out.extend(self.matchers(Test(path, "eq", value, line, key)))
        return out

    def any_of(self, value: object, line: int) -> Condition:
        if not isinstance(value, list) or not value:
            self.error(line, "any: takes a list of condition mappings (one must hold)")
            return AnyOf(())
        options = []
        for i, item in enumerate(value):
            if not isinstance(item, Located) or not item:
                at = value.line_of(i) if isinstance(value, LocatedList) else line
                self.error(at, "any: each entry is a mapping of conditions")
                continue
            options.append(All(tuple(self.conditions(item))))
        return AnyOf(tuple(options))

    def path(self, key: str, line: int) -> str | None:
        if key == "event":
            return "type"
        if key in ("source", "email", "contact.stage", "contact.status"):
            return key
        if key.startswith("contact.counters."):
            counter = key.removeprefix("contact.counters.")
            if not _NAME.match(counter):
                self.error(line, f"counter name {counter!r} must be snake_case")
                return None
            return key
        if key == "contact" or key.startswith("contact."):
            hint = did_you_mean(key, ["contact.stage", "contact.status", "contact.counters.<name>"])
            self.error(line, f"unknown contact field {key!r}{hint}")
            return None
        if not key or any(not part for part in key.split(".")):
            self.error(line, f"{key!r} is not a property path")
            return None
        return f"props.{key}"

    def matchers(self, raw: Test) -> list[Test]:
        """`raw` carries the YAML value of one condition key; it becomes one Test per matcher."""
        value, line = raw.value, raw.line
        if isinstance(value, Located):
            if not value:
                self.error(line, f"{raw.label}: an empty matcher mapping matches nothing")
                return []
            tests = [
                self.matcher(replace(raw, op=op, value=arg, line=value.line_of(op)))
                for op, arg in value.items()
            ]
            return [t for t in tests if t is not None]
        if isinstance(value, list):
            return self.checked(replace(raw, op="in", value=tuple(value)))
        if value is None:
            return [replace(raw, op="exists", value=False)]
        return self.checked(raw)

    def matcher(self, test: Test) -> Test | None:
        op, arg, line = test.op, test.value, test.line
        if op not in MATCHER_OPS:
            self.error(line, f"unknown matcher {op!r}{did_you_mean(op, MATCHER_OPS)}")
            return None
        if op in STAGE_OPS and test.path != "contact.stage":
            self.error(line, f"{op}: compares stages; it only applies to contact.stage")
            return None
        if op in ("in", "not") and isinstance(arg, list):
            arg = tuple(arg)
        if op == "in" and not isinstance(arg, tuple):
            self.error(line, "in: takes a list of values")
            return None
        checked = self.checked(replace(test, value=arg))
        return checked[0] if checked else None

    def checked(self, test: Test) -> list[Test]:
        """Type-check a leaf against what its path can hold; unknown stages/statuses are errors."""
        op, arg, line, path, label = test.op, test.value, test.line, test.path, test.label
        values = arg if isinstance(arg, tuple) else (arg,)
        if op in ("eq", "in", "not") and not all(_is_scalar(v) for v in values):
            self.error(line, f"{label}: compare with text, numbers or true/false, got {arg!r}")
            return []
        if op in ("eq", "in", "not") and not values:
            self.error(line, f"{label}: an empty list matches nothing")
            return []
        if op in NUMBER_OPS and not path.startswith(("props.", "contact.counters.")):
            self.error(line, f"{op}: compares numbers; {label} is not a number")
            return []
        if op in NUMBER_OPS and not _is_number(arg):
            self.error(line, f"{op}: takes a number, got {arg!r}")
            return []
        if op == "exists" and not isinstance(arg, bool):
            self.error(line, f"exists: takes true or false, got {arg!r}")
            return []
        if op in ("matches", "contains") and not isinstance(arg, str):
            self.error(line, f"{op}: takes text, got {arg!r}")
            return []
        if op == "matches":
            try:
                re.compile(arg)
            except re.error as exc:
                self.error(line, f"bad regular expression {arg!r}: {exc}")
                return []
        if path == "contact.stage" and op in ("eq", "in", "not", *STAGE_OPS):
            self.known(values, self.vocab.stages, "stage", line)
        if path == "contact.status" and op in ("eq", "in", "not"):
            self.known(values, self.vocab.statuses, "status", line)
        counter = path.startswith("contact.counters.")
        if counter and op in ("eq", "in", "not") and not all(_is_number(v) for v in values):
            self.error(line, f"{label} is a number, got {arg!r}")
            return []
        if path == "email" and op in ("eq", "in", "not"):
            lowered = tuple(v.strip().lower() if isinstance(v, str) else v for v in values)
            arg = lowered if isinstance(arg, tuple) else lowered[0]
        return [replace(test, value=arg)]

    def known(self, values: tuple, names: tuple[str, ...], what: str, line: int) -> None:
        for value in values:
            if value not in names:
                self.error(line, f"unknown {what} {value!r}{did_you_mean(str(value), names)}")

    # actions

    def actions(self, raw: object, line: int) -> list[tuple[Action, int]]:
        if raw is None:
            return []  # a missing `then:` is reported once, by one_rule
        items = raw if isinstance(raw, list) else [raw]
        lines = [raw.line_of(i) for i in range(len(raw))] if isinstance(raw, LocatedList) else []
        out = []
        for i, item in enumerate(items):
            at = lines[i] if lines else line
            action = self.action(item, at)
            if action:
                out.append((action, at))
        if raw is not None and not out and not any(p.rule == self.rule for p in self.problems):
            self.error(line, "then: needs at least one action")
        return out

    def action(self, item: object, line: int) -> Action | None:
        if not isinstance(item, Located) or len(item) != 1:
            self.error(line, f"an action is one of {', '.join(ACTION_KEYS)} (one per list item)")
            return None
        ((kind, arg),) = item.items()
        if kind not in ACTION_KEYS:
            self.error(line, f"unknown action {kind!r}{did_you_mean(kind, ACTION_KEYS)}")
            return None
        if kind == "promote":
            return self.named(arg, self.vocab.stages, "stage", line) and Promote(arg)
        if kind == "set_status":
            return self.named(arg, self.vocab.statuses, "status", line) and SetStatus(arg)
        if kind == "reset":
            return self.counter(arg, line) and Reset(arg)
        if kind == "increment":
            return self.increment(arg, line)
        return self.schedule(arg, line)

    def named(self, arg: object, names: tuple[str, ...], what: str, line: int) -> bool:
        if arg not in names:
            self.error(line, f"unknown {what} {arg!r}{did_you_mean(str(arg), names)}")
            return False
        return True

    def counter(self, name: object, line: int) -> bool:
        if not isinstance(name, str) or not _NAME.match(name):
            self.error(line, f"counter name must be snake_case, got {name!r}")
            return False
        return True

    def increment(self, arg: object, line: int) -> Action | None:
        if isinstance(arg, Located):
            unknown = set(arg) - {"counter", "by"}
            if unknown:
                self.error(line, f"increment: takes counter and by, not {', '.join(unknown)}")
                return None
            by = arg.get("by", 1)
            if not isinstance(by, int) or isinstance(by, bool) or by == 0:
                self.error(line, f"increment by: takes a non-zero whole number, got {by!r}")
                return None
            return (
                Increment(arg.get("counter"), by)
                if self.counter(arg.get("counter"), line)
                else None
            )
        return Increment(arg) if self.counter(arg, line) else None

    def schedule(self, arg: object, line: int) -> Action | None:
        if not isinstance(arg, Located) or set(arg) != {"event", "after"}:
            self.error(line, "schedule: takes {event: <type>, after: <n>s|m|h|d}")
            return None
        after = parse_duration(arg["after"])
        if after is None:
            self.error(line, f"schedule after: {arg['after']!r} is not a duration like 90d or 12h")
            return None
        if not isinstance(arg["event"], str) or not _NAME.match(arg["event"]):
            self.error(line, f"schedule event: {arg['event']!r} is not a snake_case event type")
            return None
        return Schedule(arg["event"], after)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse(text: str, filename: str = "rules.yaml") -> RuleSet:
    """Parse and validate rules text. Raises RulesError listing every error with file:line:rule."""
    parser = _Parser(filename)
    doc = load_yaml(text, filename)
    return parser.document(doc, text)
