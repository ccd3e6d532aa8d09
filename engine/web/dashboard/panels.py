"""What the dashboard's pages show, read from the store (and, for the rate-limit budget, the CRM
clients' shared limiters). No Flask here except the per-app limiter cache."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from flask import current_app

from connectors.hubspot.client import build_client as build_hubspot
from connectors.salesforce.client import build_client as build_salesforce
from engine.errors import EngineError
from engine.model import parse_time
from engine.store import NO_STAGE, Contact, Store, unavailable_as_error
from engine.web.api import funnel_report
from engine.web.services import Services

PRESETS = {"all": None, "7d": 7, "30d": 30, "90d": 90, "365d": 365}
PERIOD_CAP = 50_000
"""A period's funnel reads each contact first seen in it; beyond this many it says so."""
"""The store's sorted set of emails by first-seen time (the time of their first event)."""
CRM_BUILDERS = {"hubspot": build_hubspot, "salesforce": build_salesforce}


# --- the funnel over a period --------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Which contacts a funnel counts: those first seen (their first event) in [since, until)."""

    key: str
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_args(cls, args: Any, now: datetime) -> tuple[Period, str | None]:
        """The period asked for in the query string, and what was wrong with it, if anything."""
        key = args.get("period", "all")
        if key in PRESETS:
            days = PRESETS[key]
            return cls(key, now - timedelta(days=days) if days else None), None
        if key != "custom":
            return cls("all"), f"unknown period {key!r}; showing all time"
        try:
            since, until = _day(args.get("since")), _day(args.get("until"))
        except ValueError:
            return cls("all"), "dates are written YYYY-MM-DD; showing all time"
        return cls("custom", since, until + timedelta(days=1) if until else None), None

    @property
    def all_time(self) -> bool:
        return self.since is None and self.until is None


def _day(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) if text else None


def period_report(svc: Services, period: Period) -> dict[str, Any]:
    """api.funnel_report: all time from the store's counters, or over the contacts first seen in
    the period (each read, at most PERIOD_CAP of them)."""
    if period.all_time:
        return {**funnel_report(svc), "capped": False}
    counts = PeriodCounts(svc.store, period)
    report = funnel_report(SimpleNamespace(rules=svc.rules, store=counts))  # type: ignore[arg-type]
    return {**report, "capped": counts.capped}


class PeriodCounts:
    """Store.funnel_counts over one period, so api.funnel_report shapes both reports alike."""

    def __init__(self, store: Store, period: Period):
        self.store, self.period, self.capped = store, period, False

    def funnel_counts(self, stages: Any) -> dict[str, Any]:
        current, reached, statuses = Counter[str](), Counter[str](), Counter[str]()
        hours: dict[str, list[float]] = defaultdict(list)
        for item in self._contacts():
            current[item.state.stage or NO_STAGE] += 1
            if item.state.status:
                statuses[item.state.status] += 1
            for stage, at in item.reached.items():
                reached[stage] += 1
                if item.first_seen_at:
                    spent = (parse_time(at) - item.first_seen_at).total_seconds()
                    hours[stage].append(max(0.0, spent / 3600))
        return {
            "total_contacts": sum(current.values()),
            "current": dict(current),
            "reached": dict(reached),
            "statuses": dict(statuses),
            "fired": {},  # rule fires are counted, not kept per contact
            "median_hours": {s: round(statistics.median(v), 2) for s, v in hours.items()},
        }

    def _contacts(self) -> list[Contact]:
        since, until = self.period.since, self.period.until
        emails = self.store.emails_first_seen(
            since.timestamp() if since else None,
            until.timestamp() if until else None,
            most=PERIOD_CAP + 1,
        )
        self.capped = len(emails) > PERIOD_CAP
        found: list[Contact] = []
        with unavailable_as_error():
            for start in range(0, min(len(emails), PERIOD_CAP), 1000):
                loaded = self.store.load(emails[start : min(start + 1000, PERIOD_CAP)])
                found.extend(item for item in loaded.values() if not item.new)
        return found


# --- contacts ------------------------------------------------------------------------------------


def recent_contacts(store: Store, count: int = 20) -> list[dict[str, Any]]:
    """The contacts first seen last (by the time of their first event)."""
    return _rows(store, store.latest_emails(count))


def search_contacts(store: Store, query: str, most: int = 25) -> list[dict[str, Any]]:
    """Contacts whose email contains `query`."""
    return _rows(store, sorted(store.emails_containing(query, most)))


def _rows(store: Store, emails: list[str]) -> list[dict[str, Any]]:
    with unavailable_as_error():
        loaded = store.load(emails)
    return [_row(loaded[e]) for e in emails if not loaded[e].new]


def _row(item: Contact) -> dict[str, Any]:
    first = item.first_seen_at.isoformat() if item.first_seen_at else None
    state = item.state
    return {
        "email": state.email,
        "stage": state.stage,
        "status": state.status,
        "first_seen_at": first,
    }


# --- sync health ---------------------------------------------------------------------------------


def sync_health(svc: Services, crm: str, counts: dict[str, int]) -> dict[str, Any]:
    """One CRM target: pending pushes, pushes done, dead letters with the CRM's error, the
    rate-limit budget in use and (Salesforce) the org's API usage as the workers last saw it."""
    store = svc.store
    return {
        "crm": crm,
        "pending": store.dirty_count(crm),
        "next_due": store.next_retry(crm),
        "synced": counts.get(f"sync|{crm}|synced", 0),
        "retries": counts.get(f"sync|{crm}|retry", 0),
        "dead_letters": store.dead_letters(crm),
        "budget": _budget(svc, crm),
        "api_usage": store.api_usage(crm) or None,
    }


def _budget(svc: Services, crm: str) -> dict[str, Any] | None:
    """Requests sent within the current window of the account's shared limiter."""
    rules = svc.rules.current()
    cache = current_app.extensions.setdefault("dashboard.limiters", {})
    key = (crm, rules.version)
    if key not in cache:
        cache[key] = _limiter_for(svc, crm, rules)
    limiter = cache[key]
    if limiter is None or isinstance(limiter, str):
        return {"error": limiter} if limiter else None
    window = round(limiter.window_ms / 1000, 1)
    return {"in_use": limiter.in_use(), "limit": limiter.limit, "window_s": window}


def _limiter_for(svc: Services, crm: str, rules: Any) -> Any:
    """The limiter the workers share, found through the CRM's own client (built, never called):
    the limit and account key stay defined in one place, the connector."""
    builder = CRM_BUILDERS.get(crm)
    if builder is None:
        return None
    try:
        client = builder(svc.settings, svc.redis, rules.ruleset.crm.get(crm), vocab=rules.vocab)
    except (EngineError, ValueError) as exc:
        return f"not configured: {getattr(exc, 'detail', exc)}"
    found = getattr(client, "limiter", None) or getattr(
        getattr(client, "session", None), "limiter", None
    )
    return getattr(found, "inner", found)  # Salesforce wraps it (GuardedLimiter)


# --- deliveries ----------------------------------------------------------------------------------


def quarantined_row(item: dict[str, Any]) -> dict[str, Any]:
    body = item.get("body") or b""
    raw = body if isinstance(body, bytes) else str(body).encode()
    return {**item, "size": len(raw), "preview": raw[:600].decode("utf-8", "replace")}


def texts(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
