"""Jotform: submission webhooks (multipart/form-data) become `form_submitted` events.

Jotform does not sign its webhooks, so the endpoint is protected with HTTP Basic auth: the webhook
URL carries the secret as its password (`https://any:<secret>@host/webhooks/jotform`). The body
is multipart/form-data with `formID`, `formTitle`, `submissionID` and `rawRequest`, a JSON object
of the answers keyed `q<N>_<field name>` (real capture: `zulip/zulip`
`zerver/webhooks/jotform/fixtures/response.multipart`). The human-readable `pretty` field is never
parsed: labels and values may contain the `, ` and `:` it is joined with.

The multipart body is read here with the standard library's `email` parser (no web framework), so
the parser stays pure and can be replayed from a kept delivery.
"""

from __future__ import annotations

import email
import email.errors
import email.utils
import re
from datetime import datetime
from typing import Any

from connectors.base.inbound import BadPayload, Delivery, InboundSource, MiB, Parsed
from connectors.base.payload import named_email, object_or_none, only_address, unusable
from connectors.base.signatures import verify_basic_auth
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

NAME = "jotform"
ANSWER_KEY = re.compile(r"^q\d+_(.+)$", re.DOTALL)
URL_CREDENTIALS = re.compile(rb"(://[^:/?#@\s]*:)[^/?#@\s]*@")


verify = verify_basic_auth  # Jotform does not sign: the URL's password is the secret


def parse(delivery: Delivery) -> Parsed:
    form = form_fields(delivery.headers.get("content-type", ""), delivery.body)
    if "webhookURL" in form:
        # Jotform echoes the webhook URL, credentials included: nothing here needs them, and
        # nothing kept for inspection (the unusable items, the quarantined body) carries them.
        form["webhookURL"] = redact_credentials(form["webhookURL"].encode()).decode()
    parsed = parse_submission(form, delivery.now)
    if parsed.unusable:
        parsed.keep = redact_credentials(delivery.body)
    return parsed


def parse_submission(form: dict[str, str], now: datetime) -> Parsed:
    submission_id = form.get("submissionID", "").strip()
    if not submission_id:
        return unusable("submissionID is missing", form)
    answers = object_or_none(form.get("rawRequest", ""), strict=True)
    if answers is None:
        return unusable("rawRequest is missing or not a JSON object", form)
    fields = {match[1]: value for key, value in answers.items() if (match := ANSWER_KEY.match(key))}
    address = _email(fields)
    if address is None:
        return unusable("no email: no email question and no single address among the answers", form)
    try:
        event = BehaviorEvent(
            id=f"{NAME}:{submission_id}",
            type="form_submitted",
            email=address,
            # Jotform's webhook names no submission time: the time it reached us stands in.
            occurred_at=now,
            source=NAME,
            properties={
                "form": form.get("formID", "").strip(),
                "form_name": form.get("formTitle", ""),
                "fields": fields,
            },
        )
    except InvalidEvent as exc:
        return unusable(exc.detail, form)
    return Parsed(events=[event])


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (the first value of each name)."""
    if "\r" in content_type or "\n" in content_type or not content_type.isascii():
        raise BadPayload("malformed Content-Type header")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("ascii")
    try:
        message = email.message_from_bytes(head + body)
        parts = message.get_payload() if message.is_multipart() else None
        if message.get_content_type() != "multipart/form-data" or not isinstance(parts, list):
            raise BadPayload("body is not multipart/form-data with its boundary")
        fields: dict[str, str] = {}
        for part in parts:
            name = part.get_param("name", header="content-disposition")
            value = None if part.is_multipart() else part.get_payload(decode=True)
            if name and isinstance(value, bytes):
                key = email.utils.collapse_rfc2231_value(name)
                fields.setdefault(key, value.decode("utf-8", "replace"))
    except (email.errors.MessageError, LookupError, ValueError, TypeError) as exc:
        raise BadPayload(f"unreadable multipart body: {exc}") from None
    if not fields:
        raise BadPayload("no form fields in the multipart body")
    return fields


def redact_credentials(body: bytes) -> bytes:
    """The body with the password of every `scheme://user:password@` URL masked."""
    return URL_CREDENTIALS.sub(rb"\1***@", body)


def _email(fields: dict[str, Any]) -> str | None:
    """The answer to a question whose name says email (`q4_email`, `q7_workEmail`); else the only
    answer that looks like an address."""
    named = named_email(fields)
    return named if named is not None else only_address(fields.values())


SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=("multipart/form-data",),
    max_bytes=2 * MiB,  # answers only: uploaded files travel as links
)
