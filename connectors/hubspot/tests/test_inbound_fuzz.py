"""Whatever arrives, parse and verify return (a Parsed, None) or refuse with BadPayload or
SignatureError: never any other exception."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base.inbound import BadPayload, Delivery, Parsed, SignatureError
from connectors.hubspot.inbound import EVENT_PARSERS, parse, verify

FIXTURES = Path(__file__).parents[1] / "fixtures"
INBOUND = sorted(p for p in FIXTURES.glob("*.json") if "__" in p.name or "webhook" in p.name)
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "0",
            "1795687200000",
            "2026-11-26T10:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "closedwon",
            "0-1",
            "0-3",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
batch_items = st.fixed_dictionaries(
    {},
    optional={
        "subscriptionType": st.sampled_from([*EVENT_PARSERS, "contact.creation"]) | scalars,
        "eventType": scalars,
        "objectId": scalars,
        "objectTypeId": st.sampled_from(["0-1", "0-3", "0-2"]) | json_values,
        "occurredAt": scalars,
        "eventId": json_values,
        "portalId": scalars,
        "propertyName": st.sampled_from(["lifecyclestage", "hs_lead_status", "dealstage"])
        | scalars,
        "propertyValue": scalars,
        "changeSource": json_values,
        "sourceId": json_values,
    },
)
properties = st.dictionaries(
    st.sampled_from(["email", "lastmodifieddate", "hs_object_id", "recent_conversion_date"]),
    scalars | st.fixed_dictionaries({"value": scalars, "versions": json_values}),
)
records = st.fixed_dictionaries(
    {},
    optional={
        "vid": scalars,
        "canonical-vid": scalars,
        "objectId": scalars,
        "id": scalars,
        "properties": properties | json_values,
        "form-submissions": st.lists(
            st.fixed_dictionaries(
                {}, optional={"timestamp": scalars, "conversion-id": scalars, "title": scalars}
            ),
            max_size=3,
        )
        | json_values,
        "identity-profiles": json_values,
    },
)


def mutated(data: st.DataObject) -> bytes:
    raw = data.draw(st.sampled_from(INBOUND)).read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    if data.draw(st.booleans()):
        return raw[:cut]
    return raw[:cut] + data.draw(st.binary(min_size=1, max_size=4)) + raw[cut + 1 :]


def parse_only(body: bytes, query: dict[str, str] | None = None) -> None:
    try:
        result = parse(Delivery("hubspot", {}, body, NOW, query=query or {}, url="http://x/"))
    except BadPayload:
        return
    assert isinstance(result, Parsed)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(body):
    parse_only(body)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_json(value):
    parse_only(json.dumps(value).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(batch_items | json_values, max_size=5))
def test_random_batches(items):
    parse_only(json.dumps(items).encode())


@settings(max_examples=200, deadline=None)
@given(records, st.text(max_size=12))
def test_random_workflow_records(record, event):
    parse_only(json.dumps(record).encode(), {"event": event})


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_and_mutated_fixtures(data):
    parse_only(mutated(data))


header_names = st.sampled_from(
    [
        "x-hubspot-signature-v3",
        "x-hubspot-request-timestamp",
        "x-hubspot-signature",
        "x-hubspot-signature-version",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(header_names, st.text(max_size=60)),
    body=st.binary(max_size=200),
    url=st.text(max_size=60),
    method=st.sampled_from(["POST", "GET", ""]),
)
def test_verify_only_passes_or_refuses(headers, body, url, method):
    delivery = Delivery("hubspot", headers, body, NOW, url=url, method=method)
    with contextlib.suppress(SignatureError):
        verify(delivery, "a-secret")
