"""The fake org tells `on_applied` what a record holds each time an API write lands on it (what
the end-to-end latency benchmark stamps arrival times with), and only then."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.salesforce.fake_server import FakeSalesforce
from connectors.salesforce.tests.test_client_fake import V, call, token

COLLECTION = f"{V}/composite/sobjects"


@pytest.fixture
def fake():
    server = FakeSalesforce().start()
    yield server
    server.stop()


@pytest.fixture
def told(fake) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    fake.on_applied = lambda email, fields: calls.append((email, fields))
    return calls


def lead(email: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Lead"}, "Email": email, "LastName": "Lee", "Company": "Acme",
            **fields}  # fmt: skip


def test_each_record_created_or_updated_is_told_with_its_fields(fake, told):
    tok = token(fake)
    records = [lead("ann@example.com", Lifecycle_Stage__c="lead"), lead("bo@example.com")]

    status, body, _ = call(fake, "POST", COLLECTION, {"allOrNone": False, "records": records}, tok)
    ann_id = body[0]["id"]
    update = {"attributes": {"type": "Lead"}, "id": ann_id, "Status": "Working - Contacted",
              "Lifecycle_Stage__c": "sales_qualified_lead"}  # fmt: skip
    call(fake, "PATCH", COLLECTION, {"allOrNone": False, "records": [update]}, tok)

    assert status == 200
    assert [email for email, _ in told] == ["ann@example.com", "bo@example.com", "ann@example.com"]
    assert told[0][1]["Lifecycle_Stage__c"] == "lead"
    assert told[0][1]["Status"] == "Open - Not Contacted"  # the org's default, when created
    assert (told[2][1]["Lifecycle_Stage__c"], told[2][1]["Status"]) == (
        "sales_qualified_lead",
        "Working - Contacted",
    )
    assert told[2][1] == fake.leads[ann_id]
    assert told[2][1] is not fake.leads[ann_id]


def test_rejected_records_and_a_persons_edits_are_not_told(fake, told):
    tok = token(fake)
    lead_id = fake.add_lead("ann@example.com")
    fake.person_sets(lead_id, Status="Working - Contacted")

    bad = lead("bo@example.com", Status="No Such Status")
    status, body, _ = call(fake, "POST", COLLECTION, {"allOrNone": False, "records": [bad]}, tok)

    assert status == 200 and body[0]["success"] is False
    assert told == []
