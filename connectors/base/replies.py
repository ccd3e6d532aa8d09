"""What the inbound-email sources (Mailgun, SendGrid, Postmark) share: reading RFC 5322 headers,
telling auto-replies and bounces from people, stripping attachments, and the `email_replied` event.

Pure: no I/O, no clock reads (times come from the delivery).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

from connectors.base.inbound import Answer, Parsed, Unusable
from engine.errors import InvalidEvent
from engine.model import BehaviorEvent

EVENT_TYPE = "email_replied"
TEXT_LIMIT = 20_000
SUBJECT_LIMIT = 1_000
MAX_ID = 200
MAX_REFERENCES = 100
FUTURE_SKEW = timedelta(days=1)
AUTOMATED_SENDERS = frozenset({"mailer-daemon", "postmaster"})
AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_MSG_ID = re.compile(r"<[^<>\s]+>")


class Headers:
    """A message's header fields in order, looked up case-insensitively, values unfolded."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        self.pairs = [(name.strip().lower(), _unfold(value)) for name, value in pairs]

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.pairs if n == name.lower()), None)

    @classmethod
    def of(cls, message: Message) -> Headers:
        return cls((str(n), _clean(v)) for n, v in message.raw_items())

    @classmethod
    def parse(cls, text: str) -> Headers:
        """A raw header block (SendGrid's `headers` field)."""
        return cls.of(HeaderParser(policy=compat32).parsestr(text, headersonly=True))


def _clean(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unfold(value: object) -> str:
    return _FOLD.sub("", _clean(value)).strip()


def decode_words(value: str) -> str:
    """RFC 2047 encoded words (`=?utf-8?q?...?=`) as text; the value unchanged if they are bad."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError, TypeError, AttributeError):
        return value


def address(value: str | None) -> str:
    """The bare address in a header value like `Ann <ann@example.com>`, lower-cased; or ""."""
    if not value:
        return ""
    try:
        addr = parseaddr(value)[1]
    except (IndexError, ValueError, TypeError):  # pragma: no cover - parseaddr is lenient
        return ""
    return addr.strip().lower()


def first_address(values: Iterable[str | None]) -> str:
    """The first address found in a list of header values (a To header may hold several)."""
    for value in values:
        if not value:
            continue
        try:
            found = [a for _, a in getaddresses([value]) if "@" in a]
        except (IndexError, ValueError, TypeError):  # pragma: no cover
            found = []
        if found:
            return found[0].strip().lower()
    return ""


def message_ids(value: str | None) -> list[str]:
    """The `<id-left@id-right>` ids in a Message-ID / In-Reply-To / References value (the last
    100 of a long thread); a bare id without brackets is bracketed so that every id has one form."""
    if not value:
        return []
    found = _MSG_ID.findall(value[-TEXT_LIMIT:])[-MAX_REFERENCES:]
    if found:
        return found
    bare = value.strip()
    return [f"<{bare}>"] if bare and " " not in bare and len(bare) <= 998 else []


def email_date(value: str | None, delivered_at: datetime) -> datetime:
    """The message's Date header. Delivery time stands in when the header is absent, unparsable,
    or more than a day ahead of delivery (a sender's broken clock would otherwise make every later
    event look stale, DESIGN §3 invariant 4)."""
    if not value:
        return delivered_at
    when = _rfc5322_date(value.strip()) or _iso_date(value.strip())
    if when is None:
        return delivered_at
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # `-0000`: UTC, zone unknown (RFC 5322 3.3)
    if when > delivered_at + FUTURE_SKEW:
        return delivered_at
    return when


def _rfc5322_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _iso_date(value: str) -> datetime | None:
    """Postmark passes the sending server's Date through as written; some write ISO 8601."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def automated(headers: Headers, sender: str, envelope_sender: str | None) -> str | None:
    """Why a message is an auto-reply or bounce rather than a person's reply (None: a person)."""
    auto = (headers.get("auto-submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond"):
        value = headers.get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name} header"
    precedence = (headers.get("precedence") or "").strip().lower()
    if precedence in AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "multipart/report":
        return "a delivery or disposition report (multipart/report)"
    for who in (sender, envelope_sender or ""):
        if who.partition("@")[0].strip().lower() in AUTOMATED_SENDERS:
            return f"sent by {who}"
    if envelope_sender == "" or (headers.get("return-path") or "").strip() == "<>":
        return "null envelope sender (a bounce or auto-reply)"
    return None


def answer_200(answer: Answer) -> tuple[int, str, str]:
    """The usual counts, with status 200: Mailgun and Postmark retry any other status, 202 too
    (Mailgun: "200 = done", 406 = rejected, anything else retried for 8 h; Postmark: "a non-200
    code" is retried 10 times)."""
    return 200, json.dumps(answer.to_dict()), "application/json"


def clip(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """Text with plain newlines, cut to a sane length."""
    return (text or "").replace("\r\n", "\n").strip()[:limit]


# --- the event --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundEmail:
    """What a source read from one inbound message, before it becomes an event."""

    source: str
    headers: Headers
    sender: str
    """The From header (`Name <addr>` or a bare address): the person who replied."""
    envelope_sender: str | None
    """SMTP MAIL FROM / Return-Path; "" is the null sender of bounces; None when not known."""
    mailbox: str
    """Our address the reply was sent to."""
    subject: str
    text: str
    delivered_at: datetime
    vendor_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def to_parsed(mail: InboundEmail) -> Parsed:
    """One email_replied event, or the message counted as ignored (auto-reply, bounce), or kept
    as unusable (no sender address)."""
    sender = address(mail.sender)
    reason = automated(mail.headers, sender or mail.sender, mail.envelope_sender)
    if reason is not None:
        return Parsed(ignored=1)
    try:
        return Parsed(events=[_event(mail, sender)])
    except InvalidEvent as exc:
        item = {"from": mail.sender, "subject": mail.subject, "mailbox": mail.mailbox}
        return Parsed(unusable=[Unusable(f"no usable sender address: {exc.detail}", item)])


def _event(mail: InboundEmail, sender: str) -> BehaviorEvent:
    message_id = next(iter(message_ids(mail.headers.get("message-id"))), None)
    in_reply_to = next(iter(message_ids(mail.headers.get("in-reply-to"))), None)
    properties = {
        "subject": clip(mail.subject, SUBJECT_LIMIT),
        "in_reply_to": in_reply_to,
        "mailbox": mail.mailbox,
        "message_id": message_id,
        "references": message_ids(mail.headers.get("references")),
        "text": clip(mail.text),
        **mail.extra,
    }
    return BehaviorEvent(
        id=_event_id(mail, message_id),
        type=EVENT_TYPE,
        email=sender,
        occurred_at=email_date(mail.headers.get("date"), mail.delivered_at),
        source=mail.source,
        properties=properties,
    )


def _event_id(mail: InboundEmail, message_id: str | None) -> str:
    """The RFC Message-ID (the same on every vendor retry, and across providers); else the
    vendor's message id; else a hash of what identifies the message."""
    if message_id and len(message_id) <= MAX_ID:
        return message_id
    if mail.vendor_id and len(mail.vendor_id) <= MAX_ID:
        return f"{mail.source}:{mail.vendor_id}"
    identity = [mail.sender, mail.headers.get("date"), mail.subject, mail.text, message_id]
    digest = hashlib.sha256(json.dumps(identity).encode("utf-8", "replace")).hexdigest()
    return f"{mail.source}:sha256:{digest[:40]}"
