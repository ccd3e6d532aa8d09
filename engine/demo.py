"""`lifecycle demo`: the seed's story (rules.test.yaml) for six people, played against the running
service through real HTTP, then what happened to each, read back from the explain view.

Each event goes out as its own delivery: a signed Standard Webhooks POST to /webhooks/standard
when STANDARD_WEBHOOK_SECRET is set, else POST /api/events with the API token (API_TOKEN, or the
token `make run` generated into var/api_token). Event times are spread over the last four months,
so the funnel's median time to each stage means something, and the "not now" lead's 90-day
revisit is already due: the worker's scheduler fires it within a second or two.

Event ids are fixed, so running the demo again changes nothing (the service answers
"duplicates") and shows the same contacts as they are.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.errors import InvalidEvent
from engine.lifecycle import scheduled_event_id
from engine.model import format_time, parse_time

DOMAIN = "demo.example.com"


@dataclass(frozen=True)
class Beat:
    """One event of a story: what happened, how many days before the demo ran."""

    days_ago: float
    type: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Person:
    key: str
    name: str
    story: str
    stage: str
    status: str | None
    """where the shipped rules take this person (the demo says when the service disagrees)"""
    beats: tuple[Beat, ...]

    @property
    def email(self) -> str:
        return f"{self.key}@{DOMAIN}"

    def events(self, now: datetime) -> list[dict[str, Any]]:
        """The normalized events of this story, as the service receives them."""
        return [
            {
                "id": f"demo-{self.key}-{n:02d}",
                "type": beat.type,
                "email": self.email,
                "occurred_at": format_time(now - timedelta(days=beat.days_ago)),
                "properties": dict(beat.properties),
            }
            for n, beat in enumerate(self.beats, start=1)
        ]


def _form(form: str, first: str, company: str, **more: Any) -> dict[str, Any]:
    return {"form": form, "fields": {"first_name": first, "company": company, **more}}


PEOPLE: tuple[Person, ...] = (
    Person(
        "ava",
        "Ava Reyes",
        "downloads a guide, looks at pricing twice, meets sales, buys, then refers a friend",
        "evangelist",
        "open_deal",
        (
            Beat(
                75, "content_downloaded", {"asset": "state-of-solar-2026.pdf", "first_name": "Ava"}
            ),
            Beat(73, "page_viewed", {"url": "https://example.com/pricing"}),
            Beat(72, "page_viewed", {"url": "https://example.com/pricing?plan=pro"}),
            Beat(71.9, "meeting_booked", {"meeting_type": "Intro call"}),
            Beat(71.8, "email_sent", {"subject": "Looking forward to our call"}),
            Beat(70, "call_logged", {"outcome": "connected"}),
            Beat(68, "deal_created", {"deal_id": "demo-9001", "amount": 12000}),
            Beat(60, "deal_stage_changed", {"deal_id": "demo-9001", "deal_stage": "contractsent"}),
            Beat(45, "deal_won", {"deal_id": "demo-9001", "amount": 12000}),
            Beat(
                5,
                "form_submitted",
                _form("referral", "Ava", "Sunrise Solar", friend_email="bo@example.com"),
            ),
        ),
    ),
    Person(
        "ben",
        "Ben Okafor",
        "asks for a demo, takes the call, signs the contract",
        "customer",
        "open_deal",
        (
            Beat(40, "form_submitted", _form("demo-request", "Ben", "Globex Energy")),
            Beat(39, "meeting_booked", {"meeting_type": "Demo"}),
            Beat(38, "call_logged", {"outcome": "connected"}),
            Beat(35, "deal_created", {"deal_id": "demo-9002", "amount": 30000}),
            Beat(25, "deal_stage_changed", {"deal_id": "demo-9002", "deal_stage": "contractsent"}),
            Beat(10, "deal_won", {"deal_id": "demo-9002", "amount": 30000}),
        ),
    ),
    Person(
        "cleo",
        "Cleo Martin",
        'meets sales, then replies "not right now": bad timing, a future opportunity 90 days on',
        "sales_qualified_lead",
        "future_opportunity",
        (
            Beat(120, "webinar_attended", {"webinar": "solar-101"}),
            Beat(100, "form_submitted", _form("contact-sales", "Cleo", "Initech")),
            Beat(99, "meeting_booked", {"meeting_type": "Intro call"}),
            Beat(98, "email_sent", {"subject": "Following up"}),
            Beat(
                95,
                "email_replied",
                {
                    "subject": "Re: Following up",
                    "text": "Thanks, but not right now. Maybe next quarter.",
                },
            ),
        ),
    ),
    Person(
        "dan",
        "Dan Kowalski",
        "reads a guide and asks for pricing: marketing qualified, sales has not met him yet",
        "marketing_qualified_lead",
        None,
        (
            Beat(20, "content_downloaded", {"asset": "buyers-guide.pdf"}),
            Beat(18, "form_submitted", _form("pricing-request", "Dan", "Umbrella Corp")),
        ),
    ),
    Person(
        "eve",
        "Eve Lindqvist",
        "books a meeting, then five calls and emails go unanswered: recycled as bad timing",
        "sales_qualified_lead",
        "bad_timing",
        (
            Beat(30, "form_submitted", _form("demo-request", "Eve", "Stark Storage")),
            Beat(29, "meeting_booked", {"meeting_type": "Demo"}),
            Beat(28, "email_sent", {"subject": "Before our demo"}),
            Beat(27, "call_logged", {"outcome": "no_answer"}),
            Beat(25, "call_logged", {"outcome": "left_voicemail"}),
            Beat(23, "email_sent", {"subject": "Still interested?"}),
            Beat(21, "call_logged", {"outcome": "busy"}),
        ),
    ),
    Person(
        "finn",
        "Finn Dubois",
        "reads the blog, then downloads a guide: a lead",
        "lead",
        None,
        (
            Beat(4, "page_viewed", {"url": "https://example.com/blog/2026/mql-vs-sql"}),
            Beat(2, "content_downloaded", {"asset": "roi-calculator.xlsx"}),
        ),
    ),
)


class DemoError(Exception):
    """The demo cannot go on (no service, no token, a refused request): a message for a person."""


# --- Where the service is and how to talk to it -------------------------------------------------


def find_token(api_token: str | None, var_dir: Path) -> str | None:
    """API_TOKEN, else the token `make run` generated into var/api_token (never creates one)."""
    if api_token:
        return api_token
    try:
        return (var_dir / "api_token").read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


def _call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None and not request.has_header("Content-type"):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, _json(response.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, _json(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DemoError(
            f"no lifecycle service answers at {_base(url)} ({reason}). Start it with `make run` "
            "in another terminal (or pass --url), then run `make demo` again."
        ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:300]


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _detail(reply: Reply) -> str:
    if isinstance(reply.body, dict):
        return str(reply.body.get("detail") or reply.body.get("error") or reply.body)
    return str(reply.body)


# --- The run ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    person: Person
    accepted: int = 0
    duplicates: int = 0
    view: dict[str, Any] | None = None
    waiting_for: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.view is not None and not self.waiting_for


def run(
    url: str,
    token: str | None,
    secret: str | None = None,
    *,
    timeout: float = 60.0,
    now: datetime | None = None,
    people: tuple[Person, ...] = PEOPLE,
    echo: Callable[[str], None] = print,
) -> list[Outcome]:
    """Send every story, wait (at most `timeout` seconds) until the service has processed them,
    print each contact. Raises DemoError when the service cannot be used."""
    url = url.rstrip("/")
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    health = _call("GET", f"{url}/healthz")
    if health.status != 200:
        raise DemoError(f"the service at {url} is not healthy ({health.status}): {_detail(health)}")
    if not token:
        raise DemoError(
            "no API token: set API_TOKEN to the service's token, or run the demo from the "
            "directory `make run` runs in (it reads var/api_token there)"
        )
    check = _call("GET", f"{url}/api/funnel", token=token)
    if check.status == 401:
        raise DemoError(f"the service refused the API token: {_detail(check)}")
    how = (
        "signed Standard Webhooks to /webhooks/standard"
        if secret
        else "POST /api/events with the API token"
    )
    echo(f"Playing the story of {len(people)} people against {url} ({how}).")
    outcomes = [Outcome(person) for person in people]
    for outcome in outcomes:
        _send(url, token, secret, outcome, now)
        sent = outcome.accepted + outcome.duplicates
        again = f", {outcome.duplicates} already there" if outcome.duplicates else ""
        echo(f"  {outcome.person.email:<28} {sent:>2} events sent, {outcome.accepted} new{again}")
    if all(o.accepted == 0 for o in outcomes):
        echo("Every event was already there: the demo ran before. The contacts as they are:")
    else:
        echo(f"Waiting for the service to process them (at most {timeout:.0f} s)...")
    _wait(url, token, outcomes, timeout)
    echo("")
    for outcome in outcomes:
        echo(describe(outcome))
    echo("")
    waiting = [o for o in outcomes if not o.done]
    if waiting:
        for outcome in waiting:
            echo(f"{outcome.person.email}: still waiting for {', '.join(outcome.waiting_for)}")
        echo(
            f"Not everything was processed within {timeout:.0f} s: is `lifecycle worker` running "
            "(`make run` starts it)? Its log says more."
        )
    else:
        echo(
            f"The funnel and these timelines are on the dashboard at {url}/ ; in a terminal: "
            "`lifecycle funnel`, `lifecycle contact ava@demo.example.com`."
        )
    return outcomes


def _send(url: str, token: str, secret: str | None, outcome: Outcome, now: datetime) -> None:
    from connectors.standard.inbound import signed_headers

    for event in outcome.person.events(now):
        body = json.dumps(event).encode()
        if secret:
            headers = signed_headers(secret, event["id"], body, datetime.now(UTC))
            reply = _call("POST", f"{url}/webhooks/standard", body=body, headers=headers)
        else:
            reply = _call("POST", f"{url}/api/events", token=token, body=body)
        if reply.status not in (200, 202) or not isinstance(reply.body, dict):
            where = "/webhooks/standard" if secret else "/api/events"
            hint = (
                " (is STANDARD_WEBHOOK_SECRET the same for the service and the demo?)"
                if secret and reply.status in (401, 404)
                else ""
            )
            raise DemoError(
                f"{where} answered {reply.status} for event {event['id']}: {_detail(reply)}{hint}"
            )
        outcome.accepted += int(reply.body.get("accepted", 0))
        outcome.duplicates += int(reply.body.get("duplicates", 0))


def _wait(url: str, token: str, outcomes: list[Outcome], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for outcome in outcomes:
            if not outcome.done:
                _look(url, token, outcome)
        if all(o.done for o in outcomes) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _look(url: str, token: str, outcome: Outcome) -> None:
    email = urllib.parse.quote(outcome.person.email)
    reply = _call("GET", f"{url}/api/contacts/{email}", token=token)
    if reply.status == 404:
        outcome.waiting_for = ["the contact to appear"]
        return
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise DemoError(f"GET /api/contacts/{email} answered {reply.status}: {_detail(reply)}")
    outcome.view = reply.body
    outcome.waiting_for = missing(reply.body, [e["id"] for e in outcome.person.events(_NOW0)])


_NOW0 = datetime(2000, 1, 1, tzinfo=UTC)
"""Any time: only the ids of a person's events are needed, and they do not depend on it."""


def missing(
    view: Mapping[str, Any], event_ids: list[str], now: datetime | None = None
) -> list[str]:
    """What the explain view does not show yet: events sent, delayed events already due, pushes."""
    now = now or datetime.now(UTC)
    timeline = view.get("timeline") or []
    seen = {entry["event_id"] for entry in timeline}
    waiting = [f"event {i}" for i in event_ids if i not in seen]
    for entry in timeline:
        for change in entry.get("changes", []):
            if change.get("field") != "schedule" or change.get("outcome") != "applied":
                continue
            kind, _, due = str(change.get("to", "")).partition(" due ")
            try:
                due_at = parse_time(due, "due")
            except InvalidEvent:
                continue
            delayed = scheduled_event_id(entry["event_id"], change["rule"], kind)
            if due_at <= now and delayed not in seen:
                waiting.append(f"the delayed {kind} (due {due})")
    for crm, sync in (view.get("sync") or {}).items():
        if sync.get("state") == "pending":
            waiting.append(f"the push to {crm}")
    return waiting


def describe(outcome: Outcome) -> str:
    """What happened to one person, from the explain view."""
    person, view = outcome.person, outcome.view
    lines = [f"{person.name} <{person.email}>: {person.story}"]
    if view is None:
        lines.append("  not processed yet")
        return "\n".join(lines)
    stage, status = view.get("stage"), view.get("status")
    expected = (person.stage, person.status)
    verdict = (
        "as the story goes"
        if (stage, status) == expected
        else f"the story expected {expected[0]}{f' / {expected[1]}' if expected[1] else ''}; "
        "the rules in force differ from the shipped ones"
    )
    lines.append(f"  stage {stage or '(none)'}, status {status or '-'}   ({verdict})")
    path, fired, refused, scheduled = [], [], 0, []
    timeline = view.get("timeline") or []
    seen = {entry["event_id"] for entry in timeline}
    for entry in timeline:
        for change in entry.get("changes", []):
            if change["rule"] not in fired:
                fired.append(change["rule"])
            if change["outcome"] == "refused":
                refused += 1
            if change["outcome"] != "applied":
                continue
            if change["field"] == "stage":
                path.append(f"{change['to']} ({entry['occurred_at'][:10]})")
            elif change["field"] == "schedule":
                kind, _, due = str(change["to"]).partition(" due ")
                delayed = scheduled_event_id(entry["event_id"], change["rule"], kind)
                state = "fired" if delayed in seen else "waiting"
                scheduled.append(f"{kind}, due {due} by {change['rule']} ({state})")
    events = len(timeline)
    lines.append(f"  journey: {' → '.join(path) or 'no stage yet'}")
    lines.append(f"  rules fired: {', '.join(fired) or 'none'}")
    extra = f"; {refused} change(s) refused by the guardrails" if refused else ""
    lines.append(f"  timeline: {events} event(s) processed{extra}")
    for item in scheduled:
        lines.append(f"  scheduled: {item}")
    for crm, sync in (view.get("sync") or {}).items():
        error = f", error: {sync['error']}" if sync.get("error") else ""
        pushed = sync.get("pushed") or {}
        holds = (
            f"; it holds stage {pushed.get('stage') or '-'}, status {pushed.get('status') or '-'}"
            if pushed
            else ""
        )
        lines.append(
            f"  {crm}: {sync.get('state')} (version {sync.get('synced_version')}{holds}{error})"
        )
    return "\n".join(lines)
