"""Typeform: `form_response` webhooks become `form_submitted` events.

Signature (https://www.typeform.com/developers/webhooks/secure-your-webhooks/): the header
`Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, raw body)>`. The scheme carries no
timestamp, so there is no replay window: a captured delivery verifies forever. What keeps a replay
harmless is the event id (`event_id`, kept by Typeform's retries): it changes state at most once.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from connectors.base.inbound import Delivery, InboundSource, Parsed, SignatureError
from connectors.base.payload import (
    as_dict,
    as_list,
    as_text,
    is_email,
    json_object,
    named_email,
    unusable,
)
from connectors.base.signatures import b64decode_strict, hmac_sha256, same
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

NAME = "typeform"
HEADER = "typeform-signature"
log = logging.getLogger(f"connectors.{NAME}")


# --- verification ---------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    given = delivery.headers.get(HEADER, "").strip()
    if not given:
        raise SignatureError("missing Typeform-Signature header")
    algorithm, equals, value = given.partition("=")
    if algorithm != "sha256" or not equals or not value:
        raise SignatureError("Typeform-Signature must read sha256=<base64 HMAC-SHA256 of the body>")
    if not same(hmac_sha256(secret.encode(), delivery.body), b64decode_strict(value)):
        raise SignatureError("Typeform-Signature does not match the body (HMAC-SHA256, base64)")


def sign(secret: str, body: bytes) -> str:
    """The Typeform-Signature header value Typeform sends for `body` (for tests and demos)."""
    return "sha256=" + base64.b64encode(hmac_sha256(secret.encode(), body)).decode()


# --- parsing --------------------------------------------------------------------------------------


def parse(delivery: Delivery) -> Parsed:
    body = json_object(delivery.body, "a Typeform webhook event", strict=True)
    kind = body.get("event_type")
    parser = EVENT_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        log.info("%s.webhook.unsupported_event: %.80r", NAME, kind)
        return Parsed(ignored=1)
    return parser(body, delivery.now)


def parse_form_response(body: dict[str, Any], now: datetime) -> Parsed:
    response = body.get("form_response")
    event_id = body.get("event_id")
    if not isinstance(response, dict):
        return unusable("form_response is missing or not an object", body)
    if not isinstance(event_id, str) or not event_id.strip():
        return unusable("event_id is missing", body)
    definition = as_dict(response.get("definition"))
    labels = _field_labels(definition)
    answers = [a for a in as_list(response.get("answers")) if isinstance(a, dict)]
    hidden = as_dict(response.get("hidden"))
    email = _email(answers, hidden, labels)
    if email is None:
        return unusable("no email: no email answer, email hidden field or email question", body)
    properties: dict[str, Any] = {
        "form": as_text(response.get("form_id")) or as_text(definition.get("id")),
        "form_name": as_text(definition.get("title")),
        "fields": {_name(a, labels): _value(a) for a in answers},
        "response_id": as_text(response.get("token")),
        "hidden": hidden,
    }
    score = as_dict(response.get("calculated")).get("score")
    if score is not None:
        properties["score"] = score
    try:
        event = BehaviorEvent(
            id=f"{NAME}:{event_id.strip()}",
            type="form_submitted",
            email=email,
            # submitted_at is always sent; the delivery time stands in only if it is not.
            occurred_at=response.get("submitted_at") or now,
            source=NAME,
            properties=properties,
        )
    except InvalidEvent as exc:
        return unusable(exc.detail, body)
    return Parsed(events=[event])


EVENT_PARSERS: dict[str, Callable[[dict[str, Any], datetime], Parsed]] = {
    "form_response": parse_form_response,
}
event_types = tuple(EVENT_PARSERS)


# --- answers --------------------------------------------------------------------------------------


def _field_labels(definition: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Field id -> (ref, title) from the form definition (answers carry only the field id)."""
    labels = {}
    for field in as_list(definition.get("fields")):
        if isinstance(field, dict) and as_text(field.get("id")):
            labels[field["id"]] = (as_text(field.get("ref")), as_text(field.get("title")))
    return labels


def _name(answer: dict[str, Any], labels: dict[str, tuple[str, str]]) -> str:
    """An answer's field name: its ref (stable, settable in the form editor), else its title."""
    field = as_dict(answer.get("field"))
    field_id = as_text(field.get("id"))
    ref, title = labels.get(field_id, ("", ""))
    return as_text(field.get("ref")) or ref or title or field_id or "?"


def _value(answer: dict[str, Any]) -> Any:
    """The answer's value: Typeform names the key holding it in `type` (text, email, choice...)."""
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) else None
    if kind == "choice" and isinstance(value, dict):
        return value.get("label", value.get("other"))
    if kind == "choices" and isinstance(value, dict):
        chosen = list(as_list(value.get("labels")))
        return [*chosen, value["other"]] if value.get("other") else chosen
    return value


def _email(
    answers: list[dict[str, Any]], hidden: dict[str, Any], labels: dict[str, tuple[str, str]]
) -> str | None:
    """An email answer, else a hidden field named like email, else the answer to an email
    question (a ref or title that says email)."""
    for answer in answers:
        if answer.get("type") == "email" and is_email(answer.get("email")):
            return answer["email"]
    if (hidden_email := named_email(hidden)) is not None:
        return hidden_email
    for answer in answers:
        field = as_dict(answer.get("field"))
        names = " ".join((as_text(field.get("ref")), *labels.get(as_text(field.get("id")), ())))
        if "email" in names.lower() and is_email(value := _value(answer)):
            return value
    return None


SOURCE = InboundSource(name=NAME, verify=verify, parse=parse)
