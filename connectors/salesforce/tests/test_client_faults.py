"""Faults against the fake org, through the real sync job: limit storms, 5xx bursts, tokens that
expire mid-batch, partial failures, row locks, a CRM that is ahead. Each ends with Salesforce
holding the engine's values and nothing lost."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from connectors.salesforce.auth import DAILY_LIMIT_PAUSE
from connectors.salesforce.client import build_client
from connectors.salesforce.fake_server import FakeSalesforce
from engine.config import Settings
from engine.model import BehaviorEvent
from engine.pipeline import Runtime, build_runtime, drain_events, sync_dirty

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PEOPLE = ["ann@example.com", "bo@example.com", "cy@example.com", "di@example.com"]


def short_sleep(seconds: float) -> None:
    time.sleep(min(seconds, 0.02))


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fake():
    server = FakeSalesforce().start()
    yield server
    server.stop()


@pytest.fixture
def runtime(redis_client, fake):
    settings = Settings(rules_file="rules.yaml", reclaim_after_seconds=0.0)
    rt = Runtime.install(build_runtime(settings, redis_client, FakeClock()))
    crm = build_client(Settings(**fake.settings()), redis_client, {}, sleep=short_sleep)
    rt.crms = {"salesforce": crm}
    yield rt
    crm.close()
    Runtime._current = None


def bring(rt: Runtime, type_: str, minutes: int, emails=PEOPLE, **props) -> None:
    rt.store.accept(
        [
            BehaviorEvent(f"{e}-{type_}-{minutes}", type_, e, T0 + timedelta(minutes=minutes),
                          properties=props)
            for e in emails
        ],
        rt.clock(),
    )  # fmt: skip
    drain_events()


def sync_state(rt: Runtime, email: str) -> dict:
    return rt.store.sync_records(email, ["salesforce"])["salesforce"]


def later(rt: Runtime, seconds: float = 3600) -> None:
    rt.clock.now += timedelta(seconds=seconds)
    sync_dirty("salesforce")


def assert_consistent(rt: Runtime, fake: FakeSalesforce, emails=PEOPLE) -> None:
    for email in emails:
        engine = rt.store.contact(email).state
        lead = fake.lead_for(email)
        assert lead["Lifecycle_Stage__c"] == engine.stage, email
        assert sync_state(rt, email)["state"] == "synced", email
    assert all(w.headers["sforce-auto-assign"] == "FALSE" for w in fake.writes())


def test_a_storm_of_request_limit_answers_is_waited_out(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.throttle(1, 60.0)  # the org refuses all but one request a minute
    sync_dirty("salesforce")
    assert fake.throttled >= 1
    assert {sync_state(runtime, e)["state"] for e in PEOPLE} == {"pending"}
    assert "REQUEST_LIMIT_EXCEEDED" in sync_state(runtime, "ann@example.com")["error"]
    fake.throttle(None)
    later(runtime)
    assert_consistent(runtime, fake)


def test_a_short_limit_storm_is_retried_inside_the_push(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.throttle(1, 0.5)
    sync_dirty("salesforce")  # each refusal pauses every worker briefly, then the call goes
    assert fake.throttled >= 1
    assert_consistent(runtime, fake)


def test_the_daily_allocation_spent_pauses_all_pushes_without_hammering(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.daily_limit = fake.api_usage  # TotalRequests Limit exceeded
    sync_dirty("salesforce")
    assert "TotalRequests" in sync_state(runtime, "ann@example.com")["error"]
    sent = len(fake.log)
    later(runtime)  # still paused: fails fast, nothing sent
    assert len(fake.log) == sent
    assert sync_state(runtime, "ann@example.com")["error"].startswith(
        "salesforce: every push paused for 89"
    )
    assert sync_state(runtime, "ann@example.com")["error"].endswith(
        "after REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded."
    )
    limiter = runtime.crms["salesforce"].limiter
    assert runtime.redis.pttl(limiter.inner.pause_key) > (DAILY_LIMIT_PAUSE - 60) * 1000
    fake.daily_limit = 100_000  # a new day
    runtime.redis.delete(limiter.inner.pause_key)  # ... and the 15 minutes are over
    later(runtime)
    assert_consistent(runtime, fake)


def test_our_own_ceiling_on_the_orgs_api_usage_holds_pushes_back(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.api_usage = 95_000  # 95 % used by other integrations; we stop at 90 %
    sync_dirty("salesforce")
    assert runtime.crms["salesforce"].limit_info.share >= 0.9
    assert {sync_state(runtime, e)["state"] for e in PEOPLE} == {"pending"}
    assert fake.writes() == []


def test_a_5xx_burst_is_retried_inside_the_push(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.fail_next(2, 503)
    sync_dirty("salesforce")
    assert [e.status for e in fake.api_requests()][:3] == [503, 503, 200]
    assert_consistent(runtime, fake)


def test_a_long_5xx_burst_leaves_contacts_pending_until_it_clears(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.fail_next(6, 500)
    sync_dirty("salesforce")
    assert "UNKNOWN_EXCEPTION" in sync_state(runtime, "bo@example.com")["error"]
    later(runtime)
    assert_consistent(runtime, fake)


def test_a_token_that_expires_mid_batch_is_renewed_once(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    sync_dirty("salesforce")
    bring(runtime, "form_submitted", 5, form="demo-request")
    fake.expire_tokens(after=1)  # the lead query passes, the update meets a dead session
    sync_dirty("salesforce")
    assert [e.status for e in fake.log].count(401) == 1
    assert fake.token_requests == 2
    assert_consistent(runtime, fake)


def test_refused_credentials_dead_letter_the_batch_until_fixed(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    fake.token_error = "password"
    sync_dirty("salesforce")
    letters = runtime.store.dead_letters("salesforce")
    assert len(letters) == 4
    assert "invalid_grant: authentication failure - Invalid Password" in letters[0]["error"]
    assert "fake-client-secret" not in letters[0]["error"]
    fake.token_error = None
    for email in PEOPLE:
        runtime.store.retry_dead_letter("salesforce", email, runtime.clock())
    sync_dirty("salesforce")
    assert_consistent(runtime, fake)


def test_records_salesforce_refuses_are_dead_lettered_the_others_synced(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    bring(runtime, "meeting_booked", 5, emails=["cy@example.com"])
    sync_dirty("salesforce")
    message = "Leads from this domain need a manager's approval"
    fake.validation_rule("bo@example.com", message)
    runtime.crms["salesforce"]._org_statuses()  # the org's statuses read before an admin...
    fake.remove_status("Working - Contacted")  # ...removes the one "attempted" maps to
    bring(runtime, "call_logged", 10, emails=["cy@example.com"], outcome="no_answer")
    bring(runtime, "form_submitted", 10, emails=["ann@example.com", "bo@example.com"],
          form="demo-request")  # fmt: skip
    sync_dirty("salesforce")
    letters = {x["email"]: x["error"] for x in runtime.store.dead_letters("salesforce")}
    assert letters.keys() == {"bo@example.com", "cy@example.com"}
    assert f"FIELD_CUSTOM_VALIDATION_EXCEPTION: {message}" in letters["bo@example.com"]
    assert (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: Lead Status: bad value for restricted "
        "picklist field: Working - Contacted (fields: Status)" in letters["cy@example.com"]
    )
    assert sync_state(runtime, "ann@example.com")["state"] == "synced"
    fake.validation_rule("bo@example.com", None)
    runtime.store.retry_dead_letter("salesforce", "bo@example.com", runtime.clock())
    sync_dirty("salesforce")
    assert_consistent(runtime, fake, ["ann@example.com", "bo@example.com", "di@example.com"])
    # cy stays a dead letter (checked against the org's refreshed list) until the mapping is fixed
    runtime.store.retry_dead_letter("salesforce", "cy@example.com", runtime.clock())
    sync_dirty("salesforce")
    assert "not a Lead Status of this org" in sync_state(runtime, "cy@example.com")["error"]


def test_a_locked_row_is_retried_later(runtime, fake):
    bring(runtime, "content_downloaded", 0)
    sync_dirty("salesforce")
    bring(runtime, "form_submitted", 5, form="demo-request")
    fake.lock_rows(1)
    sync_dirty("salesforce")
    assert "UNABLE_TO_LOCK_ROW" in sync_state(runtime, "ann@example.com")["error"]
    assert sync_state(runtime, "ann@example.com")["state"] == "pending"
    assert sync_state(runtime, "bo@example.com")["state"] == "synced"
    later(runtime, 5)
    assert_consistent(runtime, fake)


def test_a_later_stage_set_in_salesforce_is_kept_and_reported(runtime, fake):
    bring(runtime, "content_downloaded", 0, emails=["ann@example.com"])
    sync_dirty("salesforce")
    lead = fake.lead_for("ann@example.com")
    fake.person_sets(lead["Id"], Lifecycle_Stage__c="opportunity")
    writes = len(fake.writes())
    bring(runtime, "form_submitted", 5, emails=["ann@example.com"], form="demo-request")
    bring(runtime, "meeting_booked", 10, emails=["ann@example.com"])
    sync_dirty("salesforce")
    assert len(fake.writes()) == writes  # neither the stage nor the status pulled back
    assert lead["Lifecycle_Stage__c"] == "opportunity"
    record = sync_state(runtime, "ann@example.com")
    assert record["state"] == "synced"
    assert record["seen"] == (
        "stage opportunity set in Salesforce (Lifecycle_Stage__c = opportunity)"
    )
    bring(runtime, "deal_won", 20, emails=["ann@example.com"])  # the engine overtakes
    sync_dirty("salesforce")
    assert lead["Lifecycle_Stage__c"] == "customer"
