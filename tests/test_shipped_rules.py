"""The shipped playbook is valid, lint-clean, and its story tests pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.rules import load
from engine.rules.scenarios import run_file, scenario_file_for

ROOT = Path(__file__).resolve().parent.parent
RULES = load(ROOT / "rules.yaml")
RESULTS = run_file(RULES, scenario_file_for(ROOT / "rules.yaml"))


def test_shipped_rules_have_no_warnings():
    assert [str(w) for w in RULES.warnings] == []


def test_every_rule_is_exercised_by_a_scenario():
    assert len(RESULTS) >= 6
    assert sum(r.events for r in RESULTS) >= 30


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: r.name)
def test_scenario(result):
    assert [str(f) for f in result.failures] == []
