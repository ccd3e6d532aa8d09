"""Validation and lint of rules.yaml (DESIGN §5).

Every test feeds a small rules file through `engine.rules.check_text(text, "bad.yaml")` and pins the
exact file, line, severity and rule name of each finding, plus the key words of its message: a
marketing-ops user reads `bad.yaml:7: error: [rule] message` and must be able to act on it.
"""

from __future__ import annotations

import textwrap

import pytest

from engine.errors import Problem, RulesError
from engine.rules import check_text, from_text
from engine.rules.schema import RuleSet

FILE = "bad.yaml"
ALL_STAGES_BUT_SQL = (
    "no stage, subscriber, lead, marketing_qualified_lead, opportunity, customer, evangelist"
)


# --- helpers -----------------------------------------------------------------------------------


def check(text: str) -> tuple[RuleSet | None, list[Problem]]:
    """Dedent the inline YAML and run validation and lint; never raises."""
    return check_text(textwrap.dedent(text), FILE)


def where(problems: list[Problem]) -> list[tuple[str, int, str, str | None]]:
    return [(p.file, p.line, p.severity, p.rule) for p in problems]


def show(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems) or "(no findings)"


def assert_words(problem: Problem, *words: str) -> None:
    for word in words:
        assert word in problem.message, f"{word!r} not in {problem.message!r}"


def single(
    text: str, line: int, severity: str, rule: str | None, *words: str
) -> tuple[RuleSet | None, Problem]:
    """Exactly one finding: at `line`, of `severity`, about `rule`, its message saying `words`."""
    ruleset, problems = check(text)
    assert where(problems) == [(FILE, line, severity, rule)], show(problems)
    (problem,) = problems
    assert_words(problem, *words)
    tag = f"[{rule}] " if rule else ""
    assert str(problem) == f"{FILE}:{line}: {severity}: {tag}{problem.message}"
    return ruleset, problem


def clean(text: str) -> RuleSet:
    ruleset, problems = check(text)
    assert problems == [], show(problems)
    assert ruleset is not None
    return ruleset


def one_condition(condition: str, action: str = "promote: lead") -> str:
    """A one-rule file (rule `r` on line 3) whose condition is on line 5 and action on line 7."""
    return textwrap.dedent(
        f"""\
        version: 1
        rules:
          - name: r
            when:
              {condition}
            then:
              - {action}
        """
    )


def one_action(action: str, condition: str = "event: form_submitted") -> str:
    return one_condition(condition, action)


# --- YAML syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when:
                  event: form_submitted
                 form: demo-request
                then: {promote: lead}
            """,
            6,
            ["YAML syntax", "block mapping"],
            id="bad-indentation",
        ),
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when: {event: [form_submitted, page_viewed}
                then: {promote: lead}
            """,
            4,
            ["YAML syntax", "flow sequence", "']'"],
            id="unclosed-bracket",
        ),
        pytest.param(
            "version: 1\nrules:\n  - name: demo\n    when:\n\tevent: form_submitted\n"
            "    then: {promote: lead}\n",
            5,
            ["YAML syntax", "'\\t'"],
            id="tab",
        ),
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when:
                  subject: Re: pricing
                then: {promote: lead}
            """,
            5,
            ["YAML syntax", "mapping values are not allowed"],
            id="colon-in-plain-value",
        ),
        pytest.param(
            """\
            version: 1
            rules: !!python/object:os.system []
            """,
            2,
            ["YAML syntax", "python/object"],
            id="unsafe-tag",
        ),
    ],
)
def test_yaml_syntax_error_is_one_located_error(text: str, line: int, words: list[str]) -> None:
    ruleset, _ = single(text, line, "error", None, *words)
    assert ruleset is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when:
                  event: form_submitted
                  form: [demo-request, contact-sales
                then:
                  - promote: marketing_qualified_lead
            """,
            id="unclosed-bracket-across-lines",
        ),
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when:
                  event: form_submitted
                  form: 'demo-request
                then:
                  - promote: marketing_qualified_lead
            """,
            id="unclosed-quote",
        ),
    ],
)
def test_unclosed_construct_names_the_line_where_it_opened(text: str) -> None:
    ruleset, problems = check(text)
    assert ruleset is None
    assert [(p.severity, p.rule) for p in problems] == [("error", None)], show(problems)
    (problem,) = problems
    assert problem.line == 6 or "line 6" in problem.message, str(problem)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when:
                  event: form_submitted
                  event: page_viewed
                then: {promote: lead}
            """,
            6,
            "'event'",
            id="in-when",
        ),
        pytest.param(
            """\
            version: 1
            rules: []
            version: 1
            """,
            3,
            "'version'",
            id="top-level",
        ),
        pytest.param(
            """\
            version: 1
            rules:
              - name: demo
                when: {event: form_submitted}
                then:
                  - schedule: {event: revisit_due, after: 1d, after: 2d}
            """,
            6,
            "'after'",
            id="flow-mapping",
        ),
    ],
)
def test_duplicate_key_is_an_error_at_the_second_key(text: str, line: int, key: str) -> None:
    ruleset, _ = single(text, line, "error", None, "duplicate key", key)
    assert ruleset is None


# --- top level ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- name: demo\n- name: other\n", id="list"),
        pytest.param("just some text\n", id="scalar"),
        pytest.param("", id="empty-file"),
        pytest.param("# only a comment\n", id="only-comment"),
    ],
)
def test_file_that_is_not_a_mapping(text: str) -> None:
    ruleset, _ = single(text, 1, "error", None, "mapping", "`rules:`")
    assert ruleset is None


def test_unknown_top_level_rule_suggests_rules() -> None:
    ruleset, problems = check(
        """\
        version: 1
        rule:
          - name: demo
            when: {event: form_submitted}
            then: {promote: lead}
        """
    )
    assert ruleset is None
    # the typo, and (because of it) the missing `rules:` list
    assert sorted(where(problems)) == [(FILE, 1, "error", None), (FILE, 2, "error", None)]
    typo = next(p for p in problems if p.line == 2)
    assert_words(typo, "unknown top-level key 'rule'", "did you mean 'rules'?")
    missing = next(p for p in problems if p.line == 1)
    assert_words(missing, "`rules:` must be a list")


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("stage", "stages"), ("status", "statuses"), ("event", "events"), ("crn", "crm")],
)
def test_unknown_top_level_key_with_did_you_mean(key: str, suggestion: str) -> None:
    single(
        f"""\
        version: 1
        {key}: {{}}
        rules: []
        """,
        2,
        "error",
        None,
        f"unknown top-level key {key!r}",
        f"did you mean {suggestion!r}?",
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("version: 1\n", 1, id="missing"),
        pytest.param(
            "version: 1\nrules:\n  name: demo\n  then: {promote: lead}\n", 2, id="mapping"
        ),
        pytest.param("version: 1\nrules: promote everyone\n", 2, id="text"),
        pytest.param("version: 1\nrules:\n", 2, id="null"),
    ],
)
def test_rules_missing_or_not_a_list(text: str, line: int) -> None:
    ruleset, _ = single(text, line, "error", None, "`rules:` must be a list of rules")
    assert ruleset is None


@pytest.mark.parametrize("version", ["2", "0", "'1'", "1.1", "v1"])
def test_version_other_than_1(version: str) -> None:
    single(
        f"""\
        rules: []
        version: {version}
        """,
        2,
        "error",
        None,
        "only `version: 1`",
    )


def test_version_may_be_omitted() -> None:
    clean("rules: []\n")


def test_version_true_is_not_version_1() -> None:
    single("version: true\nrules: []\n", 1, "error", None, "only `version: 1`")


def test_stages_redefined_without_sales_qualified_lead() -> None:
    single(
        """\
        version: 1
        stages: [subscriber, lead, customer]
        rules: []
        """,
        2,
        "error",
        None,
        "stages must keep sales_qualified_lead",
    )


def test_stages_without_sql_is_the_only_error() -> None:
    single(
        """\
        version: 1
        stages: [visitor, lead, buyer]
        rules:
          - name: won
            when: {event: deal_won}
            then: {promote: buyer}
        """,
        2,
        "error",
        None,
        "stages must keep sales_qualified_lead",
    )


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(
            """\
            version: 1
            statuses:
              - new
              - working
              - new
            rules: []
            """,
            5,
            ["statuses: 'new' is listed twice"],
            id="status-twice",
        ),
        pytest.param(
            """\
            version: 1
            stages: [lead, sales_qualified_lead, customer, lead]
            rules: []
            """,
            2,
            ["stages: 'lead' is listed twice"],
            id="stage-twice-flow",
        ),
        pytest.param(
            """\
            version: 1
            statuses:
              - new
              - Working On It
            rules: []
            """,
            4,
            ["statuses: 'Working On It' is not a snake_case name"],
            id="status-not-snake-case",
        ),
        pytest.param(
            "version: 1\nstatuses: []\nrules: []\n",
            2,
            ["statuses must be a non-empty list"],
            id="statuses-empty",
        ),
        pytest.param(
            "version: 1\nstatuses: new\nrules: []\n",
            2,
            ["statuses must be a non-empty list"],
            id="statuses-not-a-list",
        ),
        pytest.param(
            "version: 1\ncrm: [hubspot]\nrules: []\n",
            2,
            ["crm must be a mapping"],
            id="crm-not-a-mapping",
        ),
    ],
)
def test_vocabulary_lists(text: str, line: int, words: list[str]) -> None:
    ruleset, _ = single(text, line, "error", None, *words)
    assert ruleset is None


def test_bad_custom_event_name_is_reported_at_its_own_line() -> None:
    single(
        """\
        version: 1
        events:
          - revisit_due
          - Revisit-Due
        rules: []
        """,
        4,
        "error",
        None,
        "'Revisit-Due' is not a snake_case name",
    )


# --- one rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name_line", "shown"),
    [
        pytest.param("", "None", id="missing"),
        pytest.param("name: Demo Request", "'Demo Request'", id="not-a-slug"),
        pytest.param("name: 42", "42", id="number"),
        pytest.param("name: -demo", "'-demo'", id="leading-dash"),
    ],
)
def test_rule_name_must_be_a_slug(name_line: str, shown: str) -> None:
    ruleset, _ = single(
        f"""\
        version: 1
        rules:
          - when: {{event: form_submitted}}
            then: {{promote: lead}}
            {name_line}
        """,
        5 if name_line else 3,
        "error",
        None,
        "rule #1",
        "name must be a slug",
        f"got {shown}",
    )
    assert ruleset is None


def test_second_rule_without_a_name_is_numbered() -> None:
    single(
        """\
        version: 1
        rules:
          - name: first
            when: {event: form_submitted}
            then: {promote: lead}
          - when: {event: page_viewed}
            then: {promote: lead}
        """,
        6,
        "error",
        None,
        "rule #2",
        "name must be a slug",
    )


def test_rule_that_is_not_a_mapping() -> None:
    single(
        """\
        version: 1
        rules:
          - demo-request-makes-mql
        """,
        3,
        "error",
        None,
        "each rule is a mapping with name, when and then",
    )


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("wen", "when"), ("then_", "then"), ("descripton", "description"), ("nmae", "name")],
)
def test_unknown_rule_key_with_did_you_mean(key: str, suggestion: str) -> None:
    single(
        f"""\
        version: 1
        rules:
          - name: demo
            {key}: x
            when: {{event: form_submitted}}
            then: {{promote: lead}}
        """,
        4,
        "error",
        "demo",
        f"unknown rule key {key!r}",
        f"did you mean {suggestion!r}?",
    )


def test_when_must_be_a_mapping() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when: [form_submitted]
            then: {promote: lead}
        """,
        4,
        "error",
        "demo",
        "when must be a mapping of conditions",
    )


def test_missing_then_is_reported_at_the_rule() -> None:
    ruleset, problems = check(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
        """
    )
    assert ruleset is None
    assert where(problems)[0] == (FILE, 3, "error", "demo"), show(problems)
    assert_words(problems[0], "a rule needs `then:`")


def test_missing_then_is_the_only_error() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
        """,
        3,
        "error",
        "demo",
        "a rule needs `then:`",
    )


def test_empty_then_list() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
            then: []
        """,
        5,
        "error",
        "demo",
        "then: needs at least one action",
    )


def test_two_keys_in_one_action_item() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
            then:
              - promote: lead
                set_status: new
            """,
        6,
        "error",
        "demo",
        "an action is one of promote, set_status, increment, reset, schedule",
        "one per list item",
    )


def test_errors_of_every_rule_are_collected_in_one_pass() -> None:
    ruleset, problems = check(
        """\
        version: 1
        rules:
          - name: first
            when: {event: page_viewed, contact.stage: leed}
            then:
              - promote: opportunty
          - name: second
            when: {event: meeting_booked, contact.stage: sales_qualified_lead}
            then:
              - set_status: conected
        """
    )
    assert ruleset is None
    assert where(problems) == [
        (FILE, 4, "error", "first"),
        (FILE, 6, "error", "first"),
        (FILE, 10, "error", "second"),
    ], show(problems)
    assert_words(problems[0], "unknown stage 'leed'", "did you mean 'lead'?")
    assert_words(problems[1], "unknown stage 'opportunty'", "did you mean 'opportunity'?")
    assert_words(problems[2], "unknown status 'conected'", "did you mean 'connected'?")


# --- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        pytest.param(
            "contact.stage: marketing_qualified",
            ["unknown stage 'marketing_qualified'", "did you mean 'marketing_qualified_lead'?"],
            id="unknown-stage",
        ),
        pytest.param(
            "contact.stage: {before: sales_qualified}",
            ["unknown stage 'sales_qualified'", "did you mean 'sales_qualified_lead'?"],
            id="unknown-stage-in-before",
        ),
        pytest.param(
            "contact.stage: {not: [lead, custmer]}",
            ["unknown stage 'custmer'", "did you mean 'customer'?"],
            id="unknown-stage-in-not-list",
        ),
        pytest.param(
            "contact.status: conected",
            ["unknown status 'conected'", "did you mean 'connected'?"],
            id="unknown-status",
        ),
        pytest.param(
            "contact.status: [new, hot]",
            ["unknown status 'hot'"],
            id="unknown-status-in-list",
        ),
        pytest.param(
            "contact.stag: lead",
            ["unknown contact field 'contact.stag'", "did you mean 'contact.stage'?"],
            id="unknown-contact-field",
        ),
        pytest.param(
            "contact.statuss: new",
            ["unknown contact field 'contact.statuss'", "did you mean 'contact.status'?"],
            id="unknown-contact-field-status",
        ),
        pytest.param(
            "contact.counters.Visits: 3",
            ["counter name 'Visits' must be snake_case"],
            id="counter-not-snake-case",
        ),
        pytest.param(
            "contact.counters.visits: {gtee: 3}",
            ["unknown matcher 'gtee'", "did you mean 'gte'?"],
            id="unknown-matcher",
        ),
        pytest.param(
            "form: {machtes: demo}",
            ["unknown matcher 'machtes'", "did you mean 'matches'?"],
            id="unknown-matcher-matches",
        ),
        pytest.param(
            "form: {before: lead}",
            ["before:", "compares stages", "only applies to contact.stage"],
            id="before-on-property",
        ),
        pytest.param(
            "contact.status: {at_least: connected}",
            ["at_least:", "only applies to contact.stage"],
            id="at-least-on-status",
        ),
        pytest.param(
            "contact.counters.visits: {gt: many}",
            ["gt: takes a number", "got 'many'"],
            id="gt-with-text",
        ),
        pytest.param(
            "amount: {lte: lots}",
            ["lte: takes a number", "got 'lots'"],
            id="lte-with-text",
        ),
        pytest.param(
            "event: {gt: 3}",
            ["gt: compares numbers", "is not a number"],
            id="gt-on-event",
        ),
        pytest.param(
            "contact.stage: {gte: 2}",
            ["gte: compares numbers", "contact.stage is not a number"],
            id="gte-on-stage",
        ),
        pytest.param(
            "page_url: {matches: '([a-z'}",
            ["bad regular expression '([a-z'", "unterminated character set"],
            id="bad-regex",
        ),
        pytest.param(
            "page_url: {matches: '*pricing'}",
            ["bad regular expression '*pricing'", "nothing to repeat"],
            id="bad-regex-glob",
        ),
        pytest.param("form: {in: demo-request}", ["in: takes a list of values"], id="in-not-list"),
        pytest.param("form: []", ["form", "an empty list matches nothing"], id="empty-list"),
        pytest.param("form: {in: []}", ["form", "an empty list matches nothing"], id="empty-in"),
        pytest.param("form: {}", ["an empty matcher mapping matches nothing"], id="empty-matcher"),
        pytest.param(
            "any: {form: demo-request}",
            ["any: takes a list of condition mappings"],
            id="any-not-list",
        ),
        pytest.param("any: []", ["any: takes a list of condition mappings"], id="any-empty"),
        pytest.param(
            "not: form_submitted",
            ["not: takes a mapping of conditions"],
            id="not-not-mapping",
        ),
        pytest.param("not: {}", ["not: takes a mapping of conditions"], id="not-empty"),
        pytest.param(
            "contact.counters.visits: many",
            ["contact.counters.visits is a number", "got 'many'"],
            id="counter-equals-text",
        ),
        pytest.param(
            "contact.counters.visits: [1, two]",
            ["contact.counters.visits is a number", "'two'"],
            id="counter-in-text",
        ),
        pytest.param(
            "form: {exists: maybe}",
            ["exists: takes true or false", "got 'maybe'"],
            id="exists-not-bool",
        ),
        pytest.param(
            "form: {contains: 3}", ["contains: takes text", "got 3"], id="contains-number"
        ),
        pytest.param(
            "form: [demo-request, {nested: map}]",
            ["compare with text, numbers or true/false"],
            id="list-of-mappings",
        ),
        pytest.param(
            "form..name: demo",
            ["'form..name' is not a property path"],
            id="empty-path-segment",
        ),
    ],
)
def test_bad_condition(condition: str, words: list[str]) -> None:
    ruleset, _ = single(one_condition(condition), 5, "error", "r", *words)
    assert ruleset is None


def test_bad_condition_inside_any_and_not_is_located() -> None:
    ruleset, problems = check(
        """\
        version: 1
        rules:
          - name: demo
            when:
              any:
                - event: form_submitted
                - contact.stage: leed
              not:
                contact.status: {gtee: 1}
            then: {promote: lead}
        """
    )
    assert ruleset is None
    assert where(problems) == [(FILE, 7, "error", "demo"), (FILE, 9, "error", "demo")]
    assert_words(problems[0], "unknown stage 'leed'", "did you mean 'lead'?")
    assert_words(problems[1], "unknown matcher 'gtee'", "did you mean 'gte'?")


def test_any_entry_that_is_not_a_mapping_is_reported_at_its_line() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when:
              any:
                - event: form_submitted
                - page_viewed
            then: {promote: lead}
        """,
        7,
        "error",
        "demo",
        "any: each entry is a mapping of conditions",
    )


@pytest.mark.parametrize(
    ("condition", "key", "internal"),
    [
        pytest.param("event: {gt: 3}", "event", "type is", id="gt-on-event"),
        pytest.param("form: []", "form", "props.", id="empty-list"),
        pytest.param("form: {exists: false, contains: demo}", "form", "props.", id="exists-absent"),
    ],
)
def test_messages_name_the_key_as_the_user_wrote_it(
    condition: str, key: str, internal: str
) -> None:
    _, problems = check(one_condition(condition))
    assert len(problems) == 1, show(problems)
    (problem,) = problems
    assert key in problem.message and internal not in problem.message, str(problem)


def test_valid_conditions_of_every_kind() -> None:
    clean(
        """\
        version: 1
        rules:
          - name: every-matcher
            when:
              event: [form_submitted, page_viewed]
              source: typeform
              email: {contains: '@acme.com'}
              form: {in: [demo-request, contact-sales]}
              form_name: {not: Newsletter}
              page_url: {matches: '^https://acme\\.com/(pricing|demo)'}
              fields.company_size: {gte: 50, lt: 5000}
              utm_campaign: {exists: true}
              contact.stage: {at_least: lead, at_most: marketing_qualified_lead}
              contact.counters.visits: {gt: 2}
              any:
                - fields.country: [US, CA]
                - fields.budget: {exists: false}
              not: {fields.student: true}
            then:
              - increment: visits
              - promote: marketing_qualified_lead
        """
    )


# --- actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "words"),
    [
        pytest.param(
            "promote: opportunty",
            ["unknown stage 'opportunty'", "did you mean 'opportunity'?"],
            id="promote-unknown-stage",
        ),
        pytest.param(
            "set_status: conected",
            ["unknown status 'conected'", "did you mean 'connected'?"],
            id="set-status-unknown",
        ),
        pytest.param(
            "promot: lead",
            ["unknown action 'promot'", "did you mean 'promote'?"],
            id="unknown-action",
        ),
        pytest.param(
            "set_stage: lead",
            ["unknown action 'set_stage'", "did you mean 'set_status'?"],
            id="unknown-action-set-stage",
        ),
        pytest.param(
            "increment: {counter: visits, by: 0}",
            ["increment by: takes a non-zero whole number", "got 0"],
            id="increment-by-zero",
        ),
        pytest.param(
            "increment: {counter: visits, by: two}",
            ["increment by: takes a non-zero whole number", "got 'two'"],
            id="increment-by-text",
        ),
        pytest.param(
            "increment: {counter: visits, by: 1.5}",
            ["increment by: takes a non-zero whole number", "got 1.5"],
            id="increment-by-fraction",
        ),
        pytest.param(
            "increment: {counter: visits, step: 2}",
            ["increment: takes counter and by", "step"],
            id="increment-unknown-key",
        ),
        pytest.param(
            "increment: Page Views",
            ["counter name must be snake_case", "'Page Views'"],
            id="increment-bad-counter",
        ),
        pytest.param(
            "reset: Visits",
            ["counter name must be snake_case", "'Visits'"],
            id="reset-bad-counter",
        ),
        pytest.param(
            "schedule: {event: page_viewed, after: 90 days}",
            ["schedule after: '90 days' is not a duration", "90d"],
            id="schedule-90-days",
        ),
        pytest.param(
            "schedule: {event: page_viewed, after: 0d}",
            ["'0d' is not a duration"],
            id="schedule-zero",
        ),
        pytest.param(
            "schedule: {event: page_viewed, after: 3w}",
            ["'3w' is not a duration"],
            id="schedule-weeks",
        ),
        pytest.param(
            "schedule: {event: page_viewed}",
            ["schedule: takes {event: <type>, after: <n>s|m|h|d}"],
            id="schedule-missing-after",
        ),
        pytest.param(
            "schedule: {after: 1d}",
            ["schedule: takes {event: <type>, after:"],
            id="schedule-missing-event",
        ),
        pytest.param(
            "schedule: {event: page_viewed, after: 1d, email: ann@example.com}",
            ["schedule: takes {event: <type>, after:"],
            id="schedule-extra-key",
        ),
        pytest.param(
            "schedule: {event: Revisit Due, after: 1d}",
            ["schedule event: 'Revisit Due' is not a snake_case event type"],
            id="schedule-bad-event-name",
        ),
    ],
)
def test_bad_action(action: str, words: list[str]) -> None:
    ruleset, _ = single(one_action(action), 7, "error", "r", *words)
    assert ruleset is None


def test_single_action_without_a_list_is_located_at_then() -> None:
    single(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
            then: {promote: leed}
        """,
        5,
        "error",
        "demo",
        "unknown stage 'leed'",
        "did you mean 'lead'?",
    )


def test_schedule_of_unknown_event_type_is_a_warning() -> None:
    ruleset, _ = single(
        one_action("schedule: {event: form_submited, after: 2d}"),
        7,
        "warning",
        "r",
        "event type 'form_submited' is neither standard nor listed under `events:`",
        "did you mean 'form_submitted'?",
    )
    assert ruleset is not None


@pytest.mark.parametrize("after", ["90d", "12h", "30m", "45s", "3600", "' 2d '"])
def test_valid_schedule_durations(after: str) -> None:
    clean(one_action(f"schedule: {{event: page_viewed, after: {after}}}"))


# --- lint: names -------------------------------------------------------------------------------


def test_duplicate_rule_name_is_an_error_at_the_second_naming_the_first() -> None:
    ruleset, _ = single(
        """\
        version: 1
        rules:
          - name: demo-request
            when: {event: form_submitted}
            then: {promote: lead}
          - name: webinar
            when: {event: webinar_attended}
            then: {promote: lead}
          - description: the same name again
            name: demo-request
            when: {event: page_viewed}
            then: {promote: lead}
        """,
        10,
        "error",
        "demo-request",
        "duplicate rule name",
        "first defined at line 3",
    )
    assert ruleset is not None  # a lint error: parsed, but from_text refuses it


def test_unknown_event_type_is_a_warning_with_did_you_mean() -> None:
    single(
        one_condition("event: [page_viewed, form_submited]"),
        5,
        "warning",
        "r",
        "event type 'form_submited' is neither standard nor listed under `events:`",
        "did you mean 'form_submitted'?",
    )


def test_unknown_event_type_in_not_is_a_warning_too() -> None:
    single(
        one_condition("not: {event: meeting_cancelled}"),
        5,
        "warning",
        "r",
        "event type 'meeting_cancelled'",
        "did you mean 'meeting_canceled'?",
    )


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        pytest.param(
            "event: form_submited",
            ["'form_submited'", "did you mean 'form_submitted'?"],
            id="typo",
        ),
        pytest.param("event: trial_started", ["'trial_started'"], id="unlisted-custom"),
    ],
)
def test_unknown_event_type_alone_is_only_a_warning(condition: str, words: list[str]) -> None:
    # DESIGN §5: an unlisted event type is a warning, never an error (not "can never fire")
    single(one_condition(condition), 5, "warning", "r", *words)


@pytest.mark.parametrize(
    "events",
    [
        pytest.param("events: [trial_started, revisit_due]", id="list"),
        pytest.param("events: {trial_started: from the app, revisit_due: scheduled}", id="map"),
    ],
)
def test_custom_event_types_listed_under_events_give_no_warning(events: str) -> None:
    clean(
        f"""\
        version: 1
        {events}
        rules:
          - name: trial-makes-lead
            when:
              event: trial_started
            then:
              - promote: lead
              - schedule: {{event: revisit_due, after: 14d}}
        """
    )


# --- lint: backward promotions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage_condition", "target"),
    [
        pytest.param("{at_least: customer}", "opportunity", id="at-least-customer-to-opportunity"),
        pytest.param("lead", "lead", id="same-stage"),
        pytest.param("{after: lead}", "lead", id="after-lead-to-lead"),
        pytest.param("[opportunity, customer]", "marketing_qualified_lead", id="list-past-target"),
    ],
)
def test_promotion_that_can_only_move_backward_is_an_error(
    stage_condition: str, target: str
) -> None:
    ruleset, _ = single(
        f"""\
        version: 1
        rules:
          - name: back
            when:
              event: form_submitted
              contact.stage: {stage_condition}
            then:
              - increment: forms
              - promote: {target}
        """,
        9,
        "error",
        "back",
        f"promote: {target} only matches contacts already at or past {target}",
        "backward",
    )
    assert ruleset is not None


@pytest.mark.parametrize(
    ("stage_condition", "target"),
    [
        pytest.param("{at_most: lead}", "lead", id="at-most-target"),
        pytest.param("{before: customer}", "customer", id="before-target"),
        pytest.param("{exists: false}", "subscriber", id="no-stage-yet"),
        pytest.param("[lead, customer]", "opportunity", id="one-of-them-forward"),
        pytest.param("{not: lead}", "subscriber", id="not-keeps-no-stage"),
    ],
)
def test_promotion_that_can_move_forward_is_fine(stage_condition: str, target: str) -> None:
    clean(
        f"""\
        version: 1
        rules:
          - name: forward
            when:
              event: form_submitted
              contact.stage: {stage_condition}
            then:
              - promote: {target}
        """
    )


# --- lint: status outside SQL ------------------------------------------------------------------


def test_set_status_without_stage_condition_warns_listing_stages_outside_sql() -> None:
    ruleset, _ = single(
        """\
        version: 1
        rules:
          - name: call-attempt
            when:
              event: call_logged
            then:
              - set_status: attempted_to_contact
        """,
        7,
        "warning",
        "call-attempt",
        "set_status: attempted_to_contact can match contacts outside sales_qualified_lead",
        f"({ALL_STAGES_BUT_SQL})",
        "guardrail refuses",
        "contact.stage: sales_qualified_lead",
    )
    assert ruleset is not None


def test_set_status_past_sql_warns_listing_only_later_stages() -> None:
    single(
        """\
        version: 1
        rules:
          - name: call-attempt
            when:
              event: call_logged
              contact.stage: {at_least: sales_qualified_lead}
            then:
              - set_status: attempted_to_contact
        """,
        8,
        "warning",
        "call-attempt",
        "(opportunity, customer, evangelist)",
    )


def test_set_status_at_sql_gives_no_warning() -> None:
    clean(
        """\
        version: 1
        rules:
          - name: call-attempt
            when:
              event: call_logged
              contact.stage: sales_qualified_lead
            then:
              - set_status: attempted_to_contact
        """
    )


def test_set_status_with_promotion_to_sql_from_before_sql_gives_no_warning() -> None:
    clean(
        """\
        version: 1
        rules:
          - name: meeting-makes-sql
            when:
              event: meeting_booked
              contact.stage: {before: sales_qualified_lead}
            then:
              - promote: sales_qualified_lead
              - set_status: connected
        """
    )


def test_set_status_with_promotion_to_sql_but_no_stage_condition_warns_for_later_stages() -> None:
    single(
        """\
        version: 1
        rules:
          - name: meeting-makes-sql
            when:
              event: meeting_booked
            then:
              - promote: sales_qualified_lead
              - set_status: connected
        """,
        8,
        "warning",
        "meeting-makes-sql",
        "set_status: connected",
        "(opportunity, customer, evangelist)",
    )


def test_set_status_with_status_condition_lists_only_stages_past_sql() -> None:
    single(
        """\
        version: 1
        rules:
          - name: recycle
            when:
              event: call_logged
              contact.status: attempted_to_contact
            then:
              - set_status: bad_timing
        """,
        8,
        "warning",
        "recycle",
        "(opportunity, customer, evangelist)",
    )


# --- lint: statuses ----------------------------------------------------------------------------


def test_more_than_eight_statuses_warns_at_statuses_line() -> None:
    ruleset, _ = single(
        """\
        version: 1
        rules: []
        statuses:
          - new
          - attempted_to_contact
          - connected
          - open_deal
          - unqualified
          - bad_timing
          - future_opportunity
          - nurture
          - do_not_contact
        """,
        3,
        "warning",
        None,
        "9 lead statuses",
        "more than 8",
    )
    assert ruleset is not None


def test_eight_statuses_are_fine() -> None:
    clean("version: 1\nstatuses: [a, b, c, d, e, f, g, h]\nrules: []\n")


# --- lint: rules that can never fire -----------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "words"),
    [
        pytest.param(
            "{event: form_submitted, not: {event: form_submitted}}",
            ["its event conditions exclude every event type"],
            id="event-and-not-event",
        ),
        pytest.param(
            "{event: [form_submitted, page_viewed], not: {event: [page_viewed, form_submitted]}}",
            ["its event conditions exclude every event type"],
            id="event-list-and-not-list",
        ),
        pytest.param(
            "{contact.stage: {before: lead, after: customer}}",
            ["its contact.stage conditions exclude every stage"],
            id="before-lead-after-customer",
        ),
        pytest.param(
            "{contact.stage: lead, not: {contact.stage: lead}}",
            ["its contact.stage conditions exclude every stage"],
            id="stage-and-not-stage",
        ),
        pytest.param(
            "{contact.stage: {at_most: subscriber, at_least: lead}}",
            ["its contact.stage conditions exclude every stage"],
            id="at-most-below-at-least",
        ),
        pytest.param(
            "{contact.counters.visits: {gt: 5, lt: 3}}",
            ["no number is both above 5 and below 3", "contact.counters.visits"],
            id="counter-gt-5-lt-3",
        ),
        pytest.param(
            "{contact.counters.visits: {gte: 5, lt: 5}}",
            ["above 5 and below 5", "contact.counters.visits"],
            id="counter-gte-5-lt-5",
        ),
        pytest.param(
            "{contact.counters.visits: {gt: 5, lte: 5}}",
            ["above 5 and below 5", "contact.counters.visits"],
            id="counter-gt-5-lte-5",
        ),
        pytest.param(
            "{amount: {gt: 1000, lte: 10}}",
            ["no number is both above 1000 and below 10", "amount"],
            id="property-range",
        ),
        pytest.param(
            "{form: {exists: false, contains: demo}}",
            ["form", "must both exist and be absent"],
            id="property-absent-and-contains",
        ),
        pytest.param(
            "{amount: {exists: false, gte: 1}}",
            ["amount", "must both exist and be absent"],
            id="property-absent-and-compared",
        ),
        pytest.param(
            "{contact.status: connected, contact.stage: {before: sales_qualified_lead}}",
            ["it needs a lead status", "sales_qualified_lead"],
            id="status-before-sql",
        ),
        pytest.param(
            "{contact.status: {exists: true}, contact.stage: {at_most: lead}}",
            ["it needs a lead status"],
            id="status-exists-at-most-lead",
        ),
    ],
)
def test_rule_that_can_never_fire_is_an_error_at_its_name(when: str, words: list[str]) -> None:
    ruleset, _ = single(
        f"""\
        version: 1
        rules:
          - description: impossible on purpose
            name: never
            when: {when}
            then:
              - increment: visits
              - promote: opportunity
        """,
        4,
        "error",
        "never",
        "this rule can never fire",
        *words,
    )
    assert ruleset is not None


def test_unlisted_event_type_and_its_negation_can_never_fire() -> None:
    _, problems = check(
        """\
        version: 1
        rules:
          - name: never
            when: {event: trial_started, not: {event: trial_started}}
            then: {promote: lead}
        """
    )
    assert where(problems) == [
        (FILE, 3, "error", "never"),
        (FILE, 4, "warning", "never"),
        (FILE, 4, "warning", "never"),
    ], show(problems)
    assert_words(problems[0], "this rule can never fire", "event conditions exclude every")
    assert_words(problems[1], "event type 'trial_started' is neither standard nor listed")


@pytest.mark.parametrize(
    "when",
    [
        pytest.param("{contact.counters.visits: {gte: 5, lte: 5}}", id="exactly-5"),
        pytest.param("{contact.stage: {after: lead, before: customer}}", id="stage-window"),
        pytest.param("{form: {exists: true, contains: demo}}", id="exists-and-contains"),
        pytest.param(
            "{contact.status: connected, contact.stage: {at_least: sales_qualified_lead}}",
            id="status-at-sql",
        ),
        pytest.param("{event: form_submitted, not: {event: page_viewed}}", id="other-event"),
        pytest.param(
            "{contact.status: {exists: false}, contact.stage: {before: sales_qualified_lead}}",
            id="no-status-before-sql",
        ),
    ],
)
def test_satisfiable_rule_is_not_reported(when: str) -> None:
    clean(
        f"""\
        version: 1
        rules:
          - name: possible
            when: {when}
            then:
              - increment: visits
              - promote: opportunity
        """
    )


def test_conflicting_values_through_any_are_not_claimed_by_lint() -> None:
    # lint._range_conflict only compares top-level leaves (and a key cannot repeat in a mapping),
    # so a value ruled out through `any:` is not detected: the rule parses and lints clean.
    clean(
        """\
        version: 1
        rules:
          - name: demo-or-nothing
            when:
              event: form_submitted
              form: demo-request
              any:
                - form: contact-sales
            then:
              - promote: lead
        """
    )


def test_property_present_and_negated_presence_can_never_fire() -> None:
    single(
        """\
        version: 1
        rules:
          - name: never
            when:
              event: form_submitted
              form: {exists: true}
              not: {form: {exists: true}}
            then:
              - promote: lead
        """,
        3,
        "error",
        "never",
        "this rule can never fire",
        "form",
    )


@pytest.mark.parametrize(
    "negated",
    [
        pytest.param("{event: {matches: '^page_'}}", id="event-matches"),
        pytest.param("{event: {contains: page}}", id="event-contains"),
        pytest.param("{contact.status: {matches: '^bad'}}", id="status-matches"),
    ],
)
def test_negated_pattern_does_not_make_a_rule_impossible(negated: str) -> None:
    clean(
        f"""\
        version: 1
        rules:
          - name: not-a-page-view
            when:
              event: [form_submitted, webinar_attended]
              not: {negated}
            then:
              - promote: lead
        """
    )


@pytest.mark.parametrize("matcher", ["{matches: '^cust'}", "{contains: qualified}"])
def test_stage_pattern_matcher_does_not_crash_lint(matcher: str) -> None:
    check(one_condition(f"contact.stage: {matcher}"))


# --- lint: counters ----------------------------------------------------------------------------


def test_counter_read_but_never_incremented_warns() -> None:
    ruleset, _ = single(
        """\
        version: 1
        rules:
          - name: engaged
            when:
              event: page_viewed
              contact.counters.page_views: {gte: 3}
            then:
              - promote: lead
        """,
        6,
        "warning",
        "engaged",
        "counter 'page_views' is read but no rule increments it",
        "stays 0",
    )
    assert ruleset is not None


def test_counter_incremented_by_another_rule_is_fine() -> None:
    clean(
        """\
        version: 1
        rules:
          - name: engaged
            when:
              event: page_viewed
              contact.counters.page_views: {gte: 3}
            then:
              - promote: lead
          - name: count-views
            when: {event: page_viewed}
            then:
              - increment: {counter: page_views, by: 1}
        """
    )


def test_counter_only_reset_still_warns() -> None:
    single(
        """\
        version: 1
        rules:
          - name: engaged
            when:
              event: page_viewed
              contact.counters.page_views: {gte: 3}
            then:
              - reset: page_views
        """,
        6,
        "warning",
        "engaged",
        "counter 'page_views' is read but no rule increments it",
    )


# --- a clean, realistic file -------------------------------------------------------------------

PLAYBOOK = """\
    version: 1
    events:
      revisit_due: sent 90 days after a lead is parked as bad timing
    rules:
      - name: newsletter-signup-makes-subscriber
        description: Anyone who signs up for the newsletter is at least a subscriber.
        when:
          event: form_submitted
          form: newsletter
        then: {promote: subscriber}
      - name: content-makes-lead
        when:
          event: [content_downloaded, webinar_attended]
        then:
          - promote: lead
      - name: count-pricing-views
        when:
          event: page_viewed
          url: {matches: '^https://example\\.com/pricing'}
        then:
          - increment: pricing_views
      - name: demo-request-makes-mql
        description: A demo request is a strong buying signal.
        when:
          event: form_submitted
          form: [demo-request, contact-sales]
          contact.stage: {before: sales_qualified_lead}
        then:
          - promote: marketing_qualified_lead
      - name: pricing-interest-makes-mql
        when:
          event: page_viewed
          contact.stage: {at_most: lead}
          contact.counters.pricing_views: {gte: 3}
          not: {email: {contains: '@example.com'}}
        then:
          - promote: marketing_qualified_lead
      - name: meeting-makes-sql
        when:
          event: meeting_booked
          contact.stage: {before: sales_qualified_lead}
        then:
          - promote: sales_qualified_lead
          - set_status: connected
      - name: unanswered-call-is-an-attempt
        when:
          event: call_logged
          outcome: [no_answer, left_voicemail, busy]
          contact.stage: sales_qualified_lead
        then:
          - increment: {counter: contact_attempts, by: 1}
          - set_status: attempted_to_contact
      - name: reply-or-answered-call-connects
        when:
          contact.stage: sales_qualified_lead
          any:
            - event: email_replied
            - {event: call_logged, outcome: connected}
        then:
          - set_status: connected
          - reset: contact_attempts
      - name: recycle-after-five-attempts
        when:
          event: call_logged
          contact.stage: sales_qualified_lead
          contact.status: attempted_to_contact
          contact.counters.contact_attempts: {gte: 5}
        then:
          - set_status: bad_timing
          - schedule: {event: revisit_due, after: 90d}
      - name: revisit-reopens
        when:
          event: revisit_due
          contact.stage: sales_qualified_lead
          contact.status: bad_timing
        then:
          - set_status: new
      - name: deal-makes-opportunity
        when:
          event: deal_created
          amount: {gt: 0}
        then:
          - promote: opportunity
      - name: won-deal-makes-customer
        when:
          event: deal_won
        then:
          - promote: customer
    """


def test_realistic_playbook_has_no_errors_and_no_warnings() -> None:
    ruleset = clean(PLAYBOOK)
    assert [rule.name for rule in ruleset.rules][:2] == [
        "newsletter-signup-makes-subscriber",
        "content-makes-lead",
    ]
    assert len(ruleset.rules) == 12
    assert ruleset.events == ("revisit_due",)


# --- from_text ---------------------------------------------------------------------------------


def test_from_text_raises_rules_error_listing_every_parse_error() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        rules:
          - name: first
            when: {event: page_viewed, contact.stage: leed}
            then:
              - promote: opportunty
          - name: second
            wen: {event: meeting_booked}
            then:
              - set_status: conected
        """
    )
    _, problems = check_text(text, FILE)
    assert len(problems) == 4, show(problems)
    with pytest.raises(RulesError) as caught:
        from_text(text, FILE)
    assert caught.value.problems == problems
    message = str(caught.value)
    for problem in problems:
        assert str(problem) in message
    assert message.splitlines() == [str(p) for p in problems]
    assert "bad.yaml:8: error: [second] unknown rule key 'wen'" in message


def test_from_text_raises_on_lint_errors_and_lists_only_the_errors() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        rules:
          - name: demo
            when: {event: form_submitted}
            then: {promote: lead}
          - name: demo
            when: {contact.stage: {before: lead, after: customer}}
            then:
              - schedule: {event: form_submited, after: 1d}
        """
    )
    _, problems = check_text(text, FILE)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    assert where(errors) == [(FILE, 6, "error", "demo"), (FILE, 6, "error", "demo")], show(errors)
    assert where(warnings) == [(FILE, 9, "warning", "demo")], show(warnings)
    with pytest.raises(RulesError) as caught:
        from_text(text, FILE)
    assert caught.value.problems == errors
    message = str(caught.value)
    for error in errors:
        assert str(error) in message
    assert "duplicate rule name (first defined at line 3)" in message
    assert "this rule can never fire" in message
    assert str(warnings[0]) not in message


def test_warnings_alone_do_not_prevent_loading() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        rules:
          - name: engaged
            when:
              event: page_viewed
              contact.counters.page_views: {gte: 3}
            then:
              - promote: lead
              - schedule: {event: follow_up_due, after: 2d}
          - name: call-attempt
            when: {event: call_logged}
            then:
              - set_status: attempted_to_contact
        """
    )
    _, problems = check_text(text, FILE)
    assert where(problems) == [
        (FILE, 6, "warning", "engaged"),
        (FILE, 9, "warning", "engaged"),
        (FILE, 13, "warning", "call-attempt"),
    ], show(problems)
    rules = from_text(text, FILE)
    assert rules.warnings == problems
    assert list(rules.by_name) == ["engaged", "call-attempt"]


def test_clean_playbook_loads_without_warnings() -> None:
    rules = from_text(textwrap.dedent(PLAYBOOK), FILE)
    assert rules.warnings == []
    assert "recycle-after-five-attempts" in rules.by_name
    assert len(rules.version) == 12
