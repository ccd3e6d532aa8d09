"""A small, known history for the dashboard tests: six contacts over the last six weeks, with a
late event the guardrails refuse, a promotion that is a no-op, and a delivery kept in quarantine.

Times are relative to `now`, so "the last 7 days" always holds the same contacts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.standard.inbound import signed_headers

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEAD_LETTER_EMAIL = "bo@example.com"
DEAD_LETTER_ERROR = (
    "VALIDATION_ERROR: Property values were not valid: hs_lead_status: CONNECTED was not one of "
    "the allowed options: [NEW, OPEN, IN_PROGRESS, OPEN_DEAL, UNQUALIFIED, ATTEMPTED_TO_CONTACT, "
    "BAD_TIMING] (INVALID_OPTION)"
)

# (days ago, email, type, properties); posted in this order
_STORY: list[tuple[float, str, str, dict[str, Any]]] = [
    (40, "di@example.com", "content_downloaded", {"asset": "solar-guide.pdf"}),
    (20, "ann@example.com", "content_downloaded", {"asset": "solar-guide.pdf"}),
    (18, "ann@example.com", "form_submitted", {"form": "demo-request"}),
    (15, "ann@example.com", "meeting_booked", {"meeting": "intro"}),
    (14, "ann@example.com", "email_sent", {"subject": "Following up"}),
    (
        12,
        "ann@example.com",
        "email_replied",
        {"subject": "Re: Following up", "text": "Sounds good"},
    ),
    # arrives after the reply but happened before it: the guardrail refuses the status change
    (13, "ann@example.com", "call_logged", {"outcome": "wrong_number"}),
    (10, "ann@example.com", "deal_created", {"deal": "Rooftop 12 kW"}),
    (5, "ann@example.com", "deal_stage_changed", {"deal_stage": "contractsent"}),
    (4, "ann@example.com", "form_submitted", {"form": "demo-request"}),  # a no-op promotion
    (9, "bo@example.com", "webinar_attended", {"webinar": "solar-101"}),
    (8, "bo@example.com", "page_viewed", {"url": "https://example.com/pricing"}),
    (7, "bo@example.com", "page_viewed", {"url": "https://example.com/pricing"}),
    (3, "cy@example.com", "form_submitted", {"form": "demo-request"}),
    (2.5, "ed@example.com", "meeting_booked", {"meeting": "intro"}),
    (1, "ed@example.com", "deal_won", {"deal": "Battery retrofit"}),
    (0.5, "fay@example.com", "page_viewed", {"url": "https://example.com/blog/heat-pumps"}),
]
EMAILS = sorted({email for _, email, _, _ in _STORY})


def events(now: datetime) -> list[dict[str, Any]]:
    out = []
    for n, (days, email, kind, props) in enumerate(_STORY, 1):
        at = (now - timedelta(days=days)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            {"id": f"story-{n:02d}", "type": kind, "email": email, "occurred_at": at,
             "properties": props}
        )  # fmt: skip
    return out


def unusable_delivery(now: datetime) -> tuple[bytes, dict[str, str]]:
    """A signed `standard` webhook whose event has no email: answered 202, kept in quarantine."""
    body = json.dumps(
        {
            "id": "no-email-1",
            "type": "form_submitted",
            "occurred_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "properties": {"form": "newsletter", "fields": {"work_email": "gus@example.com"}},
        }
    ).encode()
    return body, signed_headers(WEBHOOK_SECRET, "msg-no-email-1", body, now)
