"""Reading vendor payloads: JSON bodies, typed accessors that never raise, email addresses among
form answers, vendor times.

The sources decide which field wins (the order they look for the respondent's address, which time
stands for the event); these are the pieces they decide with. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from connectors.base.inbound import BadPayload, Parsed, Unusable
from engine.errors import InvalidEvent
from engine.model import format_time, normalize_email, parse_time

# --- JSON -----------------------------------------------------------------------------------------


def loads(raw: bytes | str, *, strict: bool = False) -> Any:
    """`json.loads`; `strict` also refuses NaN and ±Infinity, which are not JSON."""
    return json.loads(raw, parse_constant=_no_constant if strict else None)


def json_object(
    raw: bytes | str, what: str, *, strict: bool = False, not_json: str | None = None
) -> dict[str, Any]:
    """The body as a JSON object, else BadPayload: `not_json` (default: the parser's complaint)
    when it is no JSON, "body must be a JSON object (<what>)" when it is JSON but no object."""
    try:
        body = loads(raw, strict=strict)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadPayload(not_json or f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadPayload(f"body must be a JSON object ({what})")
    return body


def object_or_none(text: bytes | str, *, strict: bool = False) -> dict[str, Any] | None:
    """A JSON object embedded in a field, or None when it is no JSON or no object."""
    try:
        value = loads(text, strict=strict)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def unusable(reason: str, item: object) -> Parsed:
    """A delivery whose one item is mapped but cannot be used: kept for inspection."""
    return Parsed(unusable=[Unusable(reason, item)])


# --- typed accessors ------------------------------------------------------------------------------


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_text(value: object) -> str:
    """The value if it is a string, else ""."""
    return value if isinstance(value, str) else ""


def stripped(value: object) -> str | None:
    """The value trimmed if it is a string with something in it, else None."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def compact(properties: Mapping[str, object], *, drop_empty: bool = False) -> dict[str, object]:
    """Properties the payload did not fill are left out rather than written as null (and, with
    `drop_empty`, rather than as {})."""
    return {k: v for k, v in properties.items() if v is not None and not (drop_empty and v == {})}


# --- email addresses ------------------------------------------------------------------------------


def is_email(value: object) -> bool:
    """Whether the value is an address the engine accepts as a contact's identity."""
    try:
        normalize_email(value)
    except InvalidEvent:
        return False
    return True


def says_email(name: str) -> bool:
    return "email" in name.lower()


def named_email(
    fields: Mapping[str, object], named: Callable[[str], bool] = says_email
) -> str | None:
    """The first value that is an address under a name `named` accepts (default: a name that
    says email, in any case), as given."""
    for name, value in fields.items():
        if named(name) and isinstance(value, str) and is_email(value):
            return value
    return None


def only_address(values: Iterable[object]) -> str | None:
    """The one address among the values (trimmed, lower-cased); None when none or several."""
    found = {
        value.strip().lower() for value in values if isinstance(value, str) and is_email(value)
    }
    return found.pop() if len(found) == 1 else None


# --- times ----------------------------------------------------------------------------------------


def iso_time(raw: object) -> str | None:
    """A vendor time as UTC ISO 8601 with a Z, or None when absent or not a valid time."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        return format_time(parse_time(raw))
    except (InvalidEvent, OverflowError):
        return None


def sent_at(raw: str, now: datetime, what: str) -> datetime:
    """When the vendor says the event happened (`raw`, a field named `what`); the delivery time
    when it says nothing. InvalidEvent when it is no time or one UTC cannot write."""
    if not raw:
        return now
    value = parse_time(raw, what)
    try:
        format_time(value)
    except OverflowError:
        raise InvalidEvent(f"{what} is out of range: {raw!r}") from None
    return value
