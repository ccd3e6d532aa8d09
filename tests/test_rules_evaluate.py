"""Compiled rules in durable-rules fire exactly what the grammar says, in file order."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from unittest.mock import patch

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import DEFAULT_STAGES, DEFAULT_STATUSES, BehaviorEvent, ContactState
from engine.rules import Rules, from_text
from engine.rules import compile as compile_module
from engine.rules.compile import compile_rules
from engine.rules.schema import parse
from tests import rules_oracle

T0 = datetime(2026, 11, 26, 10, tzinfo=UTC)


def ev(type="form_submitted", id="e1", **properties) -> BehaviorEvent:
    return BehaviorEvent(id, type, "ann@example.com", T0, "standard", properties)


def contact(stage=None, status=None, **counters) -> ContactState:
    return ContactState("ann@example.com", stage, status, counters)


def rules_of(text: str) -> Rules:
    return from_text(textwrap.dedent(text))


def unlinted(text: str) -> Rules:
    """Compile without lint, for rules the linter would rightly refuse."""
    ruleset = parse(textwrap.dedent(text))
    return Rules(ruleset, compile_rules(ruleset))


# --- Pitfalls of durable-rules, one test each ----------------------------------------------------


def test_every_matching_rule_fires_not_only_the_first():
    rules = rules_of("""
        rules:
          - {name: a, when: {event: form_submitted}, then: {increment: x}}
          - {name: b, when: {form: demo}, then: {increment: y}}
          - {name: c, when: {event: page_viewed}, then: {increment: z}}
          - {name: d, then: {increment: w}}
    """)
    assert rules.fired(ev(form="demo"), contact()) == ["a", "b", "d"]


def test_fired_rules_come_in_file_order_whatever_their_names():
    names = ["zeta", "alpha", "mid", "beta"]
    body = "\n".join(
        f"  - {{name: {n}, when: {{event: deal_won}}, then: {{increment: c}}}}" for n in names
    )
    rules = from_text(f"rules:\n{body}\n")
    assert rules.fired(ev("deal_won"), contact()) == names


def test_a_rule_of_negations_only_fires_once_and_only_for_events():
    # durable's own state fact lacks every field: without the guard it would match `not`.
    rules = unlinted("""
        rules:
          - {name: not-demo, when: {not: {form: demo}}, then: {increment: x}}
    """)
    assert rules.fired(ev(), contact()) == ["not-demo"]
    assert rules.fired(ev(form="demo"), contact()) == []
    assert rules.fired(ev(form="other"), contact()) == ["not-demo"]


def test_an_any_whose_branches_both_hold_fires_once():
    rules = rules_of("""
        rules:
          - name: either
            when: {any: [{form: demo}, {page: pricing}]}
            then: {increment: x}
    """)
    assert rules.fired(ev(form="demo", page="pricing"), contact()) == ["either"]


@pytest.mark.parametrize(
    ("pattern", "text", "fires"),
    [
        (r"\d{3}", "call me at 555", True),  # \d silently never matches in durable's $mt
        (r"^re:\s", "re: hello", True),
        (r"^re:\s", "fw: re: hello", False),
        (r"https?://[^/]+/pricing", "https://acme.com/en/pricing", False),  # [^/] negates here
        (r"/pricing", "https://acme.com/pricing?x=1", True),  # search, not full match
        (r"(?i)NOT NOW", "not now, thanks", True),
    ],
)
def test_matches_uses_python_regular_expressions(pattern, text, fires):
    rules = rules_of(f"""
        rules:
          - name: r
            when: {{subject: {{matches: '{pattern}'}}}}
            then: {{increment: x}}
    """)
    assert rules.fired(ev(subject=text), contact()) == (["r"] if fires else [])


def test_not_counts_a_missing_property_as_not():
    rules = rules_of("""
        rules:
          - {name: r, when: {outcome: {not: connected}}, then: {increment: x}}
    """)
    assert rules.fired(ev(), contact()) == ["r"]
    assert rules.fired(ev(outcome="connected"), contact()) == []
    assert rules.fired(ev(outcome="busy"), contact()) == ["r"]


def test_numbers_in_form_answers_compare_as_numbers():
    rules = rules_of("""
        rules:
          - {name: big, when: {fields.budget: {gte: 10000}}, then: {increment: x}}
          - {name: seats, when: {fields.seats: 25}, then: {increment: y}}
    """)
    assert rules.fired(ev(fields={"budget": "12,500", "seats": "25"}), contact()) == [
        "big",
        "seats",
    ]
    assert rules.fired(ev(fields={"budget": "lots"}), contact()) == []
    assert rules.fired(ev(fields={"budget": 9999.5}), contact()) == []


def test_contains_and_exists_see_lists_and_objects():
    rules = rules_of("""
        rules:
          - {name: tagged, when: {tags: {contains: VIP}}, then: {increment: x}}
          - {name: has-fields, when: {fields: {exists: true}}, then: {increment: y}}
          - {name: no-utm, when: {utm: {exists: false}}, then: {increment: z}}
    """)
    event = ev(tags=["vip", "solar"], fields={"a": 1})
    assert rules.fired(event, contact()) == ["tagged", "has-fields", "no-utm"]


def test_missing_counters_read_as_zero_and_stage_ranks_compare():
    rules = rules_of("""
        rules:
          - name: few-attempts
            when: {contact.counters.attempts: {lt: 3}}
            then: {increment: attempts}
          - name: early
            when: {contact.stage: {before: marketing_qualified_lead}}
            then: {promote: marketing_qualified_lead}
    """)
    assert rules.fired(ev(), contact()) == ["few-attempts", "early"]  # no stage is before all
    assert rules.fired(ev(), contact("lead", attempts=3)) == ["early"]
    assert rules.fired(ev(), contact("customer")) == ["few-attempts"]


def test_email_and_source_conditions():
    rules = rules_of("""
        rules:
          - {name: ann, when: {email: ' Ann@Example.COM '}, then: {increment: x}}
          - {name: typeform, when: {source: typeform}, then: {increment: y}}
    """)
    assert rules.fired(ev(), contact()) == ["ann"]


def test_decide_returns_every_action_of_each_fired_rule_in_order():
    rules = rules_of("""
        rules:
          - name: one
            when: {event: call_logged, contact.stage: sales_qualified_lead}
            then: [{increment: attempts}, {set_status: attempted_to_contact}]
          - {name: two, when: {event: call_logged}, then: {increment: calls}}
    """)
    decisions = rules.decide(ev("call_logged"), contact("sales_qualified_lead", "new"))
    assert [(d.rule, d.action.kind) for d in decisions] == [
        ("one", "increment"),
        ("one", "set_status"),
        ("two", "increment"),
    ]


def test_the_same_event_evaluated_twice_fires_the_same_rules():
    rules = rules_of("""
        rules:
          - {name: a, when: {event: form_submitted}, then: {increment: x}}
    """)
    event = ev()
    assert rules.fired(event, contact()) == rules.fired(event, contact()) == ["a"]


# --- Against the oracle, on random rules and events ---------------------------------------------

FORMS = ["demo", "pricing", "newsletter", "Demo"]
TYPES = ["form_submitted", "page_viewed", "call_logged", "email_replied"]


def one(ops: list[str], values) -> st.SearchStrategy[dict]:
    """A matcher mapping {op: value} with op drawn from ops."""
    return st.builds(lambda op, value: {op: value}, st.sampled_from(ops), values)


def key(name: str, values) -> st.SearchStrategy[dict]:
    return values.map(lambda value: {name: value})


some_forms = st.lists(st.sampled_from(FORMS), min_size=1, max_size=3)
some_statuses = st.lists(st.sampled_from(DEFAULT_STATUSES), min_size=1, max_size=2)
leaf_conditions = st.one_of(
    key("event", st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3)),
    key("form", st.sampled_from(FORMS) | some_forms),
    key("form", one(["not", "in"], some_forms) | one(["not"], st.sampled_from(FORMS))),
    key("form", one(["exists"], st.booleans())),
    key("form", one(["contains"], st.sampled_from(["em", "DE"]))),
    key("form", one(["matches"], st.sampled_from([r"^d", r"\w+ing$", "o"]))),
    key("n", one(["gt", "gte", "lt", "lte"], st.integers(-2, 12)) | st.integers(0, 5)),
    key("contact.stage", st.sampled_from(DEFAULT_STAGES)),
    key(
        "contact.stage",
        one(["before", "after", "at_least", "at_most", "not"], st.sampled_from(DEFAULT_STAGES)),
    ),
    key("contact.stage", one(["exists"], st.booleans())),
    key("contact.status", st.sampled_from(DEFAULT_STATUSES) | some_statuses),
    key("contact.status", one(["not"], st.sampled_from(DEFAULT_STATUSES) | some_statuses)),
    key("contact.status", one(["exists"], st.booleans())),
    key("contact.counters.c", one(["gte", "lt"], st.integers(0, 4))),
    key("fields.size", st.sampled_from(["S", "M"])),
    key("tags", one(["contains"], st.sampled_from(["a", "B"]))),
)


def _merge(parts: list[dict]) -> dict:
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
    return merged


conditions = st.recursive(
    st.lists(leaf_conditions, min_size=0, max_size=3).map(_merge),
    lambda inner: st.one_of(
        st.tuples(inner, st.lists(inner.filter(bool), min_size=1, max_size=3)).map(
            lambda t: {**t[0], "any": t[1]}
        ),
        st.tuples(inner, inner.filter(bool)).map(lambda t: {**t[0], "not": t[1]}),
    ),
    max_leaves=6,
)
events = st.builds(
    lambda type, props: BehaviorEvent("e", type, "ann@example.com", T0, "standard", props),
    st.sampled_from(TYPES),
    st.fixed_dictionaries(
        {},
        optional={
            "form": st.sampled_from([*FORMS, "webinar-signing", ""]) | st.integers(0, 2),
            "n": st.integers(-3, 14) | st.sampled_from(["3", "7.5", "x", " 10 "]) | st.just(None),
            "fields": st.fixed_dictionaries(
                {}, optional={"size": st.sampled_from(["S", "M", "L"])}
            ),
            "tags": st.lists(st.sampled_from(["a", "b", "A"]), max_size=3),
        },
    ),
)
states = st.builds(
    lambda stage, status, c: ContactState("ann@example.com", stage, status, c),
    st.sampled_from([None, *DEFAULT_STAGES]),
    st.sampled_from([None, *DEFAULT_STATUSES]),
    st.fixed_dictionaries({}, optional={"c": st.integers(0, 5)}),
)


def assert_agrees_with_oracle(whens, cases):
    doc = {
        "rules": [
            {"name": f"r{i}", "when": when, "then": {"increment": "c"}}
            for i, when in enumerate(whens)
        ]
    }
    ruleset = parse(yaml.safe_dump(doc, sort_keys=False))
    rules = Rules(ruleset, compile_rules(ruleset))
    for event, state in cases:
        assert rules.fired(event, state) == rules_oracle.fired(ruleset, event, state), (
            event,
            state,
        )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(conditions, min_size=1, max_size=6),
    st.lists(st.tuples(events, states), min_size=1, max_size=15),
)
def test_blocks_computed_in_python_agree_with_the_oracle(whens, cases):
    # A tiny limit sends every any:/not: block (or whole rule) through the Python path.
    with patch.object(compile_module, "MAX_CONDITION_SIZE", 2):
        assert_agrees_with_oracle(whens, cases)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(conditions, min_size=1, max_size=8),
    st.lists(st.tuples(events, states), min_size=1, max_size=15),
)
def test_compiled_rules_fire_exactly_what_the_oracle_says(whens, cases):
    assert_agrees_with_oracle(whens, cases)


def test_a_rule_beyond_durables_expression_limit_still_loads_and_fires_right():
    # durable-rules refuses nested and/or expressions past ~40 parts (create_ruleset error 113);
    # such blocks are computed in Python instead, with the same meaning.
    options = "\n".join(
        f"          - {{form: f{i}, page: p{i}, contact.stage: {{not: lead}}}}" for i in range(12)
    )
    rules = rules_of(
        "rules:\n"
        "  - name: huge\n"
        "    when:\n"
        "      event: form_submitted\n"
        "      not: {any: [{form: a}, {tags: {contains: spam}}]}\n"
        "      any:\n"
        f"{options}\n"
        "    then: {increment: x}\n"
    )
    cases = [
        (ev(form="f3", page="p3"), contact("customer"), ["huge"]),
        (ev(form="f3", page="p3"), contact("lead"), []),
        (ev(form="f3", page="p4"), contact(), []),
        (ev(form="f11", page="p11", tags=["SPAM"]), contact(), []),
        (ev("page_viewed", form="f1", page="p1"), contact(), []),
    ]
    for event, state, expected in cases:
        assert rules.fired(event, state) == expected
        assert rules_oracle.fired(rules.ruleset, event, state) == expected
