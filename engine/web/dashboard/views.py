"""The dashboard's blueprint: sign-in, the pages, the dead-letter retry. Every page but the
sign-in needs a signed-in session; every POST needs the session's CSRF token (access.py)."""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import Blueprint, Response, flash, redirect, render_template, request, session, url_for

from engine.errors import InvalidEvent
from engine.model import normalize_email, parse_time
from engine.pipeline import wake_sync_for
from engine.store import StoreUnavailable, unavailable_as_error
from engine.web.api import explain, funnel_report
from engine.web.dashboard import access, panels
from engine.web.services import services

log = logging.getLogger("engine.web.dashboard")

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/assets",
)
bp.record_once(lambda state: access.set_up(state.app))
PUBLIC = {"dashboard.login", "dashboard.static"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@bp.before_request
def _guard() -> Response | None:
    if request.endpoint in PUBLIC:
        return None
    if not access.signed_in():
        return access.to_login()
    if request.method == "POST" and not access.csrf_ok():
        detail = "The form expired or did not come from this dashboard. Reload the page and retry."
        return page("error.html", 403, title="Refused", detail=detail)
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    svc, target = services(), access.safe_next(request.values.get("next"))
    if not svc.api_token:
        return page("login.html", 503, disabled=True, next=target)
    if request.method == "GET":
        return redirect(target) if access.signed_in() else page("login.html", next=target)
    if not access.csrf_ok():
        return page("login.html", 400, next=target, error="The form expired; try again.")
    if not access.token_matches(request.form.get("token", "").strip(), svc.api_token):
        svc.store.count("rejected", "dashboard|bad_token")
        return page("login.html", 401, next=target, error="That is not the API token.")
    access.sign_in(svc.api_token)
    return redirect(target)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.get("/")
def funnel():
    svc = services()
    period, problem = panels.Period.from_args(request.args, svc.now())
    report = panels.period_report(svc, period)
    rows = report["stages"]
    chart = {
        "labels": [label(row["stage"]) for row in rows],
        "reached": [row["reached"] for row in rows],
        "current": [row["current"] for row in rows],
        "conversion": [row["conversion_from_previous"] for row in rows],
        "median_hours": [row["median_hours_to_reach"] for row in rows],
    }
    context = {"report": report, "chart": chart, "period": period, "problem": problem}
    return page("funnel.html", **context, presets=panels.PRESETS, cap=panels.PERIOD_CAP)


@bp.get("/contacts")
def contacts():
    svc, query = services(), request.args.get("q", "").strip()[:200]
    if not query:
        recent = panels.recent_contacts(svc.store)
        return page("contacts.html", query="", matches=recent, recent=True)
    try:
        email = normalize_email(query)
    except InvalidEvent:
        email = None
    if email and svc.store.contact(email) is not None:
        return redirect(url_for("dashboard.contact", email=email))
    found = panels.search_contacts(svc.store, query)
    return page("contacts.html", query=query, matches=found, recent=False)


@bp.get("/contacts/<path:email>")
def contact(email: str):
    """The explain view (api.explain): stage, status, sync state, the timeline with refusals."""
    svc = services()
    try:
        stored = svc.store.contact(normalize_email(email))
    except InvalidEvent:
        stored = None
    if stored is None:
        detail = f"No contact {email!r}: nothing with that email has been processed yet."
        return page("error.html", 404, title="No such contact", detail=detail)
    return page("contact.html", view=explain(svc, stored))


@bp.get("/rules")
def rules():
    svc = services()
    current, status = svc.rules.current(), svc.rules.status
    fired = funnel_report(svc)["rules"]
    rows = [(rule, fired.get(rule.name, {}).get("fired", 0)) for rule in current.ruleset.rules]
    return page("rules.html", rules=current, reload=status, rows=rows, path=svc.rules.path)


@bp.get("/sync")
def sync():
    svc = services()
    with unavailable_as_error():
        counts = svc.store.metrics()
        crms = [panels.sync_health(svc, crm, counts) for crm in svc.settings.crm_targets]
    return page("sync.html", crms=crms)


@bp.post("/sync/<crm>/retry")
def retry(crm: str):
    """Put one dead letter (form field `email`) or all of a CRM's back in line for a push."""
    svc = services()
    if crm not in svc.settings.crm_targets:
        return page("error.html", 404, title="Unknown CRM", detail=f"{crm!r} is not a CRM target")
    email = request.form.get("email", "").strip()
    emails = [email] if email else [row["email"] for row in svc.store.dead_letters(crm)]
    now = svc.now()
    retried = sum(svc.store.retry_dead_letter(crm, e, now) for e in emails)
    if retried:
        try:
            wake_sync_for(svc.redis, crm)
        except redis.RedisError:
            log.warning("could not enqueue a sync job; the workers' sweep will", exc_info=True)
    flash(f"{retried} contact(s) queued for another push to {crm}.")
    return redirect(url_for("dashboard.sync"))


@bp.get("/deliveries")
def deliveries():
    store = services().store
    kept = [panels.quarantined_row(item) for item in store.quarantined(count=25)]
    return page("deliveries.html", deliveries=store.recent_deliveries(50), quarantined=kept)


@bp.errorhandler(StoreUnavailable)
def _redis_down(exc: StoreUnavailable):
    return page("error.html", 503, title="Redis is unavailable", detail=exc.detail)


# --- rendering -----------------------------------------------------------------------------------


def page(template: str, status: int = 200, **context: Any) -> Response:
    response = Response(render_template(f"dashboard/{template}", **context), status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "csrf_token": access.csrf_token,
        "label": label,
        "when": when,
        "short": short,
        "action_text": action_text,
    }


def label(name: str | None) -> str:
    """`marketing_qualified_lead` -> `Marketing qualified lead`."""
    return (name or "no stage yet").replace("_", " ").capitalize()


def when(value: Any) -> str:
    """An ISO time or epoch seconds, as `2026-11-26 10:00 UTC`."""
    if value in (None, ""):
        return "—"
    try:
        if isinstance(value, int | float) or str(value).replace(".", "", 1).isdigit():
            moment = datetime.fromtimestamp(float(value), UTC)
        else:
            moment = parse_time(value)
    except (InvalidEvent, ValueError, OverflowError, OSError):
        return str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def short(version: str | None) -> str:
    return (version or "")[:10]


def action_text(action: Any) -> str:
    """A rule's action as rules.yaml writes it: `promote: lead`, `schedule: revisit_due 90d`."""
    values = []
    for item in fields(action):
        value = getattr(action, item.name)
        if item.name == "kind" or (item.name == "by" and value == 1):
            continue
        if isinstance(value, timedelta):
            value = f"{value.days}d" if not value.seconds else f"{value.total_seconds():g}s"
        values.append(str(value))
    return f"{action.kind}: {' '.join(values)}"
