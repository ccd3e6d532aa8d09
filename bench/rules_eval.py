"""Rules evaluation: events/s of `Rules.fired` against the bare durable-rules loop; memory.

All in one run, side by side, because the machine is shared and noisy: every timed pass is
repeated (best of the rounds counts) and the passes of one round are interleaved, so the ratios
compare numbers measured under the same load.

1. The shipped rules (rules.yaml; a built-in 20-rule playbook until that file exists) through
   `Rules.fired(event, state)`: the full path, fact building included.
2. The same with 200 generated rules.
3. For both, the bare durable-rules loop on the same compiled ruleset: assert_fact of a fact built
   before timing (json.dumps is timed) → drain the actions → retract_fact.
4. RSS growth over 1,000,000 evaluations (rules + guardrails, `engine.process.step`) spread over
   100,000 contacts.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import durable_rules_engine as durable
import yaml

from bench.common import REPO, Report, Row, rss_mib, timed
from engine.errors import RulesError
from engine.model import STATUS_STAGE, BehaviorEvent, ContactState
from engine.process import step
from engine.rules import Rules, from_text, load
from engine.rules.compile import FactBuilder
from engine.rules.schema import Condition, Not, Test

TITLE = "Rules evaluation"
SHIPPED = REPO / "rules.yaml"

TARGET_PER_SECOND = 20_000
"""Evaluations per second per process with 200 rules."""
TARGET_RATIO = 0.5
"""Our events/s ÷ the bare durable loop's events/s on the same ruleset."""
TARGET_GROWTH_MIB = 50.0
"""RSS growth over 1M evaluations across 100k contacts."""


@dataclass(frozen=True)
class Size:
    events: int  # events per timed pass
    rounds: int  # timed passes of each kind; the best counts
    contacts: int  # contacts behind the throughput events
    memory_evaluations: int
    memory_contacts: int
    warmup: int  # evaluations before the first RSS reading


FULL = Size(50_000, 3, 5_000, 1_000_000, 100_000, 10_000)
QUICK = Size(5_000, 1, 1_000, 30_000, 10_000, 5_000)
BASE_TIME = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

# --- The workload: what events and contacts look like ---------------------------------------

FORMS = (
    "demo-request",
    "contact-sales",
    "newsletter",
    "ebook-signup",
    "webinar-signup",
    "pricing-inquiry",
    "free-trial",
    "partner-application",
)
LANDING_FORMS = tuple(f"landing-{i:02d}" for i in range(40))
FEATURES = tuple(f"/product/feature-{i:02d}" for i in range(20))
URLS = (
    "/",
    "/pricing",
    "/pricing/enterprise",
    "/product/automation",
    "/product/sync",
    "/compare/hubspot-workflows",
    "/compare/zapier",
    "/customers/acme",
    "/customers/globex",
    "/docs/getting-started",
    "/docs/rules",
    "/careers",
    "/about",
    "/security",
)
BLOG = tuple(
    f"/blog/2026/{slug}"
    for slug in (
        "lead-scoring",
        "mql-vs-sql",
        "ops-playbook",
        "routing",
        "attribution",
        "data-hygiene",
    )
)
ASSETS = (
    "state-of-marketing-2026.pdf",
    "roi-calculator.xlsx",
    "buyers-guide.pdf",
    "case-study-acme.pdf",
    "security-whitepaper.pdf",
    "implementation-checklist.pdf",
    *(f"guide-{i:02d}.pdf" for i in range(14)),
)
WEBINARS = (
    "spring-launch",
    "ops-masterclass",
    "q3-roadmap",
    "customer-panel",
    *(f"webinar-{i:02d}" for i in range(8)),
)
DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
MEETING_TYPES = ("Intro call", "Demo", "Technical deep dive", "Pricing review", "Onboarding")
OUTCOMES = ("no_answer", "left_voicemail", "connected", "busy", "wrong_number")
SIZES = ("1-10", "11-50", "51-200", "201-1000", "1000+")
ROLES = ("marketing", "sales", "operations", "engineering", "executive", "student")
PLANS = ("starter", "growth", "enterprise")
COUNTERS = (
    "pricing_views",
    "contact_attempts",
    "emails_since_reply",
    "content_downloads",
    "engagement_score",
    "meetings_booked",
)
CUSTOM_EVENTS = ("trial_started", "revisit_due")
SOURCES = {
    "form_submitted": ("typeform", "webflow", "jotform", "hubspot"),
    "meeting_booked": ("calendly", "calcom"),
    "meeting_canceled": ("calendly", "calcom"),
    "meeting_rescheduled": ("calendly", "calcom"),
    "email_replied": ("mailgun", "postmark", "sendgrid"),
    "call_logged": ("hubspot", "salesforce"),
}
EVENT_MIX = {  # type: weight, roughly what a B2B site and a sales team produce
    "page_viewed": 30,
    "form_submitted": 12,
    "email_sent": 10,
    "call_logged": 10,
    "content_downloaded": 8,
    "email_replied": 6,
    "meeting_booked": 5,
    "webinar_attended": 3,
    "deal_created": 2,
    "deal_stage_changed": 2,
    "trial_started": 2,
    "meeting_canceled": 1,
    "meeting_rescheduled": 1,
    "deal_won": 1,
    "deal_lost": 1,
    "crm_stage_changed": 1,
    "crm_status_changed": 1,
    "revisit_due": 1,
}


def _properties(rng: random.Random, kind: str) -> dict[str, Any]:
    """Normalized properties of one event of `kind` (DESIGN §4), with realistic variety."""
    if kind == "form_submitted":
        form = rng.choice(FORMS) if rng.random() < 0.7 else rng.choice(LANDING_FORMS)
        return {
            "form": form,
            "form_name": form.replace("-", " ").title(),
            "page_url": f"https://www.example.com{rng.choice(URLS)}",
            "fields": {
                "company_size": rng.choice(SIZES),
                "employees": str(rng.choice((3, 25, 120, 450, 2500))),
                "role": rng.choice(ROLES),
            },
        }
    if kind == "page_viewed":
        path = rng.choice((URLS, URLS, FEATURES, BLOG))[rng.randrange(6)]
        return {"url": f"https://www.example.com{path}"}
    if kind == "content_downloaded":
        return {"asset": rng.choice(ASSETS)}
    if kind == "webinar_attended":
        return {"webinar": rng.choice(WEBINARS)}
    if kind == "email_replied":
        subject = rng.choice(("Re: question", "Re: pricing", "Re: unsubscribe me", "Re: demo"))
        return {
            "subject": subject,
            "in_reply_to": f"<m{rng.randrange(10**6)}@mail>",
            "mailbox": "sales@example.com",
        }
    if kind.startswith("meeting_"):
        return {
            "meeting_type": rng.choice(MEETING_TYPES),
            "organizer": "rep@example.com",
            "start_time": "2026-12-01T15:00:00Z",
        }
    if kind == "call_logged":
        return {"outcome": rng.choice(OUTCOMES)}
    if kind == "email_sent":
        return {"subject": rng.choice(("Intro", "Following up", "Checking in"))}
    if kind.startswith("deal_"):
        amount = rng.choice((900, 4_800, 12_500, 60_000))
        return {
            "deal_id": str(rng.randrange(10**6)),
            "deal_stage": rng.choice(DEAL_STAGES),
            "amount": amount if rng.random() < 0.8 else f"{amount:,}",
        }
    if kind == "crm_stage_changed":
        return {
            "value": rng.choice(("lead", "marketing_qualified_lead", "customer")),
            "changed_by": "rep@example.com",
        }
    if kind == "crm_status_changed":
        return {
            "value": rng.choice(("connected", "unqualified", "bad_timing")),
            "changed_by": "rep@example.com",
        }
    if kind == "trial_started":
        return {"plan": rng.choice(PLANS)}
    return {}


def _hints(rules: Rules) -> dict[str, dict[str, tuple]]:
    """Per event type, per property: the values the rules compare it with. A quarter of the
    events carry one of them, so a rules file naming properties and values this module does not
    know (rules.yaml) still meets events that can match it."""
    hints: dict[str, dict[str, dict]] = {}
    for rule in rules.ruleset.rules:
        tests = list(_tests(rule.when))
        types: set[str] = set()
        for test in tests:
            if test.path == "type" and test.op in ("eq", "in"):
                types.update(test.value if isinstance(test.value, tuple) else (test.value,))
        for test in tests:
            if test.path.startswith("props.") and test.op in ("eq", "in"):
                values = test.value if isinstance(test.value, tuple) else (test.value,)
                for kind in types or EVENT_MIX:
                    known = hints.setdefault(kind, {}).setdefault(test.path[6:], {})
                    known.update(dict.fromkeys(values))
    return {kind: {path: tuple(v) for path, v in paths.items()} for kind, paths in hints.items()}


def _tests(cond: Condition) -> Iterable[Test]:
    if isinstance(cond, Test):
        yield cond
    elif isinstance(cond, Not):
        yield from _tests(cond.item)
    else:
        for item in cond.items:
            yield from _tests(item)


def _put(props: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = props
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


class Workload:
    """Deterministic events and contact states for one ruleset."""

    def __init__(self, rules: Rules, seed: int):
        self.rng = random.Random(seed)
        self.vocab = rules.vocab
        self.hints = _hints(rules)
        self.counters = tuple(dict.fromkeys((*COUNTERS, *rules.compiled.plan.counters)))
        self.kinds = tuple(EVENT_MIX)
        self.weights = tuple(EVENT_MIX.values())

    def template(self) -> tuple[str, str, dict[str, Any]]:
        """(type, source, properties) of one event."""
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        props = _properties(rng, kind)
        for path, values in self.hints.get(kind, {}).items():
            if rng.random() < 0.25:
                _put(props, path, rng.choice(values))
        source = rng.choice(SOURCES.get(kind, ("standard",)))
        return kind, source, props

    def state(self, email: str) -> ContactState:
        rng, vocab = self.rng, self.vocab
        stages = (None, *vocab.stages)
        weights = [10] + [max(2, 26 - 4 * i) for i in range(len(vocab.stages))]
        stage = rng.choices(stages, weights)[0]
        status = None
        if vocab.rank(stage) >= vocab.rank(STATUS_STAGE):
            status = rng.choice(vocab.statuses)
        counters = {c: rng.choice((0, 1, 2, 3, 5, 8)) for c in self.counters if rng.random() < 0.6}
        return ContactState(email, stage, status, counters)

    def pairs(self, events: int, contacts: int) -> list[tuple[BehaviorEvent, ContactState]]:
        states = [self.state(f"person{i:06d}@company{i % 613}.example") for i in range(contacts)]
        out = []
        for i in range(events):
            state = self.rng.choice(states)
            kind, source, props = self.template()
            event = BehaviorEvent(
                f"evt-{i}", kind, state.email, BASE_TIME + timedelta(seconds=i), source, props
            )
            out.append((event, state))
        return out


# --- The rules: the shipped file, its stand-in, and 200 generated rules ---------------------

FALLBACK_RULES = """\
# Stand-in for rules.yaml while it does not exist yet: a typical B2B playbook.
version: 1
events: [trial_started, revisit_due]
rules:
  - name: newsletter-makes-subscriber
    when: {event: form_submitted, form: newsletter, contact.stage: {before: subscriber}}
    then: {promote: subscriber}
  - name: any-other-form-makes-lead
    when:
      event: form_submitted
      not: {form: newsletter}
      contact.stage: {before: lead}
    then: {promote: lead}
  - name: demo-request-makes-mql
    when:
      event: form_submitted
      form: [demo-request, contact-sales, pricing-inquiry]
      contact.stage: {before: marketing_qualified_lead}
    then: {promote: marketing_qualified_lead}
  - name: big-company-form-makes-mql
    when:
      event: form_submitted
      fields.employees: {gte: 200}
      contact.stage: {before: marketing_qualified_lead}
    then: {promote: marketing_qualified_lead}
  - name: download-makes-lead
    when: {event: content_downloaded, contact.stage: {before: lead}}
    then: [{promote: lead}, {increment: content_downloads}]
  - name: count-downloads
    when: {event: content_downloaded, contact.stage: {at_least: lead}}
    then: {increment: content_downloads}
  - name: count-pricing-views
    when: {event: page_viewed, url: {matches: '/pricing(/|$)'}}
    then: {increment: pricing_views}
  - name: engaged-lead-makes-mql
    when:
      event: [page_viewed, content_downloaded, webinar_attended]
      contact.stage: {at_least: lead, before: marketing_qualified_lead}
      any:
        - contact.counters.pricing_views: {gte: 3}
        - contact.counters.content_downloads: {gte: 3}
    then: {promote: marketing_qualified_lead}
  - name: webinar-attendee-makes-lead
    when: {event: webinar_attended, contact.stage: {before: lead}}
    then: {promote: lead}
  - name: meeting-makes-sql
    when:
      event: meeting_booked
      contact.stage: {before: sales_qualified_lead}
      not: {contact.status: unqualified}
    then: [{promote: sales_qualified_lead}, {increment: meetings_booked}]
  - name: outreach-counts-attempts
    when: {event: email_sent, contact.stage: sales_qualified_lead}
    then: [{increment: emails_since_reply}, {increment: contact_attempts}]
  - name: first-outreach
    when:
      event: [email_sent, call_logged]
      contact.stage: sales_qualified_lead
      contact.status: new
    then: {set_status: attempted_to_contact}
  - name: unanswered-call
    when:
      event: call_logged
      outcome: [no_answer, left_voicemail, busy]
      contact.stage: sales_qualified_lead
    then: {increment: contact_attempts}
  - name: call-connected
    when: {event: call_logged, outcome: connected, contact.stage: sales_qualified_lead}
    then: [{set_status: connected}, {reset: contact_attempts}]
  - name: reply-connects
    when:
      event: email_replied
      contact.stage: sales_qualified_lead
      contact.status: [new, attempted_to_contact]
      not: {subject: {contains: unsubscribe}}
    then: [{set_status: connected}, {reset: emails_since_reply}]
  - name: unsubscribe-reply-unqualifies
    when:
      event: email_replied
      subject: {contains: unsubscribe}
      contact.stage: sales_qualified_lead
    then: {set_status: unqualified}
  - name: recycle-after-five-attempts
    when:
      event: [call_logged, email_sent]
      contact.stage: sales_qualified_lead
      contact.status: attempted_to_contact
      contact.counters.contact_attempts: {gte: 5}
    then: [{set_status: bad_timing}, {schedule: {event: revisit_due, after: 90d}}]
  - name: revisit-bad-timing
    when: {event: revisit_due, contact.stage: sales_qualified_lead, contact.status: bad_timing}
    then: {set_status: future_opportunity}
  - name: deal-makes-opportunity
    when: {event: [deal_created, trial_started], contact.stage: {before: opportunity}}
    then: {promote: opportunity}
  - name: won-deal-makes-customer
    when: {event: deal_won, contact.stage: {before: customer}}
    then: {promote: customer}
  - name: big-deal-flags-account
    when: {event: deal_won, amount: {gte: 50000}}
    then: {increment: {counter: engagement_score, by: 10}}
"""


def shipped_rules() -> tuple[Rules, str]:
    """rules.yaml when it exists and loads, else the stand-in; and a note saying which."""
    if SHIPPED.exists():
        try:
            return load(SHIPPED), "`rules.yaml` ({n} rules, version {version})"
        except RulesError as exc:
            why = f"rules.yaml did not load ({len(exc.problems)} error(s); {exc.problems[0]})"
            return from_text(FALLBACK_RULES, "fallback"), f"the built-in stand-in: {why}"
    return (
        from_text(FALLBACK_RULES, "fallback"),
        "the built-in {n}-rule stand-in playbook (rules.yaml did not exist yet)",
    )


def _generated_rule(i: int, rng: random.Random) -> dict[str, Any]:
    """One of 24 rule shapes, with varied parameters. Every rule is valid and lint-clean.

    Like a large real playbook, most rules are about one campaign (a form, an asset, a page, a
    webinar), so an event fires about one rule, not every rule of its type.
    """
    sql, mql = STATUS_STAGE, "marketing_qualified_lead"
    pick = rng.choice

    def some(values: Sequence, most: int = 2) -> Any:
        chosen = rng.sample(list(values), rng.randint(1, min(most, len(values))))
        return chosen[0] if len(chosen) == 1 else chosen

    def promote(target: str, **when: Any) -> tuple[dict, Any]:
        return {**when, "contact.stage": {"before": target}}, {"promote": target}

    shape = i % 24
    n = rng.randint(1, 8)
    feature = pick(FEATURES)
    if shape == 0:
        when, then = promote(
            pick(("lead", mql, sql)), event="form_submitted", form=some(FORMS + LANDING_FORMS)
        )
    elif shape == 1:
        when, then = promote(
            mql,
            event="form_submitted",
            form=pick(LANDING_FORMS),
            **{"fields.company_size": some(SIZES)},
        )
    elif shape == 2:
        when, then = promote(
            mql,
            event="form_submitted",
            form=some(LANDING_FORMS),
            **{"fields.employees": {pick(("gte", "gt")): pick((50, 200, 1000))}},
        )
    elif shape == 3:
        pattern = pick(
            (
                r"/pricing(/|$)",
                r"/compare/[a-z-]+$",
                r"^https://www\.example\.com/docs/",
                r"/customers/\w+",
                r"/blog/20\d\d/",
                f"{feature}(/|$)",
                f"{feature}$",
            )
        )
        when = {"event": "page_viewed", "url": {"matches": pattern}}
        then = {"increment": "pricing_views"}
    elif shape == 4:
        when = {"event": "page_viewed", "url": {"contains": feature}}
        then = {"increment": {"counter": "engagement_score", "by": rng.randint(1, 3)}}
    elif shape == 5:
        when, then = promote(
            mql,
            event="page_viewed",
            url={"contains": feature},
            **{"contact.counters.pricing_views": {"gte": n}},
        )
    elif shape == 6:
        when = {"event": "content_downloaded", "asset": some(ASSETS)}
        then = {"increment": "content_downloads"}
    elif shape == 7:
        when, then = promote(
            "lead",
            event="content_downloaded",
            asset=pick(ASSETS),
            **{"contact.counters.content_downloads": {"gte": n}},
        )
    elif shape == 8:
        when = {
            "event": "email_replied",
            "contact.stage": sql,
            "mailbox": f"rep{i}@example.com",
            "contact.status": some(("new", "attempted_to_contact", "bad_timing")),
        }
        then = [{"set_status": "connected"}, {"reset": "emails_since_reply"}]
    elif shape == 9:
        when = {
            "event": "call_logged",
            "outcome": pick(OUTCOMES),
            "contact.stage": sql,
            "contact.status": pick(("new", "attempted_to_contact")),
        }
        then = [
            {"set_status": pick(("attempted_to_contact", "connected"))},
            {"increment": "contact_attempts"},
        ]
    elif shape == 10:
        when = {
            "event": ["call_logged", "email_sent"],
            "contact.stage": sql,
            "contact.status": "attempted_to_contact",
            "contact.counters.contact_attempts": {"gte": n},
        }
        then = [
            {"set_status": "bad_timing"},
            {"schedule": {"event": "revisit_due", "after": f"{pick((30, 60, 90))}d"}},
        ]
    elif shape == 11:
        when, then = promote(
            sql,
            event="meeting_booked",
            meeting_type=pick(MEETING_TYPES),
            organizer=f"rep{i}@example.com",
            **{"not": {"contact.status": "unqualified"}},
        )
    elif shape == 12:
        when, then = promote(
            "customer",
            event="deal_won",
            source=pick(("hubspot", "salesforce")),
            amount={"gte": pick((1000, 10_000, 50_000))},
        )
    elif shape == 13:
        when, then = promote(
            "opportunity",
            event=["deal_created", "deal_stage_changed"],
            deal_stage=pick(DEAL_STAGES),
        )
    elif shape == 14:
        subject = pick(("Intro", "Following up"))
        when = {"event": "email_sent", "contact.stage": sql, "subject": subject}
        then = {"increment": "emails_since_reply"}
    elif shape == 15:
        when = {"event": "webinar_attended", "webinar": pick(WEBINARS)}
        then = {"increment": {"counter": "engagement_score", "by": 2}}
    elif shape == 16:
        when = {
            "any": [
                {"event": "form_submitted", "form": pick(LANDING_FORMS)},
                {
                    "event": "meeting_booked",
                    "meeting_type": pick(MEETING_TYPES),
                    "organizer": f"rep{i}@example.com",
                },
            ],
            "contact.stage": {"before": mql},
        }
        then = {"promote": mql}
    elif shape == 17:
        when, then = promote(
            "lead",
            event="form_submitted",
            **{
                "fields.role": pick(ROLES),
                "form_name": {"contains": pick(("Landing 1", "Landing 2"))},
                "not": {"form": some(("newsletter", "ebook-signup", "free-trial"))},
            },
        )
    elif shape == 18:
        when, then = promote(
            "lead",
            event="form_submitted",
            source=pick(SOURCES["form_submitted"]),
            form=pick(LANDING_FORMS),
            page_url={"exists": True},
        )
    elif shape == 19:
        when = {
            "event": "crm_status_changed",
            "value": pick(("connected", "unqualified")),
            "contact.stage": sql,
        }
        then = {"set_status": when["value"]}
    elif shape == 20:
        when = {
            "event": ["page_viewed", "webinar_attended"],
            "url": {"contains": feature},
            "contact.counters.engagement_score": {"gte": n},
            "contact.stage": {"at_least": "lead", "before": mql},
        }
        then = {"promote": mql}
    elif shape == 21:
        when, then = promote(
            pick(("opportunity", "customer")),
            event="trial_started",
            plan=pick(PLANS),
            source=pick(("standard", "hubspot")),
        )
    elif shape == 22:
        when = {"event": "revisit_due", "contact.stage": sql, "contact.status": "bad_timing"}
        then = {"set_status": "future_opportunity"}
    else:
        when = {
            "event": "email_replied",
            "contact.stage": sql,
            "subject": {"contains": pick(("unsubscribe", "not interested"))},
            "not": {"mailbox": {"matches": r"^noreply@"}},
        }
        then = {"set_status": "unqualified"}
    return {"name": f"rule-{i:03d}-shape-{shape:02d}", "when": when, "then": then}


def generated_rules_text(count: int = 200, seed: int = 200) -> str:
    """A rules file of `count` varied rules (event types, property equality and lists, numbers,
    counters, stage ranges, `any:`, `not:`, `matches:`, `contains:`, `exists:`, every action)."""
    rng = random.Random(seed)
    doc = {
        "version": 1,
        "events": list(CUSTOM_EVENTS),
        "rules": [_generated_rule(i, rng) for i in range(count)],
    }
    return yaml.safe_dump(doc, sort_keys=False, width=100)


# --- The measurements -----------------------------------------------------------------------


def _ours(rules: Rules, pairs: Sequence[tuple[BehaviorEvent, ContactState]]) -> None:
    fired = rules.fired
    for event, state in pairs:
        fired(event, state)


def _bare(handle: int, facts: Sequence[dict[str, Any]]) -> None:
    """The fixed-session durable loop, nothing else: json.dumps, assert, drain, retract."""
    dumps = json.dumps
    assert_fact, retract_fact = durable.assert_fact, durable.retract_fact
    start, complete = durable.start_action_for_state, durable.complete_and_start_action
    for fact in facts:
        text = dumps(fact)
        code, offset = assert_fact(handle, text)
        if code == 0:
            result = start(handle, offset)
            while result:
                result = complete(handle, offset)
        retract_fact(handle, text)


def _steps(rules: Rules, pairs: Sequence[tuple[BehaviorEvent, ContactState]]) -> None:
    for event, state in pairs:
        step(rules, state, event)


def _facts_only(build: FactBuilder, pairs: Sequence[tuple[BehaviorEvent, ContactState]]) -> None:
    dumps = json.dumps
    for i, (event, state) in enumerate(pairs):
        dumps(build(event, state, f"x{i}"))


def _bare_names(handle: int, fact: dict[str, Any], order: dict[str, int]) -> list[str]:
    """What the bare loop says fired (untimed), to check both paths agree."""
    text = json.dumps(fact)
    names: list[str] = []
    code, offset = durable.assert_fact(handle, text)
    if code == 0:
        result = durable.start_action_for_state(handle, offset)
        while result:
            names.extend(json.loads(result[1] if isinstance(result, tuple) else result))
            result = durable.complete_and_start_action(handle, offset)
    durable.retract_fact(handle, text)
    return sorted(set(names), key=order.__getitem__)


@dataclass
class Subject:
    """One ruleset under test with its events, pre-built facts and bare durable handle."""

    label: str
    rules: Rules
    pairs: list[tuple[BehaviorEvent, ContactState]]
    facts: list[dict[str, Any]]
    build: FactBuilder
    handle: int
    best: dict[str, float]
    ratios: list[float]

    @classmethod
    def make(cls, label: str, rules: Rules, size: Size, seed: int) -> Subject:
        pairs = Workload(rules, seed).pairs(size.events, size.contacts)
        compiled = rules.compiled
        build = FactBuilder(compiled, rules.vocab)  # what the evaluator uses; == build_fact
        facts = [build(event, state, f"b{i}") for i, (event, state) in enumerate(pairs)]
        definition = json.dumps(compiled.definition[compiled.name])
        handle = durable.create_ruleset(compiled.name, definition)
        return cls(label, rules, pairs, facts, build, handle, {}, [])

    def measure(self, kind: str) -> float:
        loop = {
            "ours": lambda: _ours(self.rules, self.pairs),
            "bare": lambda: _bare(self.handle, self.facts),
            "facts": lambda: _facts_only(self.build, self.pairs),
            "step": lambda: _steps(self.rules, self.pairs),
        }[kind]
        rate = len(self.pairs) / timed(loop)
        self.best[kind] = max(self.best.get(kind, 0.0), rate)
        return rate

    def agreement(self) -> tuple[int, float, float]:
        """(events where Rules.fired and the bare loop disagree, share firing, mean rules fired)."""
        order = {name: i for i, name in enumerate(self.rules.compiled.rule_names)}
        mismatches = fired_any = fired_total = 0
        for (event, state), fact in zip(self.pairs, self.facts, strict=True):
            ours = self.rules.fired(event, state)
            mismatches += ours != _bare_names(self.handle, fact, order)
            fired_any += bool(ours)
            fired_total += len(ours)
        return mismatches, fired_any / len(self.pairs), fired_total / len(self.pairs)


KINDS = ("ours", "bare", "facts", "step")


def throughput(subjects: Sequence[Subject], rounds: int, log: list[str]) -> None:
    """Interleaved rounds; the order rotates from round to round so no kind always runs first."""
    for _ in range(2):  # warm-up: evaluator creation, caches, allocator
        for subject in subjects:
            _ours(subject.rules, subject.pairs[:2000])
            _bare(subject.handle, subject.facts[:2000])
    for r in range(rounds):
        kinds = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
        for subject in subjects:
            rates = {kind: subject.measure(kind) for kind in kinds}
            subject.ratios.append(rates["ours"] / rates["bare"])
            log.append(
                f"round {r + 1} {subject.label}: ours {rates['ours']:,.0f}/s, bare "
                f"{rates['bare']:,.0f}/s, ratio {subject.ratios[-1]:.2f}, facts alone "
                f"{rates['facts']:,.0f}/s, step {rates['step']:,.0f}/s"
            )
            print(f"  {log[-1]}", flush=True)


def memory(rules: Rules, size: Size, seed: int) -> dict[str, float]:
    """RSS growth over `memory_evaluations` steps (rules + guardrails) over distinct contacts.

    The contacts' states live in a list here (Redis holds them in production); all of them exist
    before the first reading, so what grows is the engine, plus the states' own small drift.
    """
    workload = Workload(rules, seed)
    templates = [workload.template() for _ in range(4096)]
    emails = [f"person{i:06d}@company{i % 613}.example" for i in range(size.memory_contacts)]
    states = [workload.state(email) for email in emails]
    rng = random.Random(seed + 1)
    readings: list[float] = []

    def run(start: int, stop: int) -> None:
        for k in range(start, stop):
            i = rng.randrange(len(states))
            kind, source, props = templates[k & 4095]
            event = BehaviorEvent(
                f"mem-{k}", kind, emails[i], BASE_TIME + timedelta(seconds=k), source, props
            )
            states[i] = step(rules, states[i], event).after

    run(0, size.warmup)
    gc.collect()
    before = rss_mib()
    total = size.memory_evaluations
    checkpoints = [size.warmup + (total - size.warmup) * j // 10 for j in range(11)]
    started = time.perf_counter()
    for a, b in itertools.pairwise(checkpoints):
        run(a, b)
        readings.append(rss_mib())
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_mib()
    return {
        "before": before,
        "after": after,
        "growth": after - before,
        "peak": max(readings),
        "rate": (total - size.warmup) / elapsed,
        "trajectory": readings,
    }


def run(quick: bool = False) -> Report:
    size = QUICK if quick else FULL
    shipped, which = shipped_rules()
    which = which.format(n=len(shipped.ruleset.rules), version=shipped.version)
    generated = from_text(generated_rules_text(), "generated-200.yaml")
    subjects = [
        Subject.make(f"shipped ({len(shipped.ruleset.rules)} rules)", shipped, size, seed=1),
        Subject.make("200 rules", generated, size, seed=2),
    ]
    print(f"rules evaluation: {size.events:,} events per pass, best of {size.rounds}", flush=True)
    log: list[str] = []
    throughput(subjects, size.rounds, log)
    print(
        f"  memory: {size.memory_evaluations:,} evaluations over "
        f"{size.memory_contacts:,} contacts ...",
        flush=True,
    )
    mem = memory(shipped, size, seed=3)
    return _report(size, which, subjects, mem, log)


def _report(size: Size, which: str, subjects: list[Subject], mem: dict, log: list[str]) -> Report:
    shipped, generated = subjects
    report = Report(
        TITLE,
        f"`Rules.fired(event, state)` (fact building included) against the bare durable-rules "
        f"loop on the same compiled ruleset, in the same run: {size.events:,} pre-generated "
        f"events over {size.contacts:,} contacts per pass, best of {size.rounds} interleaved "
        f"rounds. Shipped rules: {which}. Source: `bench/rules_eval.py`.",
    )
    for key, subject in (("shipped", shipped), ("generated", generated)):
        ours, bare = subject.best["ours"], subject.best["bare"]
        target = f"≥ {TARGET_PER_SECOND:,}/s" if key == "generated" else ""
        met = ours >= TARGET_PER_SECOND if key == "generated" else None
        report.add(
            f"{key}_per_second", Row(f"{subject.label}: Rules.fired", ours, "events/s", target, met)
        )
        report.add(
            f"{key}_bare_per_second", Row(f"{subject.label}: bare durable loop", bare, "events/s")
        )
        report.add(
            f"{key}_ratio",
            Row(
                f"{subject.label}: ours ÷ bare",
                ours / bare,
                "x",
                f"≥ {TARGET_RATIO}x",
                ours / bare >= TARGET_RATIO,
                2,
            ),
        )
        report.add(
            f"{key}_facts_per_second",
            Row(
                f"{subject.label}: fact building + json.dumps alone",
                subject.best["facts"],
                "events/s",
            ),
        )
        report.add(
            f"{key}_step_per_second",
            Row(
                f"{subject.label}: engine.process.step (rules + guardrails)",
                subject.best["step"],
                "events/s",
            ),
        )
    growth = mem["growth"]
    report.add(
        "memory_growth_mib",
        Row(
            f"RSS growth, {size.memory_evaluations:,} evaluations over {size.memory_contacts:,} "
            "contacts",
            growth,
            "MiB",
            f"< {TARGET_GROWTH_MIB:.0f} MiB",
            growth < TARGET_GROWTH_MIB,
            1,
        ),
    )
    report.add(
        "memory_per_second",
        Row("same run: BehaviorEvent(...) + engine.process.step", mem["rate"], "events/s"),
    )
    for key, subject in (("shipped", shipped), ("generated", generated)):
        mismatches, share, mean = subject.agreement()
        report.numbers[f"{key}_mismatches"] = mismatches
        report.notes.append(
            f"{subject.label}: {share:.0%} of events fire at least one rule, {mean:.2f} rules "
            f"fired per event; Rules.fired and the bare loop disagree on {mismatches} of "
            f"{len(subject.pairs):,} events."
        )
    report.notes.append(
        "Per-round ratio (ours ÷ bare): "
        + "; ".join(f"{s.label} " + ", ".join(f"{r:.2f}" for r in s.ratios) for s in subjects)
        + "."
    )
    for subject in subjects:
        ours, facts, bare = (1e6 / subject.best[k] for k in ("ours", "facts", "bare"))
        report.notes.append(
            f"Where the time goes, {subject.label}: {ours:.1f} µs per Rules.fired; "
            f"fact building + json.dumps alone {facts:.1f} µs ({facts / ours:.0%}); the bare "
            f"durable loop, json.dumps included, {bare:.1f} µs ({bare / ours:.0%})."
        )
    report.notes.append(
        f"Memory: RSS {mem['before']:.0f} MiB after {size.warmup:,} warm-up evaluations, "
        f"{mem['after']:.0f} MiB at the end, peak {mem['peak']:.0f} MiB; at each tenth: "
        + ", ".join(f"{r:.0f}" for r in mem["trajectory"])
        + ". The contacts' states are held in a list by the benchmark (Redis holds them in "
        "production), all created before the first reading."
    )
    report.notes.append(
        "The bare loop is `create_ruleset` on the same definition, then per event json.dumps of a "
        "fact built before timing, assert_fact, drain start_action_for_state / "
        "complete_and_start_action, retract_fact. It does not read the action payloads, which "
        "Rules.fired must do to learn the rule names."
    )
    report.numbers["log"] = log
    return report
