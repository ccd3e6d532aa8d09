"""The HubSpot client against the fake HubSpot on loopback (real HTTP) and a real Redis."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from connectors.hubspot import client as hubspot
from connectors.hubspot.client import build_client
from connectors.hubspot.fake_server import FakeHubSpot, fixture
from engine.config import ConfigError, Settings
from engine.model import ContactState, Vocabulary

SHIPPED = yaml.safe_load(Path("rules.yaml").read_text())["crm"]["hubspot"]
ENV = {"HUBSPOT_RATE_LIMIT": "100/10s"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake():
    with FakeHubSpot(rate=None) as server:
        yield server


@pytest.fixture
def make(fake, redis_client):
    made = []

    def build(config=SHIPPED, **options):
        settings = Settings(hubspot_access_token=fake.token, hubspot_api_base=fake.base_url)
        options.setdefault("env", ENV)
        client = build_client(settings, redis_client, config, sleep=lambda s: None, **options)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def state(email, stage, status=None, version=1):
    return ContactState(email, stage=stage, status=status, version=version)


def writes(fake):
    return fake.calls("/batch/update") + fake.calls("/batch/upsert")


# --- configuration -------------------------------------------------------------------------


def test_the_shipped_mapping_is_valid_and_maps_every_status(make):
    client = make()
    assert client.mapping.status_values["future_opportunity"] == "OPEN"
    assert client.mapping.stage_values["marketing_qualified_lead"] == "marketingqualifiedlead"


@pytest.mark.parametrize(
    ("config", "env", "named"),
    [
        ({}, ENV, "future_opportunity"),  # HubSpot has no default option for it
        ({**SHIPPED, "status_field": "x"}, ENV, "status_field"),
        ({**SHIPPED, "stage_values": {"champion": "x"}}, ENV, "champion"),
        ({**SHIPPED, "status_values": {"new": ""}}, ENV, "status_values.new"),
        ({**SHIPPED, "stage_property": "Life Cycle"}, ENV, "stage_property"),
        (SHIPPED, {"HUBSPOT_RATE_LIMIT": "fast"}, "HUBSPOT_RATE_LIMIT"),
    ],
)
def test_a_bad_mapping_is_a_configuration_error_naming_it(make, config, env, named):
    with pytest.raises(ConfigError, match=named):
        make(config, env=env)


def test_custom_stages_need_a_hubspot_value(make):
    vocab = Vocabulary(stages=("lead", "trial", "customer"))
    with pytest.raises(ConfigError, match="no HubSpot value for stage trial"):
        make(SHIPPED, vocab=vocab)
    client = make({**SHIPPED, "stage_values": {"trial": "opportunity"}}, vocab=vocab)
    assert client.mapping.stage_values["trial"] == "opportunity"


def test_no_token_is_a_configuration_error(redis_client):
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN"):
        build_client(Settings(), redis_client, SHIPPED)


def test_build_calls_nobody_and_the_first_push_reads_the_options(make, fake):
    client = make()
    assert fake.requests == []
    client.push([state("ann@example.com", "lead")], {}, {})
    paths = [r["path"] for r in fake.requests[:2]]
    assert paths == [
        "/crm/v3/properties/contacts/lifecyclestage",
        "/crm/v3/properties/contacts/hs_lead_status",
    ]
    client.push([state("ann@example.com", "lead")], {}, {})
    assert len(fake.calls("/lifecyclestage")) == 1  # cached


def test_a_mapping_to_a_missing_option_dead_letters_with_the_reason_until_fixed(make, fake):
    fake.set_options("hs_lead_status", ["NEW", "ATTEMPTED_TO_CONTACT", "CONNECTED", "OPEN_DEAL",
                                        "UNQUALIFIED", "BAD_TIMING"])  # fmt: skip
    clock = Clock()
    client = make(clock=clock)
    (result,) = client.push([state("ann@example.com", "lead")], {}, {})
    assert not result.ok and not result.retryable
    assert "hs_lead_status has no option OPEN (status future_opportunity)" in result.error
    assert "crm.hubspot.status_values" in result.error
    assert writes(fake) == []
    fake.set_options("hs_lead_status", ["NEW", "OPEN", "ATTEMPTED_TO_CONTACT", "CONNECTED",
                                        "OPEN_DEAL", "UNQUALIFIED", "BAD_TIMING"])  # fmt: skip
    assert not client.push([state("ann@example.com", "lead")], {}, {})[0].ok  # not re-read yet
    clock.now += hubspot.CONFIG_RETRY
    assert client.push([state("ann@example.com", "lead")], {}, {})[0].ok


def test_a_missing_property_is_a_configuration_error(make):
    client = make({**SHIPPED, "status_property": "lead_status_custom"})
    (result,) = client.push([state("ann@example.com", "lead")], {}, {})
    assert "status_property: HubSpot has no contact property 'lead_status_custom'" in result.error


# --- what is written -----------------------------------------------------------------------


def test_new_contacts_are_upserted_by_email_and_their_ids_learned(make, fake):
    client = make()
    results = client.push(
        [state("ann@example.com", "lead"), state("bo@example.com", "marketing_qualified_lead")],
        {},
        {"ann@example.com": {"first_name": "Ann", "company": "Acme Solar"}},
    )
    assert [r.ok for r in results] == [True, True]
    (upsert,) = fake.calls("/batch/upsert")
    first = upsert["body"]["inputs"][0]
    assert (first["id"], first["idProperty"]) == ("ann@example.com", "email")
    ann = fake.contact("ann@example.com")
    assert (ann["lifecyclestage"], ann["firstname"]) == ("lead", "Ann")
    assert ann["company"] == "Acme Solar"
    assert results[0].crm_id == ann["hs_object_id"]
    assert fake.contact("bo@example.com")["lifecyclestage"] == "marketingqualifiedlead"


def test_known_contacts_are_updated_by_record_id_and_unchanged_ones_not_at_all(make, fake):
    crm_id = fake.person_sets("ann@example.com", lifecyclestage="lead")
    client = make()
    ann = state("ann@example.com", "sales_qualified_lead", "new")
    (result,) = client.push([ann], {"ann@example.com": crm_id}, {})
    assert (result.ok, result.crm_id) == (True, crm_id)
    (update,) = fake.calls("/batch/update")
    assert update["body"]["inputs"][0]["id"] == crm_id
    assert update["body"]["inputs"][0]["properties"] == {
        "lifecyclestage": "salesqualifiedlead",
        "hs_lead_status": "NEW",
    }
    client.push([ann], {"ann@example.com": crm_id}, {})
    assert len(writes(fake)) == 1  # HubSpot already agrees: read only


def test_a_known_id_is_trusted_over_the_email_when_the_email_changed_in_hubspot(make, fake):
    crm_id = fake.person_sets("ann@example.com", lifecyclestage="lead")
    fake.person_sets("ann@example.com", email="ann.lee@example.com")
    client = make()
    (result,) = client.push([state("ann@example.com", "customer")], {"ann@example.com": crm_id}, {})
    assert result.crm_id == crm_id
    assert fake.contacts[crm_id]["properties"]["lifecyclestage"] == "customer"
    assert fake.contact("ann@example.com") is None  # no duplicate created


def test_status_is_written_only_at_sales_qualified_lead(make, fake):
    fake.person_sets("cy@example.com", lifecyclestage="lead", hs_lead_status="IN_PROGRESS")
    client = make()
    client.push(
        [
            state("ann@example.com", "marketing_qualified_lead"),
            state("bo@example.com", "sales_qualified_lead", "future_opportunity"),
            state("cy@example.com", "opportunity", "open_deal"),  # past SQL: frozen
        ],
        {},
        {},
    )
    assert "hs_lead_status" not in fake.contact("ann@example.com")
    assert fake.contact("bo@example.com")["hs_lead_status"] == "OPEN"
    cy = fake.contact("cy@example.com")
    assert (cy["lifecyclestage"], cy["hs_lead_status"]) == ("opportunity", "IN_PROGRESS")
    assert fake.sent("cy@example.com", "hs_lead_status") == []


def test_a_stage_hubspot_holds_ahead_is_never_written_back_and_is_reported(make, fake):
    fake.person_sets("ann@example.com", lifecyclestage="customer", hs_lead_status="CONNECTED")
    client = make()
    (result,) = client.push([state("ann@example.com", "sales_qualified_lead", "new")], {}, {})
    assert result.ok
    assert result.seen == "stage customer set in HubSpot, ahead of salesqualifiedlead: left as is"
    assert writes(fake) == []
    assert fake.contact("ann@example.com")["hs_lead_status"] == "CONNECTED"


def test_a_backward_write_hubspot_refuses_silently_is_reported(make, fake):
    crm_id = fake.person_sets("ann@example.com", lifecyclestage="lead")

    def person_moves_ahead(server):  # between our read and our write
        server.person_sets("ann@example.com", lifecyclestage="opportunity")
        server.on_write = None

    fake.on_write = person_moves_ahead
    client = make()
    (result,) = client.push([state("ann@example.com", "marketing_qualified_lead")], {}, {})
    assert result.ok and result.crm_id == crm_id
    assert result.seen == (
        "HubSpot kept stage opportunity (refused marketingqualifiedlead: stages only move "
        "forward there)"
    )
    assert fake.contact("ann@example.com")["lifecyclestage"] == "opportunity"


def test_emails_for_reads_the_ids_hubspot_knows(make, fake):
    ann = fake.person_sets("Ann@Example.com", lifecyclestage="lead")
    bo = fake.person_sets("bo@example.com")
    client = make()
    assert client.emails_for([ann, bo, "99999", "not-an-id", ann]) == {
        ann: "ann@example.com",
        bo: "bo@example.com",
    }
    (read,) = fake.calls("/batch/read")
    assert read["body"]["properties"] == ["email"] and "idProperty" not in read["body"]


# --- per-contact failures ------------------------------------------------------------------


def test_a_207_fails_only_the_contacts_hubspot_refused(make, fake):
    fake.invalid["bo@example.com"] = "lifecyclestage"
    client = make()
    results = client.push(
        [state("ann@example.com", "lead"), state("bo@example.com", "lead")], {}, {}
    )
    assert results[0].ok and fake.contact("ann@example.com")["lifecyclestage"] == "lead"
    bo = results[1]
    assert (bo.ok, bo.retryable) == (False, False)
    assert bo.error.startswith("VALIDATION_ERROR: Property values were not valid: lifecyclestage")
    assert "lead was not one of the allowed options" in bo.error and "INVALID_OPTION" in bo.error
    assert fake.calls("/batch/upsert")[0]["status"] == 207


def test_an_option_removed_after_the_check_fails_those_contacts_only(make, fake):
    client = make()
    client.push([state("ann@example.com", "lead")], {}, {})  # options read and cached
    fake.set_options("hs_lead_status", ["NEW", "CONNECTED"])  # an admin edits them
    results = client.push(
        [
            state("ann@example.com", "sales_qualified_lead", "new"),
            state("bo@example.com", "sales_qualified_lead", "future_opportunity"),
        ],
        {},
        {},
    )
    assert results[0].ok
    assert not results[1].ok and "OPEN was not one of the allowed options" in results[1].error


def test_a_batch_refused_whole_is_split_until_the_bad_contact_is_alone(make, fake):
    fake.whole_batch_validation = True
    fake.invalid["c5@example.com"] = "lifecyclestage"
    client = make()
    contacts = [state(f"c{i}@example.com", "lead") for i in range(8)]
    results = client.push(contacts, {}, {})
    assert [r.email for r in results if not r.ok] == ["c5@example.com"]
    assert "INVALID_OPTION" in results[5].error and not results[5].retryable
    assert len(fake.calls("/batch/upsert")) == 7  # 8 -> 4+4 -> 2+2 -> 1+1
    assert all(fake.contact(c.email) for c in contacts if c.email != "c5@example.com")


# --- transient faults ----------------------------------------------------------------------


def test_a_short_429_storm_is_ridden_out_within_the_call(make, fake):
    fake.throttle_next(2)
    client = make()
    started = time.monotonic()
    (result,) = client.push([state("ann@example.com", "lead")], {}, {})
    assert result.ok
    assert len(fake.calls(status=429)) == 2
    assert time.monotonic() - started >= 1.5  # every worker paused (no Retry-After: 1 s each)


def test_a_long_429_storm_leaves_the_contacts_retryable(make, fake):
    fake.retry_after = "0.05"  # keeps the test short; HubSpot's recorded 429s carry none
    client = make()
    client.stage_order()
    fake.throttle_next(10)
    (result,) = client.push([state("ann@example.com", "lead")], {}, {})
    assert (result.ok, result.retryable) == (False, True)
    assert "ten_secondly_rolling" in result.error


def test_a_5xx_burst_is_retried(make, fake):
    fake.fail_next(3, 502)
    (result,) = make().push([state("ann@example.com", "lead")], {}, {})
    assert result.ok and len(fake.calls(status=502)) == 3


def test_a_daily_limit_stops_calls_for_a_while_and_stays_retryable(make, fake):
    clock = Clock()
    client = make(clock=clock)
    client.stage_order()
    fake.throttle_next(1, policy="DAILY")
    (result,) = client.push([state("ann@example.com", "lead")], {}, {})
    assert (result.ok, result.retryable) == (False, True)
    assert "daily limit" in result.error
    before = len(fake.requests)
    assert client.push([state("ann@example.com", "lead")], {}, {})[0].retryable
    assert len(fake.requests) == before  # held back: no call
    clock.now += hubspot.DAILY_HOLD
    assert client.push([state("ann@example.com", "lead")], {}, {})[0].ok


def test_a_revoked_token_is_a_dead_letter_without_the_token_in_it(make, fake):
    client = make()
    client.push([state("ann@example.com", "lead")], {}, {})
    fake.revoked = True
    (result,) = client.push([state("ann@example.com", "customer")], {}, {})
    assert (result.ok, result.retryable) == (False, False)
    assert "401" in result.error and "Authentication credentials not found" in result.error
    assert fake.token not in result.error


def test_workers_share_one_budget_per_account(fake, redis_client):
    fake.rate = (6, 1.0)
    settings = Settings(hubspot_access_token=fake.token, hubspot_api_base=fake.base_url)
    env = {"HUBSPOT_RATE_LIMIT": "6/1s"}
    one, two = (build_client(settings, redis_client, SHIPPED, env=env) for _ in range(2))
    started = time.monotonic()
    for i in range(4):
        for client in (one, two):
            client.emails_for([str(1000 + i)])
    assert time.monotonic() - started >= 1.0  # 8 calls on a budget of 6 per second
    assert fake.calls(status=429) == []
    one.close()
    two.close()


# --- the fake is HubSpot's shape -----------------------------------------------------------


def call(fake, method, path, body=None, token=None):
    request = urllib.request.Request(
        fake.base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": f"Bearer {token or fake.token}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_fake_401_429_and_property_bodies_are_the_recorded_ones(fake):
    status, _, body = call(fake, "GET", "/crm/v3/properties/contacts/lifecyclestage", token="x")
    expected = fixture("error-401-invalid-authentication-observed.json")["body"]
    assert status == 401 and body.keys() == expected.keys()
    assert body["message"] == expected["message"]
    status, _, body = call(fake, "GET", "/crm/v3/properties/contacts/hs_lead_status")
    recorded = fixture("property-hs_lead_status-definition-recorded.json")["property"]
    assert status == 200 and body == recorded
    fake.throttle_next(1)
    status, headers, body = call(fake, "GET", "/crm/v3/properties/contacts/lifecyclestage")
    assert status == 429
    assert (body["policyName"], body["errorType"]) == ("TEN_SECONDLY_ROLLING", "RATE_LIMIT")
    assert body["message"] == fixture("error-429-ten-secondly-rolling-real.json")["body"]["message"]
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert "Retry-After" not in headers


def test_fake_batch_answers_follow_the_recorded_shapes(fake):
    crm_id = fake.person_sets("ann@example.com", lifecyclestage="customer")
    status, _, body = call(fake, "POST", "/crm/v3/objects/contacts/batch/read", {
        "properties": ["lifecyclestage"], "idProperty": "email",
        "inputs": [{"id": "ann@example.com"}, {"id": "meows@loudly.lol"}],
    })  # fmt: skip
    recorded = fixture("error-207-object-not-found-observed.json")["body"]["errors"][0]
    assert status == 207 and body["numErrors"] == 1
    assert body["errors"][0]["message"] == recorded["message"]
    assert body["errors"][0]["context"] == recorded["context"]
    assert body["results"][0]["properties"]["lifecyclestage"] == "customer"
    status, _, body = call(fake, "POST", "/crm/v3/objects/contacts/batch/update", {
        "inputs": [{"id": crm_id, "properties": {"lifecyclestage": "lead"}},
                   {"id": crm_id, "properties": {"lifecyclestage": "lead"}}],
    })  # fmt: skip
    duplicate = fixture("error-400-duplicate-ids-observed.json")["body"]
    assert status == 400 and body["message"] == duplicate["message"].replace("12877907025", crm_id)
    status, _, body = call(fake, "POST", "/crm/v3/objects/contacts/batch/update", {
        "inputs": [{"id": crm_id, "properties": {"lifecyclestage": "lead"}}],
    })  # fmt: skip
    assert status == 200 and body["results"][0]["properties"]["lifecyclestage"] == "customer"
    status, _, body = call(fake, "POST", "/crm/v3/objects/contacts/batch/update", {
        "inputs": [{"id": crm_id, "objectWriteTraceId": "t1",
                    "properties": {"hs_lead_status": "HOWDY"}}],
    })  # fmt: skip
    shape = fixture("error-207-invalid-option-observed.json")["error"]
    (error,) = body["errors"]
    assert status == 207 and error.keys() == {*shape.keys(), "correlationId"}
    assert error["context"] == {"objectWriteTraceId": ["t1"]}
    (item,) = json.loads(error["message"].removeprefix("Property values were not valid: "))
    assert item["error"] == "INVALID_OPTION" and item["name"] == "hs_lead_status"
    assert item["message"].startswith("HOWDY was not one of the allowed options: [NEW, OPEN, ")


def test_fake_search_has_its_own_per_second_limit(fake):
    fake.person_sets("ann@example.com", lifecyclestage="lead")
    query = fixture("crm-contacts-search-recorded.json")["request"]["body"]
    query["filterGroups"][0]["filters"][0]["value"] = "ann@example.com"
    answers = [call(fake, "POST", "/crm/v3/objects/contacts/search", query) for _ in range(6)]
    status, _, body = answers[0]
    assert status == 200 and body["total"] == 1
    assert body["results"][0]["properties"]["email"] == "ann@example.com"
    status, headers, body = answers[5]
    recorded = fixture("error-429-search-secondly-recorded.json")["response"]
    assert status == 429 and body["message"] == recorded["body"]["message"]
    assert body["category"] == "RATE_LIMITS" and "Retry-After" not in headers
