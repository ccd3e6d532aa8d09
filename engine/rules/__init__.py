"""Rules: load, validate, lint, compile and evaluate rules.yaml.

`load(path)` / `from_text(text)` give a `Rules`: the parsed file, its version (content hash), its
lint findings and an evaluator. A file with errors raises RulesError listing each as
file:line: error: [rule] message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from engine.errors import Problem, RulesError
from engine.model import BehaviorEvent, ContactState, Decision, Vocabulary
from engine.rules.compile import Compiled, compile_rules
from engine.rules.evaluate import Evaluator
from engine.rules.lint import lint
from engine.rules.schema import Rule, RuleSet, parse

__all__ = ["Rules", "RulesError", "check_text", "from_text", "load"]


@dataclass
class Rules:
    """A valid rules file, compiled and ready to evaluate."""

    ruleset: RuleSet
    compiled: Compiled
    warnings: list[Problem] = field(default_factory=list)
    _evaluator: Evaluator | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return self.ruleset.version

    @property
    def vocab(self) -> Vocabulary:
        return self.ruleset.vocab

    @cached_property
    def by_name(self) -> dict[str, Rule]:
        return {rule.name: rule for rule in self.ruleset.rules}

    def fired(self, event: BehaviorEvent, state: ContactState) -> list[str]:
        """Names of the rules whose conditions hold, in file order."""
        if self._evaluator is None:
            self._evaluator = _evaluator_for(self.compiled, self.vocab)
        return self._evaluator.fired(event, state)

    def decide(self, event: BehaviorEvent, state: ContactState) -> list[Decision]:
        """Every action of every rule that fires, in file order, before the guardrails."""
        rules = self.by_name
        return [
            Decision(name, action)
            for name in self.fired(event, state)
            for action in rules[name].then
        ]


# durable-rules never gives back the memory of a ruleset, so one evaluator per rules version per
# process, reused when the same content comes back (a revert, a second load of the same file).
_EVALUATORS: dict[str, Evaluator] = {}


def _evaluator_for(compiled: Compiled, vocab: Vocabulary) -> Evaluator:
    evaluator = _EVALUATORS.get(compiled.name)
    if evaluator is None:
        evaluator = _EVALUATORS[compiled.name] = Evaluator(compiled, vocab)
    return evaluator


def check_text(text: str, filename: str = "rules.yaml") -> tuple[RuleSet | None, list[Problem]]:
    """Parse and lint without compiling: (ruleset or None, every finding). For `lifecycle check`."""
    try:
        ruleset = parse(text, filename)
    except RulesError as exc:
        return None, exc.problems
    return ruleset, lint(ruleset)


def from_text(text: str, filename: str = "rules.yaml") -> Rules:
    ruleset, problems = check_text(text, filename)
    errors = [p for p in problems if p.severity == "error"]
    if ruleset is None or errors:
        raise RulesError(errors or problems)
    compiled = compile_rules(ruleset)
    try:
        evaluator = _evaluator_for(compiled, ruleset.vocab)
    except Exception as exc:  # the C engine's own error type; lint should have caught it first
        problem = Problem(filename, 1, "error", f"the rules engine refused these rules: {exc}")
        raise RulesError([problem]) from None
    return Rules(ruleset, compiled, problems, evaluator)


def load(path: str | Path) -> Rules:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(
            [Problem(str(path), 1, "error", f"cannot read rules file: {exc}")]
        ) from None
    return from_text(text, str(path))
