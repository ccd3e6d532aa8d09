"""One test per Outbound Message fixture: the exact events each notification becomes, and the
acknowledgement Salesforce needs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base.inbound import Answer, Delivery, Parsed, SignatureError
from connectors.salesforce.inbound import (
    call_outcome,
    event_types,
    parse,
    read_xml,
    respond,
    verify,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ORG = "00D5g000004TuVwEAK"
USER = "0055g00000UvWxYAAV"
SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"


def parsed(name: str) -> Parsed:
    return parse(Delivery("salesforce", {}, (FIXTURES / name).read_bytes(), NOW))


def events(result: Parsed) -> list[dict]:
    return [event.to_dict() for event in result.events]


def sf_event(id_, type_, email, crm_id, occurred_at, **properties) -> dict:
    return {
        "id": id_,
        "type": type_,
        "email": email,
        "occurred_at": occurred_at,
        "source": "salesforce",
        "properties": properties,
        "crm": "salesforce",
        "crm_id": crm_id,
    }


def test_Lead__status():
    result = parsed("Lead__status.xml")
    assert (result.ignored, result.unusable) == (0, [])
    assert events(result) == [
        sf_event(
            "04l5g00000MnOpQAAV",
            "crm_status_changed",
            "ann.lee@example.com",
            "00Q5g00000AbCdEEAV",
            "2026-11-26T10:00:00Z",
            crm_object="Lead",
            changed_by=USER,
            value="attempted_to_contact",
            crm_value="Working - Contacted",
        ),
        sf_event(
            "04l5g00000MnOpRAAV",
            "crm_status_changed",
            "bo@example.com",
            "00Q5g00000AbCdFEAV",
            "2026-11-26T10:05:00Z",
            crm_object="Lead",
            changed_by=USER,
            value="Closed - Not Converted",  # no obvious engine status: kept as the org names it
            crm_value="Closed - Not Converted",
        ),
    ]


def test_Lead__stage_and_status():
    """Stage first (a status applies only at sales_qualified_lead); two ids, one notification."""
    stage, status = events(parsed("Lead__stage_and_status.xml"))
    common = ("ann.lee@example.com", "00Q5g00000AbCdEEAV", "2026-11-26T11:00:00Z")
    assert stage == sf_event(
        "04l5g00000MnOpSAAV",
        "crm_stage_changed",
        *common,
        crm_object="Lead",
        changed_by=USER,
        value="sales_qualified_lead",
        crm_value="Sales Qualified Lead",
    )
    assert status == sf_event(
        "04l5g00000MnOpSAAV:status",
        "crm_status_changed",
        *common,
        crm_object="Lead",
        changed_by=USER,
        value="new",
        crm_value="Open - Not Contacted",
    )


def test_Contact__lifecycle_stage():
    assert events(parsed("Contact__lifecycle_stage.xml")) == [
        sf_event(
            "04l5g00000MnOpTAAV",
            "crm_stage_changed",
            "",  # Email is nil: the worker resolves the contact by its id
            "0035g00000XyZabAAF",
            "2026-11-27T09:30:00Z",
            crm_object="Contact",
            changed_by=USER,
            value="customer",
            crm_value="customer",
        )
    ]


def test_Task__call():
    result = parsed("Task__call.xml")
    assert result.ignored == 1  # the plain to-do task
    assert events(result) == [
        sf_event(
            "salesforce-task-00T5g00000QrStuEAF",
            "call_logged",
            "",
            "00Q5g00000AbCdEEAV",
            "2026-11-26T14:00:00Z",
            task_id="00T5g00000QrStuEAF",
            subject="Call",
            outcome="left_voicemail",
            call_disposition="Left Voicemail",
            call_type="Outbound",
            duration_seconds=42,
        ),
        sf_event(
            "salesforce-task-00T5g00000QrStvEAF",
            "call_logged",
            "",
            "0035g00000XyZabAAF",
            "2026-11-27T09:00:00Z",
            task_id="00T5g00000QrStvEAF",
            subject="Discovery call",
            outcome="connected",
            call_disposition="Spoke with decision maker",
            call_type="Outbound",
            duration_seconds=600,
        ),
    ]


def test_Task__email():
    assert events(parsed("Task__email.xml")) == [
        sf_event(
            "salesforce-task-00T5g00000QrStxEAF",
            "email_sent",
            "",
            "00Q5g00000AbCdEEAV",
            "2026-11-26T12:00:00Z",
            task_id="00T5g00000QrStxEAF",
            subject="Email: Following up on your demo request",
        )
    ]


def test_om_contact_minimal_nil_session():
    """The published minimal message: a Contact with only its Id (nothing to map), and an org id
    that is a placeholder, so it never verifies."""
    body = (FIXTURES / "om_contact_minimal_nil_session.xml").read_bytes()
    result = parsed("om_contact_minimal_nil_session.xml")
    assert (result.events, result.ignored, result.unusable) == ([], 1, [])
    delivery = Delivery("salesforce", {}, body, NOW, config={"salesforce_org_id": ORG})
    with pytest.raises(SignatureError, match="someOrganizationId"):
        verify(delivery, None)


def test_om_ack_response():
    status, body, content_type = respond(Answer(1, 0, 0, 0, ["x"]))
    assert (status, content_type) == (200, "text/xml; charset=utf-8")
    ours, published = (
        read_xml(body.encode()),
        read_xml((FIXTURES / "om_ack_response.xml").read_bytes()),
    )
    path = f"{SOAP}Body/{OUTBOUND}notificationsResponse/{OUTBOUND}Ack"
    assert (
        (ours.tag, ours.find(path).text)
        == (published.tag, published.find(path).text)
        == (
            f"{SOAP}Envelope",
            "true",
        )
    )


def test_om_wsdl_notifications_schema_excerpt():
    """The WSDL's notificationsResponse has one boolean Ack: what respond() sends."""
    schema = read_xml((FIXTURES / "om_wsdl_notifications_schema_excerpt.xml").read_bytes())
    xsd = "{http://www.w3.org/2001/XMLSchema}"
    elements = {e.get("name"): e for e in schema.iter(f"{xsd}element")}
    assert elements["Ack"].get("type") == "xsd:boolean"
    assert elements["Notification"].get("maxOccurs") == "100"
    assert "notificationsResponse" in elements


@pytest.mark.parametrize(
    ("disposition", "outcome"),
    [
        ("No Answer", "no_answer"),
        ("no-answer", "no_answer"),
        ("Not connected", "no_answer"),
        ("Could not reach", "no_answer"),
        ("Left Voicemail", "left_voicemail"),
        ("No answer - left voicemail", "left_voicemail"),
        ("Busy", "busy"),
        ("Wrong Number", "wrong_number"),
        ("Connected", "connected"),
        ("Spoke with decision maker", "connected"),
        ("Meeting set", "Meeting set"),  # nothing to go by: the org's own text
    ],
)
def test_call_dispositions_map_to_outcomes(disposition, outcome):
    assert call_outcome(disposition) == outcome


def test_every_fixture_has_its_test_and_every_event_type_a_fixture():
    names = [p.stem for p in FIXTURES.glob("*.xml")]  # api/ belongs to the Salesforce client
    missing = [n for n in names if f"test_{re.sub(r'[^0-9A-Za-z_]', '_', n)}" not in globals()]
    assert missing == []
    stems = {n.partition("__")[0] for n in names}
    assert [t for t in event_types if t not in stems] == []
