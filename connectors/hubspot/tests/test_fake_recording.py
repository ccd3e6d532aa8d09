"""The fake HubSpot tells `on_applied` what a contact holds each time an API write lands on it
(what the end-to-end latency benchmark stamps arrival times with), and only then."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from connectors.hubspot.fake_server import FakeHubSpot

UPSERT = "/crm/v3/objects/contacts/batch/upsert"
UPDATE = "/crm/v3/objects/contacts/batch/update"


@pytest.fixture
def fake():
    with FakeHubSpot(rate=None) as server:
        yield server


@pytest.fixture
def told(fake) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    fake.on_applied = lambda email, props: calls.append((email, props))
    return calls


def post(fake: FakeHubSpot, path: str, inputs: list[dict]) -> int:
    request = urllib.request.Request(
        fake.base_url + path,
        json.dumps({"inputs": inputs}).encode(),
        {"Authorization": f"Bearer {fake.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def upsert(email: str, **props: str) -> dict:
    return {"id": email, "idProperty": "email", "properties": props}


def test_each_contact_of_a_batch_write_is_told_with_what_it_now_holds(fake, told):
    status = post(
        fake,
        UPSERT,
        [upsert("ann@example.com", lifecyclestage="lead"), upsert("BO@example.com")],
    )

    assert status == 200
    assert [email for email, _ in told] == ["ann@example.com", "bo@example.com"]
    assert told[0][1]["lifecyclestage"] == "lead"
    assert told[0][1] == fake.contact("ann@example.com")


def test_the_properties_told_are_a_copy_taken_when_the_write_landed(fake, told):
    post(fake, UPSERT, [upsert("ann@example.com", lifecyclestage="lead")])
    record_id = told[0][1]["hs_object_id"]

    props = {"lifecyclestage": "salesqualifiedlead", "hs_lead_status": "NEW"}
    post(fake, UPDATE, [{"id": record_id, "properties": props}])

    assert [props["lifecyclestage"] for _, props in told] == ["lead", "salesqualifiedlead"]
    assert "hs_lead_status" not in told[0][1]
    assert told[1][1]["hs_lead_status"] == "NEW"


def test_a_stage_kept_by_hubspot_is_told_as_held(fake, told):
    post(fake, UPSERT, [upsert("ann@example.com", lifecyclestage="customer")])

    post(fake, UPSERT, [upsert("ann@example.com", lifecyclestage="lead")])

    assert [props["lifecyclestage"] for _, props in told] == ["customer", "customer"]


def test_refused_writes_and_a_persons_edits_are_not_told(fake, told):
    fake.person_sets("ann@example.com", lifecyclestage="lead")
    fake.throttle_next(1)

    assert post(fake, UPSERT, [upsert("ann@example.com", lifecyclestage="customer")]) == 429
    assert post(fake, UPSERT, [upsert("ann@example.com", lifecyclestage="no-such-stage")]) == 207
    assert told == []
