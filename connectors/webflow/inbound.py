"""Webflow: `form_submission` webhooks become `form_submitted` events.

Signature (https://developers.webflow.com/data/v1.0.0/docs/verifying-webhook-signatures; the
official SDK `webflow/js-webflow-api` computes the same): `x-webflow-signature` = hex HMAC-SHA256 of
`"<x-webflow-timestamp>:<raw body>"`, the timestamp in epoch MILLISECONDS, refused when more than
5 minutes from now. Unlike the SDK we check the age and compare in constant time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from connectors.base.inbound import Delivery, InboundSource, Parsed, SignatureError
from connectors.base.payload import (
    as_dict,
    as_list,
    as_text,
    json_object,
    named_email,
    only_address,
    says_email,
    unusable,
)
from connectors.base.signatures import hmac_sha256, same, within_window_ms
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

NAME = "webflow"
TIMESTAMP, SIGNATURE = "x-webflow-timestamp", "x-webflow-signature"
log = logging.getLogger(f"connectors.{NAME}")


# --- verification ---------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    timestamp = delivery.headers.get(TIMESTAMP, "").strip()
    given = delivery.headers.get(SIGNATURE, "").strip()
    if not (timestamp and given):
        raise SignatureError("missing x-webflow-timestamp or x-webflow-signature header")
    within_window_ms(timestamp, delivery.now, TIMESTAMP)
    if not same(_signature(secret, timestamp, delivery.body).encode(), given.lower().encode()):
        raise SignatureError(
            "x-webflow-signature does not match (hex HMAC-SHA256 of timestamp:body)"
        )


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), timestamp.encode() + b":" + body).hex()


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers Webflow attaches to `body` sent at `now` (for tests and demos)."""
    timestamp = str(int(now.timestamp() * 1000))
    return {
        TIMESTAMP: timestamp,
        SIGNATURE: _signature(secret, timestamp, body),
        "content-type": "application/json",
    }


# --- parsing --------------------------------------------------------------------------------------


def parse(delivery: Delivery) -> Parsed:
    body = json_object(delivery.body, "a Webflow webhook event", strict=True)
    kind, payload = body.get("triggerType"), body.get("payload")
    if kind is None and "_id" in body and "data" in body:
        kind, payload = "form_submission", _from_v1(body)
    parser = EVENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        log.info("%s.webhook.unsupported_event: %.80r", NAME, kind)
        return Parsed(ignored=1)
    if not isinstance(payload, dict):
        return unusable("payload is missing or not an object", body)
    return parser(payload, delivery.now)


def parse_form_submission(payload: dict[str, Any], now: datetime) -> Parsed:
    submission_id = as_text(payload.get("id")).strip()
    data = as_dict(payload.get("data"))
    if not submission_id:
        return unusable("payload.id (the submission id) is missing", payload)
    email = _email(data, as_list(payload.get("schema")))
    if email is None:
        return unusable("no email: no email field and no single address among the fields", payload)
    name = as_text(payload.get("name"))
    properties = {
        "form": as_text(payload.get("formId")) or name,
        "form_name": name,
        "fields": data,
        "site_id": as_text(payload.get("siteId")),
    }
    try:
        event = BehaviorEvent(
            id=f"{NAME}:{submission_id}",
            type="form_submitted",
            email=email,
            # submittedAt is always sent; the delivery time stands in only if it is not.
            occurred_at=payload.get("submittedAt") or now,
            source=NAME,
            properties=properties,
        )
    except InvalidEvent as exc:
        return unusable(exc.detail, payload)
    return Parsed(events=[event])


EVENT_PARSERS: dict[str, Callable[[dict[str, Any], datetime], Parsed]] = {
    "form_submission": parse_form_submission,
}
event_types = tuple(EVENT_PARSERS)


def _from_v1(body: dict[str, Any]) -> dict[str, Any]:
    """The legacy v1 body (`name`, `site`, `data`, `d`, `_id`) in the v2 payload's terms; it names
    no form id, so `form` falls back to the form's name."""
    return {
        "name": body.get("name"),
        "siteId": body.get("site"),
        "data": body.get("data"),
        "submittedAt": body.get("d"),
        "id": body.get("_id"),
    }


def _email(data: dict[str, Any], schema: list[Any]) -> str | None:
    """A field named email (any case); else one whose name or schema type mentions email; else
    the only value that looks like an address."""
    exact = named_email(data, lambda name: name.strip().lower() == "email")
    if exact is not None:
        return exact
    typed = {
        as_text(item.get("fieldName"))
        for item in schema
        if isinstance(item, dict) and says_email(as_text(item.get("fieldType")))
    }
    named = named_email(data, lambda name: name in typed or says_email(name))
    return named if named is not None else only_address(data.values())


SOURCE = InboundSource(name=NAME, verify=verify, parse=parse)
