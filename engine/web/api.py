"""/api/*: post normalized events, the explain view of a contact, the funnel. Bearer API_TOKEN."""

from __future__ import annotations

import hmac
import json
from typing import Any

from flask import Blueprint, jsonify, request

from connectors.standard.inbound import to_event
from engine.errors import (
    BadRequest,
    EngineError,
    InvalidEvent,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from engine.model import format_time, normalize_email
from engine.store import StoreUnavailable
from engine.web.body import bounded_body
from engine.web.services import Services, services

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_EVENTS_BYTES = 1024 * 1024


@bp.before_request
def require_token() -> None:
    token = services().api_token
    if not token:
        raise Unauthorized("the API is disabled until API_TOKEN is set")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise Unauthorized("send Authorization: Bearer <API_TOKEN>")


@bp.post("/events")
def post_events():
    svc = services()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"send application/json, got {request.mimetype or 'none'}")
    try:
        body = json.loads(bounded_body(MAX_EVENTS_BYTES, "requests to /api/events"))
    except ValueError:  # UnicodeDecodeError included
        raise BadRequest("body is not JSON") from None
    items = body if isinstance(body, list) else [body]
    events, problems = [], []
    for index, item in enumerate(items):
        try:
            events.append(to_event(item) if isinstance(item, dict) else _not_an_object())
        except InvalidEvent as exc:
            problems.append(f"event {index}: {exc.detail}" if len(items) > 1 else exc.detail)
    if problems:
        raise InvalidEvent("; ".join(problems))
    if not events:
        raise InvalidEvent("no events in the body")
    result = svc.store.accept(events, svc.now())
    if result.wake:
        svc.wake_events()
    body = {
        "accepted": len(result.accepted),
        "duplicates": len(result.duplicates),
        "events": [e.id for e in events],
    }
    return jsonify(body), 202


def _not_an_object():
    raise InvalidEvent("an event must be a JSON object")


@bp.get("/contacts/<path:email>")
def contact(email: str):
    svc = services()
    try:
        email = normalize_email(email)
    except InvalidEvent as exc:
        raise BadRequest(exc.detail) from None
    stored = svc.store.contact(email)
    if stored is None:
        raise NotFound(f"no contact {email}")
    return jsonify(explain(svc, stored))


def explain(svc: Services, stored: Any) -> dict[str, Any]:
    state = stored.state
    crms = list(svc.settings.crm_targets)
    records = svc.store.sync_records(state.email, crms)
    sync = {}
    for crm in crms:
        record = records.get(crm) or {}
        synced = record.get("synced_version")
        default_state = "synced" if state.version == 0 else "pending"
        sync[crm] = {
            "synced_version": int(synced) if synced not in (None, "") else None,
            "state": record.get("state") or default_state,
            "error": record.get("error") or None,
        }
        if crm == "sandbox":
            sync[crm]["pushed"] = svc.store.sandbox_view(state.email) or None
    return {
        "email": state.email,
        "stage": state.stage,
        "status": state.status,
        "counters": dict(state.counters),
        "crm_ids": svc.store.crm_ids(state.email),
        "version": state.version,
        "first_seen_at": format_time(stored.first_seen_at) if stored.first_seen_at else None,
        "sync": sync,
        "timeline": svc.store.timeline(state.email),
    }


@bp.get("/funnel")
def funnel():
    return jsonify(funnel_report(services()))


def funnel_report(svc: Services) -> dict[str, Any]:
    rules = svc.rules.current()
    stages = rules.vocab.stages
    counts = svc.store.funnel_counts(stages)
    rows, previous = [], None
    for stage in stages:
        reached = counts["reached"].get(stage, 0)
        conversion = round(reached / previous, 4) if previous else None
        rows.append(
            {
                "stage": stage,
                "current": counts["current"].get(stage, 0),
                "reached": reached,
                "conversion_from_previous": conversion,
                "median_hours_to_reach": counts["median_hours"].get(stage),
            }
        )
        previous = reached
    fired = counts["fired"]
    return {
        "total_contacts": counts["total_contacts"],
        "stages": rows,
        "statuses": {s: counts["statuses"].get(s, 0) for s in rules.vocab.statuses},
        "rules": {r.name: {"fired": fired.get(r.name, 0)} for r in rules.ruleset.rules},
        "rules_version": rules.version,
    }


@bp.errorhandler(EngineError)
def refused(exc: EngineError):
    if not isinstance(exc, StoreUnavailable):  # counting would wait on Redis a second time
        services().store.count("rejected", f"api|{exc.code}")
    return jsonify(exc.to_dict()), exc.http_status
