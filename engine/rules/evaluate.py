"""The only module that touches durable-rules.

One ruleset per rules version per process, evaluated statelessly: under one constant session,
the event is asserted as a fact (so every matching rule fires, not just the first), the fired rule
names are drained, and the fact is retracted. No Host (its threads race and leak), no per-contact
sessions (1,024 cap, hundreds of KiB each), no delete_state (segfaults on unmatched nodes).
The C engine is not thread-safe, so each ruleset evaluates one event at a time under a lock.
"""

from __future__ import annotations

import itertools
import json
import threading

import durable_rules_engine as _engine

from engine.model import BehaviorEvent, ContactState, Vocabulary
from engine.rules.compile import Compiled, FactBuilder

_HANDLED, _NOT_HANDLED = 0, 1


class Evaluator:
    """Fires a compiled ruleset against (event, contact state); returns rule names in file order."""

    def __init__(self, compiled: Compiled, vocab: Vocabulary):
        self.compiled = compiled
        self.vocab = vocab
        self._order = {name: i for i, name in enumerate(compiled.rule_names)}
        self._ids = itertools.count()
        self._build = FactBuilder(compiled, vocab)
        self._lock = threading.Lock()
        self._handle = _engine.create_ruleset(
            compiled.name, json.dumps(compiled.definition[compiled.name])
        )

    def fired(self, event: BehaviorEvent, state: ContactState) -> list[str]:
        """Names of every rule whose conditions hold, in rules-file order."""
        with self._lock:
            fact = self._build(event, state, f"f{next(self._ids)}")
            text = json.dumps(fact)
            code, state_offset = _engine.assert_fact(self._handle, text)
            try:
                names = self._drain(state_offset) if code == _HANDLED else []
            finally:
                _engine.retract_fact(self._handle, text)
        # An `$or` whose branches both hold can report its rule twice.
        return sorted(set(names), key=self._order.__getitem__)

    def _drain(self, state_offset: int) -> list[str]:
        names: list[str] = []
        result = _engine.start_action_for_state(self._handle, state_offset)
        while result:
            payload = result[1] if isinstance(result, tuple) else result
            # '{"<rule name>":{"m":{...the fact...}}}': rule names are slugs (no escapes), so the
            # name is read without parsing the echoed fact.
            names.append(payload[2 : payload.index('"', 2)])
            result = _engine.complete_and_start_action(self._handle, state_offset)
        return names
