"""HubSpot: Webhooks API batches and workflow "Send a webhook" posts (reference/hubspot.md §1-4).

Verification (§2), over the raw body before parsing, with the app's client secret:
- v3: `X-HubSpot-Signature-v3` = base64 HMAC-SHA256 of method + URI + body + timestamp, with
  `X-HubSpot-Request-Timestamp` (epoch ms) within 5 minutes of arrival. Preferred when present.
- v1 / v2 (`X-HubSpot-Signature`, per `X-HubSpot-Signature-Version`): hex SHA-256 of secret + body,
  or of secret + method + URI + body. No timestamp: a replayed delivery is caught only as a
  duplicate, by its event id.
The URI is the one HubSpot called: scheme and host from X-Forwarded-Proto/-Host behind a proxy, then
the v3 docs' percent-decoding table. HubSpot's SDKs hash the URI undecoded, so both forms are tried.

A JSON array is a Webhooks API batch: `subscriptionType` (older docs: `eventType`) picks the parser
in EVENT_PARSERS; these events carry only HubSpot record ids, so the worker resolves the email. A
JSON object is a workflow post of one contact record; `?event=<type>` on the configured URL names
the event (default form_submitted).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from connectors.base.inbound import (
    BadPayload,
    Delivery,
    InboundSource,
    MiB,
    Parsed,
    SignatureError,
    Unusable,
)
from connectors.base.signatures import b64decode_strict, hmac_sha256, same, within_window
from engine.errors import InvalidEvent
from engine.model import DEFAULT_STAGES, BehaviorEvent, normalize_email, parse_time

NAME = "hubspot"
log = logging.getLogger(__name__)
WORKFLOW = "workflow"
DEFAULT_WORKFLOW_EVENT = "form_submitted"

STAGES = {stage.replace("_", ""): stage for stage in DEFAULT_STAGES}
"""lifecyclestage internal values (§4.1: marketingqualifiedlead...) -> engine stages; custom stage
ids are kept as they are."""
DEAL_OUTCOMES = {"closedwon": "deal_won", "closedlost": "deal_lost"}
OBJECT_TYPES = {"0-1": "contact", "0-3": "deal"}
"""objectTypeId of generic `object.*` subscriptions."""
URI_DECODES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
"""Percent-escapes HubSpot decodes in the request URI before signing (v3 docs, §2.2)."""
_ESCAPES = re.compile("|".join(URI_DECODES), re.IGNORECASE)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_MILLIS = re.compile(r"[0-9]{1,16}")
_RECORD_ID = re.compile(r"[0-9]{1,20}")
_MAX_MILLIS = 253402300799999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- verification -------------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None) -> None:
    if secret is None:
        return  # only reached when ALLOW_UNSIGNED_WEBHOOKS=1
    if delivery.headers.get("x-hubspot-signature-v3"):
        return _verify_v3(delivery, secret)
    if delivery.headers.get("x-hubspot-signature"):
        return _verify_v1_v2(delivery, secret)
    raise SignatureError(
        "missing X-HubSpot-Signature-v3 (or X-HubSpot-Signature and its version header)"
    )


def _verify_v3(delivery: Delivery, secret: str) -> None:
    timestamp = delivery.headers.get("x-hubspot-request-timestamp", "").strip()
    if not _MILLIS.fullmatch(timestamp):
        raise SignatureError("X-HubSpot-Request-Timestamp must be epoch milliseconds")
    within_window(str(int(timestamp) // 1000), delivery.now)
    given = b64decode_strict(delivery.headers["x-hubspot-signature-v3"].strip())
    for uri in called_uris(delivery):
        if same(sign_v3(secret, delivery.method, uri, delivery.body, timestamp), given):
            return
    raise SignatureError(
        "X-HubSpot-Signature-v3 does not match (HMAC-SHA256 of method, URI, body, timestamp)"
    )


def _verify_v1_v2(delivery: Delivery, secret: str) -> None:
    version = delivery.headers.get("x-hubspot-signature-version", "").strip().lower()
    given = delivery.headers["x-hubspot-signature"].strip().lower().encode()
    if version == "v1":
        expected = [sign_v1(secret, delivery.body)]
    elif version == "v2":
        uris = called_uris(delivery)
        expected = [sign_v2(secret, delivery.method, uri, delivery.body) for uri in uris]
    else:
        raise SignatureError("X-HubSpot-Signature-Version must be v1 or v2")
    if not any(same(e.encode(), given) for e in expected):
        raise SignatureError(f"X-HubSpot-Signature does not match ({version})")


def called_uris(delivery: Delivery) -> list[str]:
    """The URI HubSpot signed: decoded per the v3 docs first, then as received."""
    scheme, _, rest = delivery.url.partition("://")
    host, slash, path = rest.partition("/")
    scheme = _first(delivery.headers.get("x-forwarded-proto")) or scheme
    host = _first(delivery.headers.get("x-forwarded-host")) or host
    # delivery.url is an IRI (Werkzeug unquotes non-ASCII): quote that back as UTF-8.
    raw = _NON_ASCII.sub(_quote, f"{scheme}://{host}{slash}{path}")
    decoded = _ESCAPES.sub(lambda m: URI_DECODES[m.group().upper()], raw)
    return [decoded] if decoded == raw else [decoded, raw]


def _first(header: str | None) -> str:
    return (header or "").split(",")[0].strip()


def _quote(match: re.Match[str]) -> str:
    return quote(match.group().encode("utf-8", "surrogatepass"), safe="")


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> bytes:
    return hmac_sha256(secret.encode(), method.encode() + uri.encode() + body + timestamp.encode())


def signed_headers(secret: str, url: str, body: bytes, now: datetime) -> dict[str, str]:
    """The v3 headers HubSpot attaches to a POST of `body` to `url` (for tests and demos)."""
    timestamp = str(int(now.timestamp() * 1000))
    signature = sign_v3(secret, "POST", url, body, timestamp)
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(signature).decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


# --- parsing ------------------------------------------------------------------------------------


def parse(delivery: Delivery) -> Parsed:
    try:
        body = json.loads(delivery.body)
    except (ValueError, RecursionError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    if isinstance(body, list):
        return parse_batch(body)
    if isinstance(body, dict):
        return parse_workflow(body, delivery)
    raise BadPayload("expected a JSON array of events (Webhooks API) or one record (workflow)")


def parse_batch(items: list[Any]) -> Parsed:
    parsed, unsupported = Parsed(), Counter[str]()
    for item in items:
        if not isinstance(item, dict):
            parsed.unusable.append(Unusable("a batch item must be a JSON object", item))
            continue
        kind = item.get("subscriptionType") or item.get("eventType")
        handler = EVENT_PARSERS.get(kind) if isinstance(kind, str) else None
        try:
            events = handler(item) if handler else []
        except InvalidEvent as exc:
            parsed.unusable.append(Unusable(exc.detail, item))
            continue
        parsed.events.extend(events)
        if not events:
            parsed.ignored += 1
            unsupported[f"{kind}:{item.get('propertyName') or ''}".rstrip(":")] += 1
    if unsupported:  # kinds we do not map (or cleared values): not errors, but worth knowing
        log.info("hubspot.webhook.unsupported: %s", dict(unsupported))
    parsed.events.sort(key=lambda e: e.occurred_at)  # HubSpot does not order a batch (§1.2)
    return parsed


def parse_contact_property_change(item: dict[str, Any]) -> list[BehaviorEvent]:
    name, value = item.get("propertyName"), item.get("propertyValue")
    if not isinstance(value, str) or not value.strip():
        return []  # a cleared value: nothing for the engine to learn
    value = value.strip()
    if name == "lifecyclestage":
        return [_record_event(item, "crm_stage_changed", STAGES.get(value, value))]
    if name == "hs_lead_status":  # NEW -> new, ATTEMPTED_TO_CONTACT -> attempted_to_contact...
        return [_record_event(item, "crm_status_changed", value.lower())]
    return []


def parse_deal_creation(item: dict[str, Any]) -> list[BehaviorEvent]:
    return [_deal_event(item, "deal_created")]


def parse_deal_property_change(item: dict[str, Any]) -> list[BehaviorEvent]:
    stage = item.get("propertyValue")
    if item.get("propertyName") != "dealstage" or not isinstance(stage, str) or not stage:
        return []
    return [_deal_event(item, DEAL_OUTCOMES.get(stage, "deal_stage_changed"), deal_stage=stage)]


def parse_object_event(action: str, item: dict[str, Any]) -> list[BehaviorEvent]:
    """Generic `object.*` subscriptions: the object type comes in `objectTypeId`."""
    type_id = item.get("objectTypeId")
    kind = OBJECT_TYPES.get(type_id) if isinstance(type_id, str) else None
    handler = EVENT_PARSERS.get(f"{kind}.{action}")
    return handler(item) if kind and handler else []


def _record_event(item: dict[str, Any], type_: str, value: str) -> BehaviorEvent:
    """An event on a contact known only by its HubSpot record id (the worker resolves it)."""
    properties = {"value": value, "crm_value": item["propertyValue"], **_changed_by(item)}
    if isinstance(item.get("changeSource"), str):
        properties["change_source"] = item["changeSource"]
    return _batch_event(item, type_, _record_id(item.get("objectId")), properties)


def _deal_event(item: dict[str, Any], type_: str, **properties: Any) -> BehaviorEvent:
    """The payload names the deal, not its contact: `deal:<id>` keeps the id apart from contact
    ids; finding the deal's contact (associations) is the HubSpot client's lookup."""
    deal_id = _record_id(item.get("objectId"))
    properties = {"deal_id": deal_id, **properties, **_changed_by(item)}
    return _batch_event(item, type_, f"deal:{deal_id}", properties)


def _changed_by(item: dict[str, Any]) -> dict[str, str]:
    """Who made the change: `userId:<id>` for a person in the UI, else the change source."""
    who = item.get("sourceId") or item.get("changeSource")
    return {"changed_by": who} if isinstance(who, str) else {}


def _batch_event(
    item: dict[str, Any], type_: str, crm_id: str, properties: dict[str, Any]
) -> BehaviorEvent:
    occurred = item.get("occurredAt")
    key = [item.get("portalId"), item.get("eventId"), item.get("objectId"), occurred]
    if "propertyName" in item:
        key.append(item["propertyName"])  # eventId alone is not unique (§1.1)
    return BehaviorEvent(
        id=_event_id(key),
        type=type_,
        email="",
        occurred_at=_from_millis(occurred, "occurredAt"),
        source=NAME,
        properties=properties,
        crm=NAME,
        crm_id=crm_id,
    )


def _event_id(key: list[Any]) -> str:
    parts = ["" if part is None else str(part) for part in key]
    if all(re.fullmatch(r"[\w.:]{0,40}", part, re.ASCII) for part in parts):
        return "hubspot-" + "-".join(parts)
    return "hubspot-" + hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:40]


def _record_id(raw: object) -> str:
    text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not _RECORD_ID.fullmatch(text):
        raise InvalidEvent(f"HubSpot record id must be a number, got {raw!r}")
    return text


def _from_millis(raw: object, what: str) -> datetime:
    if isinstance(raw, str) and _MILLIS.fullmatch(raw.strip()):
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 < raw <= _MAX_MILLIS:
        raise InvalidEvent(f"{what} must be epoch milliseconds, got {raw!r}")
    return _EPOCH + timedelta(milliseconds=raw)


EVENT_PARSERS: dict[str, Callable[[dict[str, Any]], list[BehaviorEvent]]] = {
    "contact.propertyChange": parse_contact_property_change,
    "deal.creation": parse_deal_creation,
    "deal.propertyChange": parse_deal_property_change,
    "object.propertyChange": partial(parse_object_event, "propertyChange"),
    "object.creation": partial(parse_object_event, "creation"),
}


# --- workflow "Send a webhook" posts ------------------------------------------------------------


def parse_workflow(record: dict[str, Any], delivery: Delivery) -> Parsed:
    type_ = delivery.query.get("event") or DEFAULT_WORKFLOW_EVENT
    try:
        return Parsed(events=[workflow_event(record, type_, delivery)])
    except InvalidEvent as exc:
        return Parsed(unusable=[Unusable(f"workflow post (?event={type_}): {exc.detail}", record)])


def workflow_event(record: dict[str, Any], type_: str, delivery: Delivery) -> BehaviorEvent:
    """One contact record (legacy v1 profile with `vid`, or v3 `{"objectId", "properties"}`)."""
    props = _dict(record.get("properties"))
    value = partial(_property, props)
    record_id = _workflow_record_id(record, value)
    email = _email(record, value)
    if not email and ("vid" not in record and "canonical-vid" not in record):
        # Only a legacy profile (`vid`) is surely a contact: a bare v3 `objectId` could be a
        # deal's or a company's (a workflow of another object type), never to be taken for a
        # contact id.
        raise InvalidEvent("the record has no email and no contact id (vid)")
    form = _form(record, value) if type_ == DEFAULT_WORKFLOW_EVENT else {}
    when = form.get("timestamp") or value("lastmodifieddate") or value("hs_lastmodifieddate")
    marker = form.get("conversion-id") or when
    occurred = _when(when) if when else delivery.now  # the record carries no time at all
    key = json.dumps([type_, record_id, marker or hashlib.sha256(delivery.body).hexdigest()])
    return BehaviorEvent(
        id="hubspot-wf-" + hashlib.sha256(key.encode()).hexdigest()[:40],
        type=type_,
        email=email,
        occurred_at=occurred,
        source=NAME,
        properties=_form_properties(form, props) if form else {},
        crm=NAME if record_id else None,
        crm_id=record_id,
    )


def _workflow_record_id(record: dict[str, Any], value: Callable[[str], str | None]) -> str | None:
    for raw in (record.get("canonical-vid"), record.get("vid"), record.get("objectId")):
        if raw is not None:
            return _record_id(raw)
    raw = record.get("id") or value("hs_object_id")
    return _record_id(raw) if raw is not None else None


def _email(record: dict[str, Any], value: Callable[[str], str | None]) -> str:
    candidates = [value("email")]
    for profile in _list(record.get("identity-profiles")):
        for identity in _list(_dict(profile).get("identities")):
            if _dict(identity).get("type") == "EMAIL":
                candidates.append(_dict(identity).get("value"))
    for candidate in candidates:
        try:
            return normalize_email(candidate)
        except InvalidEvent:
            continue
    return ""  # the worker resolves the contact by its record id


def _form(record: dict[str, Any], value: Callable[[str], str | None]) -> dict[str, Any]:
    """The latest `form-submissions` entry (legacy records), else the contact's recent conversion
    properties (v3 records carry no submission list)."""
    forms = [f for f in _list(record.get("form-submissions")) if isinstance(f, dict)]
    timed = [f for f in forms if isinstance(f.get("timestamp"), int) and f["timestamp"] > 0]
    if timed:
        return max(timed, key=lambda f: f["timestamp"])
    when = value("recent_conversion_date")
    return {"timestamp": when, "title": value("recent_conversion_event_name")} if when else {}


def _form_properties(form: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """DESIGN §4 form properties; the answers are the property versions that submission wrote."""
    conversion = form.get("conversion-id")
    fields = {}
    for name, prop in props.items():
        for version in _list(_dict(prop).get("versions")):
            version = _dict(version)
            by_form = version.get("source-type") == "FORM"
            if conversion and by_form and version.get("source-id") == conversion:
                fields[name] = version.get("value")
    found = {
        "form": form.get("form-id"),
        "form_name": form.get("title"),
        "page_url": form.get("page-url"),
        "page_title": form.get("page-title"),
        "conversion_id": conversion,
    }
    return {**{k: v for k, v in found.items() if isinstance(v, str)}, "fields": fields}


def _property(props: dict[str, Any], name: str) -> str | None:
    raw = props.get(name)
    raw = raw.get("value") if isinstance(raw, dict) else raw
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    return str(raw).strip() or None


def _when(raw: object) -> datetime:
    """Epoch milliseconds (legacy records, form submissions) or ISO 8601 (v3 records)."""
    if isinstance(raw, int) or (isinstance(raw, str) and _MILLIS.fullmatch(raw)):
        return _from_millis(raw, "time")
    return parse_time(raw)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


event_types: tuple[str, ...] = (*EVENT_PARSERS, WORKFLOW)

SOURCE = InboundSource(
    name=NAME,
    verify=verify,
    parse=parse,
    content_types=("application/json",),
    max_bytes=4 * MiB,
    secret_env="HUBSPOT_CLIENT_SECRET",
)
