"""One test per fixture in connectors/hubspot/fixtures: the exact events each payload becomes, and
the published signature vectors through the production verifier."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base.inbound import Delivery, Parsed
from connectors.hubspot.inbound import event_types, parse, verify

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WORKFLOW_URL = "https://lifecycle.example.com/webhooks/hubspot"


def parsed(name: str, url: str = WORKFLOW_URL, **query: str) -> Parsed:
    body = (FIXTURES / name).read_bytes()
    return parse(Delivery("hubspot", {}, body, NOW, query=query, url=url))


def events(result: Parsed) -> list[dict]:
    return [event.to_dict() for event in result.events]


def record_event(id_, type_, crm_id, occurred_at, **properties) -> dict:
    return {
        "id": id_,
        "type": type_,
        "email": "",
        "occurred_at": occurred_at,
        "source": "hubspot",
        "properties": properties,
        "crm": "hubspot",
        "crm_id": crm_id,
    }


def vector_delivery(vector: dict, now: datetime) -> Delivery:
    """A delivery carrying a published vector's request."""
    version = vector["version"]
    url = vector.get("received_url") or vector.get("http_uri") or vector.get("uri") or WORKFLOW_URL
    if version == "v3":
        headers = {
            "x-hubspot-signature-v3": vector["expected"],
            "x-hubspot-request-timestamp": vector["timestamp"],
        }
    else:
        headers = {
            "x-hubspot-signature": vector["expected"],
            "x-hubspot-signature-version": version,
        }
    body = (vector.get("request_body") if "request_body" in vector else vector["body"]).encode()
    method = vector.get("http_method") or vector.get("method") or "POST"
    return Delivery("hubspot", headers, body, now, url=url, method=method)


def check_vectors(name: str) -> int:
    document = json.loads((FIXTURES / name).read_text())
    for vector in document["vectors"]:
        stamp = int(vector.get("timestamp", "0")) / 1000
        now = datetime.fromtimestamp(stamp, UTC) + timedelta(seconds=30) if stamp else NOW
        verify(
            vector_delivery(vector, now), document["client_secret"]
        )  # raises when it does not verify
    return len(document["vectors"])


# --- Webhooks API batches ------------------------------------------------------------------------


def test_webhook_batch_docs_example():
    result = parsed("webhook-batch-docs-example.json")
    assert (result.ignored, result.unusable) == (1, [])  # the contact.creation event
    assert events(result) == [
        record_event(
            "hubspot-33-3816279340-1246965-1462216307945-lifecyclestage",
            "crm_stage_changed",
            "1246965",
            "2016-05-02T19:11:47.945000Z",
            value="subscriber",
            crm_value="subscriber",
            changed_by="ACADEMY",
            change_source="ACADEMY",
        )
    ]


def test_webhooks_api_contact_creation_docs_example():
    result = parsed("webhooks-api.contact.creation.docs-example.json")
    assert (result.events, result.ignored, result.unusable) == ([], 1, [])


def test_webhook_contact_creation_v1_signature_body():
    body = (FIXTURES / "webhook-contact-creation-v1-signature-body.json").read_bytes()
    headers = {
        "x-hubspot-signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        "x-hubspot-signature-version": "v1",
    }
    verify(Delivery("hubspot", headers, body, NOW), "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy")
    assert parse(Delivery("hubspot", headers, body, NOW)).ignored == 1


def test_contact_propertyChange__lifecyclestage():
    result = parsed("contact.propertyChange__lifecyclestage.json")
    assert (result.ignored, result.unusable) == (1, [])  # the cleared value
    assert events(result) == [
        record_event(
            "hubspot-62515-1702930155-51-1795687200000-lifecyclestage",
            "crm_stage_changed",
            "51",
            "2026-11-26T10:00:00Z",
            value="marketing_qualified_lead",
            crm_value="marketingqualifiedlead",
            changed_by="userId:52530071",
            change_source="CRM_UI",
        ),
        record_event(
            "hubspot-62515-1702930156-52-1795687260000-lifecyclestage",
            "crm_stage_changed",
            "52",
            "2026-11-26T10:01:00Z",
            value="1024579834",  # a custom stage: kept as HubSpot names it
            crm_value="1024579834",
            changed_by="workflowId:11223344",
            change_source="WORKFLOW",
        ),
    ]


def test_contact_propertyChange__hs_lead_status():
    result = parsed("contact.propertyChange__hs_lead_status.json")
    assert events(result) == [  # sorted by occurredAt: HubSpot does not order a batch
        record_event(
            "hubspot-62515-1702930202-54-1795687440000-hs_lead_status",
            "crm_status_changed",
            "54",
            "2026-11-26T10:04:00Z",
            value="in_progress",
            crm_value="IN_PROGRESS",
            changed_by="INTEGRATION",
            change_source="INTEGRATION",
        ),
        record_event(
            "hubspot-62515-1702930201-51-1795687500000-hs_lead_status",
            "crm_status_changed",
            "51",
            "2026-11-26T10:05:00Z",
            value="attempted_to_contact",
            crm_value="ATTEMPTED_TO_CONTACT",
            changed_by="userId:52530071",
            change_source="CRM_UI",
        ),
    ]


def test_deal_creation__derived():
    assert events(parsed("deal.creation__derived.json")) == [
        record_event(
            "hubspot-62515-2260531-9876543210-1795687200000",
            "deal_created",
            "deal:9876543210",
            "2026-11-26T10:00:00Z",
            deal_id="9876543210",
            changed_by="userId:52530071",
        )
    ]


def test_deal_propertyChange__dealstage():
    result = parsed("deal.propertyChange__dealstage.json")
    assert result.ignored == 1  # the amount change
    summary = [(e["type"], e["crm_id"], e["properties"]["deal_stage"]) for e in events(result)]
    assert summary == [
        ("deal_stage_changed", "deal:9876543210", "contractsent"),
        ("deal_won", "deal:9876543210", "closedwon"),
        ("deal_lost", "deal:9876543211", "closedlost"),
    ]
    assert events(result)[1] == record_event(
        "hubspot-62515-2260602-9876543210-1795694400000-dealstage",
        "deal_won",
        "deal:9876543210",
        "2026-11-26T12:00:00Z",
        deal_id="9876543210",
        deal_stage="closedwon",
        changed_by="userId:52530071",
    )


def test_object_propertyChange__contact_lifecyclestage():
    result = parsed("object.propertyChange__contact_lifecyclestage.json")
    assert result.ignored == 1  # objectTypeId 0-2 is a company
    assert events(result) == [
        record_event(
            "hubspot-62515-3011-51-1795687200000-lifecyclestage",
            "crm_stage_changed",
            "51",
            "2026-11-26T10:00:00Z",
            value="sales_qualified_lead",
            crm_value="salesqualifiedlead",
            changed_by="userId:52530071",
            change_source="CRM_UI",
        )
    ]


def test_object_creation__deal():
    assert events(parsed("object.creation__deal.json")) == [
        record_event(
            "hubspot-62515-3021-9876543212-1795687200000",
            "deal_created",
            "deal:9876543212",
            "2026-11-26T10:00:00Z",
            deal_id="9876543212",
            changed_by="userId:52530071",
        )
    ]


# --- workflow "Send a webhook" posts ------------------------------------------------------------


def test_workflow_webhook_contact_legacy_format():
    result = parsed("workflow-webhook-contact-legacy-format.json")
    (event,) = events(result)
    assert event == {
        "id": event["id"],
        "type": "form_submitted",
        "email": "perf_user_970@test.com",
        "occurred_at": "2012-01-03T23:30:23Z",  # the form submission's timestamp
        "source": "hubspot",
        "properties": {
            "form": "762987228e694ef19530f58da2db5f63",
            "form_name": "testform",
            "page_title": "testform",
            "conversion_id": "2e137f47a86e48798322d47f6f529a93",
            "fields": {  # the property versions written by that submission
                "firstname": "perf_user_970",
                "lastname": "perf_user_970",
                "ipaddress": "unknown",
            },
        },
        "crm": "hubspot",
        "crm_id": "71",
    }
    assert re.fullmatch(r"hubspot-wf-[0-9a-f]{40}", event["id"])
    assert events(parsed("workflow-webhook-contact-legacy-format.json"))[0]["id"] == event["id"]
    other = parsed("workflow-webhook-contact-legacy-format.json", event="meeting_booked")
    (meeting,) = events(other)
    assert (meeting["type"], meeting["properties"]) == ("meeting_booked", {})
    assert meeting["occurred_at"] == "2013-04-16T01:14:51.080000Z"  # lastmodifieddate
    assert meeting["id"] != event["id"]


def test_workflow__v3_object():
    (event,) = events(parsed("workflow__v3_object.json"))
    assert {k: v for k, v in event.items() if k != "id"} == {
        "type": "form_submitted",
        "email": "ann.lee@example.com",
        "occurred_at": "2026-11-26T10:00:00Z",  # recent_conversion_date
        "source": "hubspot",
        "properties": {"form_name": "Demo request: Contact us", "fields": {}},
        "crm": "hubspot",
        "crm_id": "151",
    }


# --- signature vectors ---------------------------------------------------------------------------


def test_signature_test_vectors():
    assert check_vectors("signature-test-vectors.json") == 8


def test_signature_vectors():
    assert check_vectors("signature-vectors.json") == 5


def test_signature_vectors_derived():
    assert check_vectors("signature-vectors-derived.json") == 3


# --- every fixture is tested, every declared type has a fixture --------------------------------


INBOUND_FIXTURES = (
    "webhook-batch-docs-example",
    "webhooks-api.contact.creation.docs-example",
    "webhook-contact-creation-v1-signature-body",
    "workflow-webhook-contact-legacy-format",
    "signature-test-vectors",
    "signature-vectors",
    "signature-vectors-derived",
)
"""Published inbound payloads; derived ones are named `<event type>__<variant>.json`. (The folder is
shared with the HubSpot client, whose API fixtures its own tests cover.)"""


def test_every_fixture_has_its_test_and_every_event_type_a_fixture():
    derived = [p.stem for p in FIXTURES.glob("*__*.json")]
    names = [*INBOUND_FIXTURES, *derived]
    assert all((FIXTURES / f"{n}.json").is_file() for n in names)
    missing = [n for n in names if f"test_{re.sub(r'[^0-9A-Za-z_]', '_', n)}" not in globals()]
    assert missing == []
    stems = {n.partition("__")[0] for n in names}
    assert [t for t in event_types if t not in stems] == []


@pytest.mark.parametrize(("body", "unusable"), [(b"[]", 0), (b"[1, null]", 2)])
def test_empty_or_odd_batches_are_still_answered(body, unusable):
    result = parse(Delivery("hubspot", {}, body, NOW))
    assert (result.events, len(result.unusable)) == ([], unusable)
