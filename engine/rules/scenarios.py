"""Scenario tests for a rules file: given events for one contact, expect stage, status, counters.

They live beside the rules (`rules.yaml` → `rules.test.yaml`); `lifecycle check` and the test
suite run them through the same `engine.process.step` as the events worker:

    scenarios:
      - name: download, demo request, meeting
        start: {stage: lead, status: null, counters: {}}   # optional; default: a new contact
        at: 2026-01-05T09:00:00Z                            # optional; when the first event occurs
        events:
          - event: content_downloaded                       # an event of this type...
            properties: {asset: pricing-guide}              # ...with these properties
          - event: form_submitted
            after: 2d                                       # time since the previous event (1h)
            properties: {form: demo-request}
            expect: {stage: marketing_qualified_lead, fired: [demo-request-makes-mql]}
          - wait: 91d                                       # time passes; scheduled events fire
            expect: {status: future_opportunity}
        expect: {stage: customer, status: open_deal, counters: {contact_attempts: 0}}

`expect` may name `stage`, `status` (null for none), `counters` (only those named are checked;
absent counters are 0) and `fired` (the exact rules that fired on that event, in file order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine.errors import InvalidEvent, Problem, RulesError
from engine.model import BehaviorEvent, ContactState, parse_time
from engine.process import ContactReplay, Step
from engine.rules import Rules
from engine.rules.schema import parse_duration
from engine.rules.yamlsource import Located, LocatedList, load_yaml

DEFAULT_START = "2026-01-05T09:00:00Z"
DEFAULT_GAP = timedelta(hours=1)
EMAIL = "scenario@example.com"
EXPECT_KEYS = ("stage", "status", "counters", "fired")


def scenario_file_for(rules_path: str | Path) -> Path:
    """rules.yaml → rules.test.yaml (beside it)."""
    path = Path(rules_path)
    return path.with_name(f"{path.stem}.test{path.suffix or '.yaml'}")


@dataclass
class ScenarioResult:
    name: str
    line: int
    events: int = 0
    failures: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def run_file(rules: Rules, path: str | Path) -> list[ScenarioResult]:
    path = Path(path)
    return run_text(rules, path.read_text(encoding="utf-8"), str(path))


def run_text(rules: Rules, text: str, filename: str) -> list[ScenarioResult]:
    """Run every scenario. A malformed scenario file raises RulesError naming file:line."""
    doc = load_yaml(text, filename)
    if not isinstance(doc, Located) or not isinstance(doc.get("scenarios"), LocatedList):
        raise RulesError([Problem(filename, 1, "error", "a scenario file has a `scenarios:` list")])
    runner = _Runner(rules, filename)
    results = [
        runner.scenario(item, doc["scenarios"].line_of(i))
        for i, item in enumerate(doc["scenarios"])
    ]
    if runner.problems:
        raise RulesError(runner.problems)
    return results


@dataclass
class _Scenario:
    replay: ContactReplay
    now: datetime
    last: Step | None = None
    """The step of the last listed event (None after a wait)."""


class _Runner:
    def __init__(self, rules: Rules, filename: str):
        self.rules, self.file = rules, filename
        self.problems: list[Problem] = []

    def bad(self, line: int, message: str, scenario: str | None = None) -> None:
        self.problems.append(Problem(self.file, line, "error", message, scenario))

    def scenario(self, raw: object, line: int) -> ScenarioResult:
        if not isinstance(raw, Located) or not isinstance(raw.get("events"), LocatedList):
            self.bad(line, "a scenario is a mapping with name and an `events:` list")
            return ScenarioResult("?", line)
        name = str(raw.get("name") or f"scenario at line {line}")
        result = ScenarioResult(name, line)
        contact = self.start(raw, name)
        if contact is None:
            return result
        events = raw["events"]
        for i, entry in enumerate(events):
            if not self.entry(contact, entry, events.line_of(i), i, result):
                return result
        if "expect" in raw:
            self.expect(contact, raw["expect"], raw.line_of("expect"), result)
        return result

    def start(self, raw: Located, name: str) -> _Scenario | None:
        try:
            now = parse_time(raw.get("at", DEFAULT_START), "at")
            start = raw.get("start") or {}
            state = ContactState.from_dict({"email": EMAIL, **start})
        except (InvalidEvent, ValueError, TypeError, KeyError) as exc:
            self.bad(raw.line, f"bad scenario start: {exc}", name)
            return None
        if state.stage is not None and state.stage not in self.rules.vocab.stages:
            self.bad(raw.line_of("start"), f"unknown start stage {state.stage!r}", name)
            return None
        return _Scenario(ContactReplay(self.rules, state), now)

    def entry(
        self, contact: _Scenario, raw: object, line: int, i: int, res: ScenarioResult
    ) -> bool:
        if not isinstance(raw, Located) or ("event" in raw) == ("wait" in raw):
            self.bad(line, "each entry is `- event: <type>` or `- wait: <duration>`", res.name)
            return False
        gap = _gap(raw.get("wait", raw.get("after")), first=i == 0)
        if gap is None:
            self.bad(line, "after:/wait: take a duration like 2d, 12h, 30m or 10s", res.name)
            return False
        contact.now += gap
        if "wait" in raw:
            contact.replay.fire_due(contact.now)
            contact.last = None
        elif not self.event(contact, raw, line, i, res):
            return False
        if "expect" in raw:
            self.expect(contact, raw["expect"], raw.line_of("expect"), res)
        return True

    def event(
        self, contact: _Scenario, raw: Located, line: int, i: int, res: ScenarioResult
    ) -> bool:
        try:
            event = BehaviorEvent(
                id=f"scenario-{res.line}-{i}",
                type=raw["event"],
                email=EMAIL,
                occurred_at=contact.now,
                source=raw.get("source", "standard"),
                properties=raw.get("properties") or {},
            )
        except InvalidEvent as exc:
            self.bad(line, f"bad event: {exc.detail}", res.name)
            return False
        contact.last = contact.replay.process(event)
        res.events += 1
        return True

    def expect(self, contact: _Scenario, raw: object, line: int, res: ScenarioResult) -> None:
        if not isinstance(raw, Located) or set(raw) - set(EXPECT_KEYS):
            self.bad(line, f"expect: takes {', '.join(EXPECT_KEYS)}", res.name)
            return
        mismatches = _mismatches(contact, raw)
        if mismatches:
            message = "; ".join(mismatches) + _explain(contact.last)
            res.failures.append(Problem(self.file, line, "error", message, res.name))


def _gap(spec: object, first: bool) -> timedelta | None:
    if spec is None:
        return timedelta(0) if first else DEFAULT_GAP
    if spec in (0, "0s"):
        return timedelta(0)
    return parse_duration(spec)


def _mismatches(contact: _Scenario, expect: dict[str, Any]) -> list[str]:
    state, out = contact.replay.state, []
    for key in ("stage", "status"):
        if key in expect and expect[key] != getattr(state, key):
            out.append(f"expected {key} {expect[key]!r}, got {getattr(state, key)!r}")
    for name, value in (expect.get("counters") or {}).items():
        if state.counters.get(name, 0) != value:
            out.append(f"expected counter {name} = {value}, got {state.counters.get(name, 0)}")
    if "fired" in expect:
        fired = list(contact.last.fired) if contact.last else []
        if list(expect["fired"] or []) != fired:
            out.append(f"expected rules {list(expect['fired'] or [])} to fire, got {fired}")
    return out


def _explain(last: Step | None) -> str:
    if last is None:
        return ""
    changes = "; ".join(
        f"{c.rule}: {c.field} {c.from_}→{c.to} {c.outcome}" + (f" ({c.reason})" if c.reason else "")
        for c in last.changes
    )
    return f" (after {last.event.type}: {changes or 'no rule fired'})"
