"""Salesforce Outbound Messages: SOAP 1.1 `notifications` for Lead, Contact and Task changes
(reference/salesforce.md §7.1).

Verification: Outbound Messages carry no signature. The endpoint URL carries HTTP Basic
credentials (any user, password = SALESFORCE_WEBHOOK_SECRET) and the message's `OrganizationId`
must be SALESFORCE_ORG_ID's org. Checking the org means reading the XML, which is done without
DTDs or entities (expat with those refused, no defusedxml dependency).

Each `Notification` (up to 100) becomes events: a Lead or Contact with `Lifecycle_Stage__c` gives
crm_stage_changed, with `Status` crm_status_changed (both carry crm_id = the record's Id so the
worker learns it); a call Task gives call_logged and an email Task email_sent, for the lead or
contact in `WhoId`. A verified delivery is answered 200 with the SOAP `notificationsResponse`
`<Ack>true</Ack>`: Salesforce retries anything else for 24 hours.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from connectors.base.inbound import (
    Answer,
    BadPayload,
    Delivery,
    InboundSource,
    MiB,
    Parsed,
    SignatureError,
    Unusable,
)
from connectors.base.signatures import check_basic_auth
from engine.errors import InvalidEvent, NotFound
from engine.model import (
    DEFAULT_STAGES,
    DEFAULT_STATUSES,
    BehaviorEvent,
    normalize_email,
    parse_time,
)

NAME = "salesforce"
log = logging.getLogger(__name__)
OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
STAGE_FIELD = "Lifecycle_Stage__c"
MAX_DEPTH = 32
ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenv='
    '"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns='
    '"http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)
"""The reply Salesforce needs (om_ack_response.xml): one Ack covers every notification."""

STAGE_VALUES = {
    **{s.replace("_", " "): s for s in DEFAULT_STAGES},
    "marketingqualifiedlead": "marketing_qualified_lead",
    "salesqualifiedlead": "sales_qualified_lead",
    "mql": "marketing_qualified_lead",
    "sql": "sales_qualified_lead",
}
"""Lifecycle_Stage__c values (the engine writes stage names; labels and abbreviations too)."""
STATUS_VALUES = {
    **{s.replace("_", " "): s for s in DEFAULT_STATUSES},
    "open - not contacted": "new",
    "new - not contacted": "new",
    "working - contacted": "attempted_to_contact",
}
"""Lead.Status (org-specific, §6.1) -> engine status where obvious; other values are kept raw."""
CALL_OUTCOMES = (
    ("wrong_number", ("wrong number", "wrong #", "bad number", "invalid number", "not in service")),
    ("left_voicemail", ("voicemail", "voice mail", "left message", "left a message", "left vm")),
    ("no_answer", ("no answer", "not answer", "unanswered", "didn't answer", "not connected",
                   "no connect", "not connect", "couldn't connect", "not reach", "couldn't reach",
                   "unreachable")),
    ("busy", ("busy",)),
    ("connected", ("connected", "answered", "spoke", "talked", "reached", "conversation")),
)  # fmt: skip
"""CallDisposition is free text per org: first matching phrase wins (negatives before positives)."""


class OrgNotConfigured(NotFound):
    code = "unknown_source"


# --- verification -------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    expected = delivery.config.get("salesforce_org_id", "").strip()
    if not expected and secret is not None:
        raise OrgNotConfigured(
            "source 'salesforce' is not configured: set SALESFORCE_ORG_ID (the org whose "
            "outbound messages are accepted)"
        )
    if secret is not None:
        check_basic_auth(delivery.headers, secret)
    if not expected:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1 and no org is configured
    org = _text(read_notifications(delivery.body).find(f"{OUTBOUND}OrganizationId")) or ""
    if not same_org(org, expected):
        raise SignatureError(f"OrganizationId {org[:18]!r} is not the org in SALESFORCE_ORG_ID")


_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def canonical_id(value: str) -> str | None:
    """A Salesforce id as its case-sensitive 15 characters. The 18-character form adds 3
    characters that encode the case of the first 15 (so that it can be compared
    case-insensitively): restore that case from them. None when it is not an id."""
    value = value.strip()
    if not (value.isascii() and value.isalnum() and len(value) in (15, 18)):
        return None
    if len(value) == 15:
        return value
    flags = [_SUFFIX.find(c) for c in value[15:].upper()]
    if -1 in flags:
        return None
    restored = []
    for i, char in enumerate(value[:15]):
        upper = flags[i // 5] >> (i % 5) & 1
        if upper and not char.isalpha():
            return None  # the suffix does not belong to these characters
        restored.append(char.upper() if upper else char.lower())
    return "".join(restored)


def same_org(given: str, expected: str) -> bool:
    a, b = canonical_id(given), canonical_id(expected)
    return a is not None and a == b


def respond(answer: Answer) -> tuple[int, str, str]:
    return 200, ACK, "text/xml; charset=utf-8"


# --- safe XML -----------------------------------------------------------------------------------


class _Refused(Exception):
    pass


def _refuse(*_: object) -> None:
    raise _Refused("DTDs, entities and external references are refused")


def read_xml(body: bytes) -> Element:
    """Parse XML without DTDs, entity declarations or external entities (no XXE, no billion
    laughs): expat handlers refuse them before anything is expanded."""
    builder, depth = TreeBuilder(), [0]

    def start(name: str, attrs: dict[str, str]) -> None:
        depth[0] += 1
        if depth[0] > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} elements")
        builder.start(_qname(name), {_qname(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        depth[0] -= 1
        builder.end(_qname(name))

    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
        return builder.close()
    except _Refused as exc:
        raise BadPayload(f"XML refused: {exc}") from None
    except (expat.ExpatError, ValueError, LookupError) as exc:
        raise BadPayload(f"body is not XML: {exc}") from None


def _qname(name: str) -> str:
    return "{" + name if "}" in name else name


def read_notifications(body: bytes) -> Element:
    root = read_xml(body)
    found = next(root.iter(f"{OUTBOUND}notifications"), None)
    if found is None:
        raise BadPayload("not a Salesforce outbound message (no notifications element)")
    return found


# --- parsing ------------------------------------------------------------------------------------


def parse(delivery: Delivery) -> Parsed:
    parsed, unsupported = Parsed(), Counter[str]()
    for note in read_notifications(delivery.body).iter(f"{OUTBOUND}Notification"):
        note_id = _text(note.find(f"{OUTBOUND}Id"))
        sobject = note.find(f"{OUTBOUND}sObject")
        kind = (sobject.get(XSI_TYPE) or "").rpartition(":")[2] if sobject is not None else ""
        handler = EVENT_PARSERS.get(kind)
        if handler is None or sobject is None:
            parsed.ignored += 1
            unsupported[kind or "?"] += 1
            continue
        try:
            if not note_id:
                raise InvalidEvent("a Notification without its Id")
            events = handler(note_id, _fields(sobject), delivery.now)
        except InvalidEvent as exc:
            parsed.unusable.append(Unusable(exc.detail, note_id))
            continue
        parsed.events.extend(events)
        if not events:
            parsed.ignored += 1
            unsupported[f"{kind} (nothing mapped)"] += 1
    if unsupported:  # objects or fields we do not map: not errors, but worth knowing
        log.info("salesforce.webhook.unsupported: %s", dict(unsupported))
    if parsed.unusable:
        parsed.keep = redact_session(delivery.body)
    return parsed


def parse_person(
    kind: str, note_id: str, fields: dict[str, str | None], now: datetime
) -> list[BehaviorEvent]:
    """A Lead or Contact: its stage and/or status as the CRM now has them."""
    record_id = _required(fields, "Id")
    email = _email(fields.get("Email"))
    when = _time(fields, "LastModifiedDate", "SystemModstamp", "CreatedDate") or now
    base = {"crm_object": kind, "changed_by": fields.get("LastModifiedById")}
    found = []
    if stage := fields.get(STAGE_FIELD):
        found.append(("crm_stage_changed", _lookup(STAGE_VALUES, stage), stage))
    if status := fields.get("Status"):
        found.append(("crm_status_changed", _lookup(STATUS_VALUES, status), status))
    return [
        BehaviorEvent(
            id=note_id if i == 0 else f"{note_id}:status",  # a second event of one notification
            type=type_,
            email=email,
            occurred_at=when,
            source=NAME,
            properties={**_present(base), "value": value, "crm_value": raw},
            crm=NAME,
            crm_id=record_id,
        )
        for i, (type_, value, raw) in enumerate(found)
    ]


def parse_task(note_id: str, fields: dict[str, str | None], now: datetime) -> list[BehaviorEvent]:
    """A call (TaskSubtype Call) or an email (TaskSubtype Email) logged against a lead/contact.
    The id is the Task's: a task edited later (another notification) is the same call."""
    subtype = fields.get("TaskSubtype") or ("Call" if fields.get("CallType") else "")
    if subtype not in ("Call", "Email"):
        return []
    who = fields.get("WhoId")
    if not who:
        raise InvalidEvent(f"{subtype} task without WhoId: no lead or contact to credit")
    when = _time(fields, "CompletedDateTime", "LastModifiedDate", "CreatedDate") or now
    props: dict[str, Any] = {"task_id": fields.get("Id"), "subject": fields.get("Subject")}
    if subtype == "Call":
        disposition = fields.get("CallDisposition")
        props |= {"outcome": call_outcome(disposition) if disposition else None}
        props |= {"call_disposition": disposition, "call_type": fields.get("CallType")}
        seconds = fields.get("CallDurationInSeconds") or ""
        props["duration_seconds"] = int(seconds) if seconds.isdecimal() else None
    return [
        BehaviorEvent(
            id=f"{NAME}-task-{fields.get('Id') or note_id}",
            type="call_logged" if subtype == "Call" else "email_sent",
            email="",
            occurred_at=when,
            source=NAME,
            properties=_present(props),
            crm=NAME,
            crm_id=who,
        )
    ]


def call_outcome(disposition: str) -> str:
    text = " ".join(disposition.lower().replace("_", " ").replace("-", " ").split())
    for outcome, phrases in CALL_OUTCOMES:
        if any(phrase in text for phrase in phrases):
            return outcome
    return disposition


EVENT_PARSERS: dict[str, Callable[[str, dict[str, str | None], datetime], list[BehaviorEvent]]] = {
    "Lead": partial(parse_person, "Lead"),
    "Contact": partial(parse_person, "Contact"),
    "Task": parse_task,
}
event_types: tuple[str, ...] = tuple(EVENT_PARSERS)


def _fields(sobject: Element) -> dict[str, str | None]:
    """sObject fields by local name; xsi:nil fields are None."""
    return {
        child.tag.rpartition("}")[2]: None if child.get(XSI_NIL) == "true" else _text(child)
        for child in sobject
    }


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _required(fields: dict[str, str | None], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise InvalidEvent(f"sObject without its {name} field")
    return value


def _email(raw: str | None) -> str:
    try:
        return normalize_email(raw)
    except InvalidEvent:
        return ""  # resolved by the worker from the record id


def _time(fields: dict[str, str | None], *names: str) -> datetime | None:
    for name in names:
        if fields.get(name):
            return parse_time(fields[name], name)
    return None  # the caller falls back to the delivery time: the message has no time of its own


def _lookup(table: dict[str, str], raw: str) -> str:
    return table.get(" ".join(raw.lower().replace("_", " ").split()), raw)


def _present(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if v is not None}


_SESSION = re.compile(rb"(<(?:[\w.-]+:)?SessionId\b[^>]*>)[^<]*(</(?:[\w.-]+:)?SessionId\s*>)")


def redact_session(body: bytes) -> bytes:
    """What the quarantine keeps: the message without its SessionId (an API session)."""
    return _SESSION.sub(rb"\1[redacted]\2", body)


SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=("text/xml", "application/xml"),
    max_bytes=4 * MiB,
    respond=respond,
)
