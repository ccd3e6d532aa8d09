"""The payload readers the JSON sources share: loaders, accessors, addresses, vendor times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base.inbound import BadPayload, Parsed, Unusable
from connectors.base.payload import (
    as_dict,
    as_list,
    as_text,
    compact,
    is_email,
    iso_time,
    json_object,
    named_email,
    object_or_none,
    only_address,
    sent_at,
    stripped,
    unusable,
)
from engine.errors import InvalidEvent

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_json_object_names_what_it_expected():
    assert json_object(b'{"a": 1}', "an event") == {"a": 1}
    with pytest.raises(BadPayload) as caught:
        json_object(b"[1]", "a Vendor webhook event")
    assert caught.value.detail == "body must be a JSON object (a Vendor webhook event)"


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe\x00", b"[" * 100_000])
def test_json_object_refuses_what_is_no_json_with_the_parsers_complaint(body):
    with pytest.raises(BadPayload) as caught:
        json_object(body, "an event")
    assert caught.value.detail.startswith("body is not JSON: ")
    with pytest.raises(BadPayload) as caught:
        json_object(body, "an event", not_json="body is not JSON")
    assert caught.value.detail == "body is not JSON"


def test_strict_refuses_nan_and_infinity():
    assert json_object(b'{"a": NaN}', "an event")["a"] != 0  # NaN: lenient by default
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(BadPayload, match="is not JSON"):
            json_object(b'{"a": ' + constant + b"}", "an event", strict=True)
    assert object_or_none('{"a": NaN}', strict=True) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"a": 1}', {"a": 1}), ("[1]", None), ("", None), ("{", None), ("[" * 100_000, None)],
)
def test_object_or_none(text, expected):
    assert object_or_none(text) == expected


def test_unusable_keeps_the_reason_and_the_item():
    assert unusable("no email", {"id": 1}) == Parsed(unusable=[Unusable("no email", {"id": 1})])


def test_accessors_never_raise():
    assert (as_dict({"a": 1}), as_dict([1]), as_list([1]), as_list({"a": 1})) == (
        {"a": 1},
        {},
        [1],
        [],
    )
    assert (as_text(" x "), as_text(1), stripped(" x "), stripped("  "), stripped(1)) == (
        " x ",
        "",
        "x",
        None,
        None,
    )


def test_compact_leaves_out_what_the_payload_did_not_fill():
    properties = {"a": None, "b": {}, "c": 0, "d": "", "e": []}
    assert compact(properties) == {"b": {}, "c": 0, "d": "", "e": []}
    assert compact(properties, drop_empty=True) == {"c": 0, "d": "", "e": []}


def test_addresses():
    assert (is_email(" Ann@Example.com "), is_email("ann"), is_email(None)) == (True, False, False)
    fields = {"Name": "ann@example.com", "Work Email": " Bo@Example.org ", "email2": "x"}
    assert named_email(fields) == " Bo@Example.org "  # as given: the event normalizes it
    assert named_email(fields, lambda name: name == "Name") == "ann@example.com"
    assert named_email({"email": "not an address"}) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["x", 1, None, " Ann@Example.com "], "ann@example.com"),
        (["ann@example.com", "ANN@example.com "], "ann@example.com"),  # one address, twice
        (["ann@example.com", "bo@example.org"], None),  # ambiguous
        (["x", 1], None),
    ],
)
def test_only_address(values, expected):
    assert only_address(values) == expected


def test_iso_time():
    assert iso_time("2026-11-26T10:00:00+01:00") == "2026-11-26T09:00:00Z"
    for raw in (None, "", " ", "yesterday", "2026-11-26T10:00:00", "9999-12-31T23:00:00-05:00"):
        assert iso_time(raw) is None


def test_sent_at():
    assert sent_at("", NOW, "createdAt") == NOW
    assert sent_at("2026-11-26T10:00:00Z", NOW, "createdAt") == datetime(
        2026, 11, 26, 10, tzinfo=UTC
    )
    with pytest.raises(InvalidEvent, match="created_at must be ISO 8601"):
        sent_at("soon", NOW, "created_at")
    with pytest.raises(InvalidEvent) as caught:
        sent_at("9999-12-31T23:00:00-05:00", NOW, "createdAt")
    assert caught.value.detail == "createdAt is out of range: '9999-12-31T23:00:00-05:00'"
