"""The Salesforce client against the fake org on loopback (real HTTP), a real Redis for the shared
limiter, and the real pipeline for the seed story."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import pytest

from connectors.salesforce.auth import ApiUsage
from connectors.salesforce.client import build_client, soql_quote
from connectors.salesforce.fake_server import USER_ID, FakeSalesforce
from connectors.salesforce.mapping import parse_mapping
from engine.config import ConfigError, Settings
from engine.model import DEFAULT_STAGES, STATUS_STAGE, BehaviorEvent, ContactState, Vocabulary
from engine.pipeline import Runtime, build_runtime, drain_events, sync_dirty
from engine.store import Store

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def short_sleep(seconds: float) -> None:
    time.sleep(min(seconds, 0.02))


@pytest.fixture
def fake():
    server = FakeSalesforce().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake, redis_client):
    crm = build_client(Settings(**fake.settings()), redis_client, {}, sleep=short_sleep)
    yield crm
    crm.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def runtime(redis_client, client):
    settings = Settings(rules_file="rules.yaml", reclaim_after_seconds=0.0)
    rt = Runtime.install(build_runtime(settings, redis_client, FakeClock()))
    rt.crms = {"salesforce": client}
    yield rt
    Runtime._current = None


def event(type_: str, minutes: int, email: str = "ann@example.com", **props) -> BehaviorEvent:
    return BehaviorEvent(
        id=f"{email}-{type_}-{minutes}",
        type=type_,
        email=email,
        occurred_at=T0 + timedelta(minutes=minutes),
        properties=props,
    )


def step(rt: Runtime, *events: BehaviorEvent) -> ContactState:
    rt.store.accept(list(events), rt.clock())
    drain_events()
    sync_dirty("salesforce")
    return rt.store.contact(events[0].email).state


def state(email: str, stage: str | None, status: str | None = None) -> ContactState:
    return ContactState(email, stage=stage, status=status, version=1)


STORY = [
    event("content_downloaded", 0, fields={"First Name": "Ann", "Last Name": "Lee"}),
    event("form_submitted", 60, form="demo-request", fields={"company": "Acme Solar"}),
    event("meeting_booked", 120),
    event("call_logged", 180, outcome="no_answer"),
    event("email_replied", 240, subject="Re: intro"),
    event("deal_created", 300),
    event("deal_stage_changed", 360, deal_stage="contractsent"),
    event("deal_won", 420),
]


def test_seed_story_ends_with_the_engines_values_in_salesforce(runtime, fake):
    stage_at_write: list[tuple[str, dict]] = []
    held: list[tuple[str, str | None, str, str]] = []
    for item in STORY:
        seen = len(fake.writes())
        engine = step(runtime, item)
        for write in fake.writes()[seen:]:
            stage_at_write += [(engine.stage, record) for record in write.body["records"]]
        lead = fake.lead_for("ann@example.com")
        held.append((engine.stage, engine.status, lead["Lifecycle_Stage__c"], lead["Status"]))
    assert held[2:6] == [
        (STATUS_STAGE, "new", STATUS_STAGE, "Open - Not Contacted"),
        (STATUS_STAGE, "attempted_to_contact", STATUS_STAGE, "Working - Contacted"),
        (STATUS_STAGE, "connected", STATUS_STAGE, "Working - Contacted"),
        (STATUS_STAGE, "open_deal", STATUS_STAGE, "Working - Contacted"),
    ]
    assert [h[2] for h in held] == [*DEFAULT_STAGES[1:4], STATUS_STAGE, STATUS_STAGE,
                                    STATUS_STAGE, "opportunity", "customer"]  # fmt: skip
    lead = fake.lead_for("ann@example.com")
    assert lead["Lifecycle_Stage__c"] == "customer"
    assert lead["Status"] == "Working - Contacted"  # open_deal, the last status while SQL
    assert (lead["FirstName"], lead["LastName"], lead["Company"]) == ("Ann", "Lee", "Acme Solar")
    assert lead["OwnerId"] == USER_ID  # assignment rules never ran
    stages = [r["Lifecycle_Stage__c"] for _, r in stage_at_write if "Lifecycle_Stage__c" in r]
    ranks = [DEFAULT_STAGES.index(s) for s in stages]
    assert ranks == sorted(ranks) and len(ranks) == 5  # lead, mql, sql, opportunity, customer
    status_writes = [(stage, r["Status"]) for stage, r in stage_at_write if "Status" in r]
    assert [s for s, _ in status_writes] == [STATUS_STAGE] * len(status_writes)
    assert [v for _, v in status_writes] == ["Working - Contacted"]  # "new" is the default
    assert all(w.headers["sforce-auto-assign"] == "FALSE" for w in fake.writes())
    record = runtime.store.sync_records("ann@example.com", ["salesforce"])["salesforce"]
    assert record["state"] == "synced"
    assert runtime.store.crm_ids("ann@example.com") == {"salesforce": lead["Id"]}


def test_a_converted_lead_is_followed_to_its_contact(runtime, fake):
    step(runtime, event("meeting_booked", 0), event("deal_won", 5))
    lead = fake.lead_for("ann@example.com")
    contact_id = fake.convert(lead["Id"])
    step(runtime, event("form_submitted", 10, form="referral"))
    assert fake.contacts[contact_id]["Lifecycle_Stage__c"] == "evangelist"
    assert fake.leads[lead["Id"]]["Lifecycle_Stage__c"] == "customer"  # read-only, untouched
    assert runtime.store.crm_ids("ann@example.com") == {"salesforce": contact_id}
    assert "Status" not in fake.writes()[-1].body["records"][0]


def test_a_known_contact_id_is_written_even_without_a_lead(client, fake):
    contact_id = fake._insert("Contact", {"Email": "cy@example.com", "LastName": "Cy"})
    (result,) = client.push([state("cy@example.com", "lead")], {"cy@example.com": contact_id}, {})
    assert (result.ok, result.crm_id) == (True, contact_id)
    assert fake.contacts[contact_id]["Lifecycle_Stage__c"] == "lead"
    assert fake.leads == {}


def test_a_lead_whose_email_a_person_changed_is_found_by_its_id(client, fake):
    lead = fake.add_lead("ann.lee@acme.example", Lifecycle_Stage__c="lead")
    (result,) = client.push([state("ann@example.com", "customer")], {"ann@example.com": lead}, {})
    assert (result.ok, result.crm_id) == (True, lead)
    assert fake.leads[lead]["Lifecycle_Stage__c"] == "customer" and len(fake.leads) == 1


def test_nothing_is_written_when_salesforce_already_agrees(client, fake):
    fake.add_lead("ann@example.com", Lifecycle_Stage__c="sales_qualified_lead")
    contact = state("ann@example.com", "sales_qualified_lead", "new")  # Open - Not Contacted
    (result,) = client.push([contact], {}, {})
    assert result.ok and fake.writes() == []


def test_missing_leads_are_created_with_what_events_told_else_a_placeholder(client, fake):
    results = client.push(
        [state("ann@example.com", "lead"), state("bo@example.com", STATUS_STAGE, "connected")],
        {},
        {"ann@example.com": {"first_name": "Ann", "company": "Acme", "phone": "+1 555 0100"}},
    )
    assert all(r.ok for r in results)
    ann, bo = fake.lead_for("ann@example.com"), fake.lead_for("bo@example.com")
    assert (ann["FirstName"], ann["LastName"], ann["Company"], ann["Phone"]) == (
        "Ann", "[unknown]", "Acme", "+1 555 0100",
    )  # fmt: skip
    assert (bo["LastName"], bo["Company"], bo["Status"]) == (
        "[unknown]", "[unknown]", "Working - Contacted",
    )  # fmt: skip
    (create,) = fake.writes()
    assert create.method == "POST" and create.body["allOrNone"] is False


def test_emails_are_quoted_safely_and_long_batches_split_under_the_url_limit(client, fake):
    odd = ["o'brien@example.com", "back\\slash@example.com", 'quo"te@example.com']
    long = [f"{'x' * 60}.{i}@{'y' * 40}.example.com" for i in range(200)]
    for email in odd:
        fake.add_lead(email, Lifecycle_Stage__c="lead")
    results = client.push([state(e, "lead") for e in odd + long], {}, {})
    assert all(r.ok for r in results)
    assert {r.crm_id for r in results[:3]} == {fake.lead_for(e)["Id"] for e in odd}
    queries = [e for e in fake.api_requests() if "Email IN" in e.query.get("q", "")]
    assert len(queries) >= 2
    assert all(len(quote_plus(q.query["q"])) < 16_000 for q in queries)
    assert len(fake.leads) == 203


def test_soql_literals_escape_quotes_and_backslashes():
    assert soql_quote("o'b\\r@x.com") == "'o\\'b\\\\r@x.com'"


def test_query_pages_are_followed(client, fake):
    fake.page_size = 2
    emails = [f"p{i}@example.com" for i in range(5)]
    for email in emails:
        fake.add_lead(email, Lifecycle_Stage__c="lead")
    assert all(r.ok for r in client.push([state(e, "lead") for e in emails], {}, {}))
    assert sum("/query/01g" in e.path for e in fake.api_requests()) == 3  # 2 Lead + 1 LeadStatus
    assert fake.writes() == []


def test_emails_for_asks_leads_and_contacts_by_id(client, fake):
    lead = fake.add_lead("ann@example.com")
    contact = fake._insert("Contact", {"Email": "bo@example.com", "LastName": "Bo"})
    found = client.emails_for([lead, contact[:15], "001000000000001AAA", "not an id'"])
    assert found == {lead: "ann@example.com", contact[:15]: "bo@example.com"}


def test_api_usage_is_read_from_every_answer_and_published(client, fake, redis_client):
    fake.api_usage = 41
    client.push([state("ann@example.com", "lead")], {}, {})
    assert (client.limit_info.used, client.limit_info.limit) == (44, 100_000)
    stored = Store(redis_client).api_usage("salesforce")
    assert (stored["header"], stored["used"], stored["limit"]) == (
        "api-usage=44/100000",
        "44",
        "100000",
    )


def test_a_status_the_org_does_not_have_is_refused_before_sending(fake, redis_client):
    mapping = {"status_values": {"connected": "Working - Connected"}}
    crm = build_client(Settings(**fake.settings()), redis_client, mapping, sleep=short_sleep)
    (result,) = crm.push([state("ann@example.com", STATUS_STAGE, "connected")], {}, {})
    assert not result.ok and not result.retryable
    assert "'Working - Connected', not a Lead Status of this org" in result.error
    assert fake.writes() == []
    crm.close()


def test_no_status_is_checked_or_written_while_salesforce_is_ahead(fake, redis_client):
    mapping = {"status_values": {"connected": "Working - Connected"}}  # not in this org
    crm = build_client(Settings(**fake.settings()), redis_client, mapping, sleep=short_sleep)
    fake.add_lead("ann@example.com", Lifecycle_Stage__c="customer")
    (result,) = crm.push([state("ann@example.com", STATUS_STAGE, "connected")], {}, {})
    assert result.ok and result.seen.startswith("stage customer set in Salesforce")
    assert fake.writes() == []
    crm.close()


def test_a_converted_status_is_never_written(fake, redis_client):
    mapping = {"status_values": {"open_deal": "Closed - Converted"}}
    crm = build_client(Settings(**fake.settings()), redis_client, mapping, sleep=short_sleep)
    (result,) = crm.push([state("ann@example.com", STATUS_STAGE, "open_deal")], {}, {})
    assert "a converted status" in result.error and fake.writes() == []
    crm.close()


# --- configuration --------------------------------------------------------------------------


def settings(**overrides) -> Settings:
    base = {
        "salesforce_login_url": "https://acme.my.salesforce.com",
        "salesforce_client_id": "id",
        "salesforce_client_secret": "secret",
    }
    return Settings(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "config", "message"),
    [
        ({"salesforce_login_url": None}, {}, "SALESFORCE_LOGIN_URL is not set"),
        ({"salesforce_login_url": "https://login.salesforce.com"}, {}, "My Domain"),
        ({"salesforce_login_url": "http://acme.my.salesforce.com"}, {}, "https URL"),
        ({"salesforce_login_url": "https://acme.my.salesforce.com/x"}, {}, "without a path"),
        ({"salesforce_client_secret": None}, {}, "SALESFORCE_CLIENT_SECRET"),
        ({"salesforce_api_version": "v40.0"}, {}, "SALESFORCE_API_VERSION"),
        ({}, {"objet": "Lead"}, "unknown key(s) objet"),
        ({}, {"object": "Contact"}, "crm.salesforce.object"),
        ({}, {"stage_field": "Stage; DROP"}, "crm.salesforce.stage_field"),
        ({}, {"status_values": {"hot": "Open"}}, "'hot' is not one of"),
        ({}, {"status_values": {"new": ""}}, "status_values.new"),
        ({}, {"stage_values": ["lead"]}, "stage_values must be a mapping"),
        ({}, {"rate_limit": "fast"}, "crm.salesforce.rate_limit"),
        ({}, {"max_api_usage": 2}, "crm.salesforce.max_api_usage"),
    ],
)
def test_bad_configuration_is_named(redis_client, overrides, config, message):
    with pytest.raises(ConfigError) as caught:
        build_client(settings(**overrides), redis_client, config)
    assert message in str(caught.value)


def test_custom_statuses_need_a_value():
    vocab = Vocabulary(statuses=("new", "nurture"))
    with pytest.raises(ConfigError, match=r"no Salesforce value for status.*nurture"):
        parse_mapping({}, vocab)
    mapping = parse_mapping({"status_values": {"nurture": "Recycled"}}, vocab)
    assert mapping.status_values == {"new": "Open - Not Contacted", "nurture": "Recycled"}


def test_the_shipped_mapping_and_stage_values_read_back():
    mapping = parse_mapping(
        {"stage_values": {"marketing_qualified_lead": "MQL", "sales_qualified_lead": "SQL"}}
    )
    assert mapping.stage_value("marketing_qualified_lead") == "MQL"
    assert mapping.held_stage("sql") == "sales_qualified_lead"
    assert mapping.held_stage("customer") == "customer"
    assert mapping.held_stage("Something else") is None
    assert mapping.contact_stage_field == "Lifecycle_Stage__c"
    assert mapping.contact_status_field is None
    assert ApiUsage.parse("api-usage=18/5000").share == pytest.approx(0.0036)
