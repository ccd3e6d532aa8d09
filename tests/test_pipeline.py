"""The spine on a real Redis: accept -> drain through the rules -> commit -> sandbox sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from engine import pipeline
from engine.config import Settings
from engine.model import BehaviorEvent
from engine.pipeline import Runtime, build_runtime, drain_events, sync_dirty

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def runtime(redis_client):
    settings = Settings(rules_file="rules.yaml", reclaim_after_seconds=0.0)
    clock = FakeClock()
    rt = Runtime.install(build_runtime(settings, redis_client, clock))
    yield rt
    Runtime._current = None


def event(type_: str, at_minutes: int, id_: str | None = None, email="ann@example.com", **props):
    return BehaviorEvent(
        id=id_ or f"{type_}-{at_minutes}",
        type=type_,
        email=email,
        occurred_at=T0 + timedelta(minutes=at_minutes),
        properties=props,
    )


def accept(rt: Runtime, *events: BehaviorEvent):
    return rt.store.accept(list(events), rt.clock())


def test_accept_is_idempotent_on_event_id(runtime):
    first = accept(runtime, event("content_downloaded", 0))
    again = accept(runtime, event("content_downloaded", 0), event("deal_won", 5))
    assert (first.accepted, first.duplicates, first.wake) == (["content_downloaded-0"], [], True)
    assert (again.accepted, again.duplicates) == (["deal_won-5"], ["content_downloaded-0"])
    assert again.wake is False  # a job is already on its way
    assert runtime.store.backlog() == 2


def test_drain_applies_the_story_and_explains_it(runtime):
    accept(
        runtime,
        event("content_downloaded", 0, asset="guide.pdf"),
        event("form_submitted", 60, form="demo-request"),
        event("meeting_booked", 120),
        event("page_viewed", 130, url="https://example.com/blog"),
    )
    assert drain_events() == 4
    contact = runtime.store.contact("ann@example.com")
    assert (contact.state.stage, contact.state.status) == ("sales_qualified_lead", "new")
    timeline = runtime.store.timeline("ann@example.com")
    assert [t["event_id"] for t in timeline] == [
        "content_downloaded-0",
        "form_submitted-60",
        "meeting_booked-120",
        "page_viewed-130",
    ]
    assert timeline[-1]["changes"] == []  # processed, changed nothing, still in the timeline
    assert timeline[2]["changes"][1] == {
        "rule": "meeting-booked-makes-sql",
        "field": "status",
        "from": None,
        "to": "new",
        "outcome": "applied",
        "reason": "entered sales_qualified_lead: initial status",
    }
    assert timeline[0]["rules_version"] == runtime.rules.current().version
    assert timeline[0]["processed_at"] == "2026-11-26T12:00:00Z"
    assert runtime.store.pending_count() == 0


def test_funnel_counts_reached_stages_and_median_hours(runtime):
    accept(
        runtime,
        event("content_downloaded", 0),
        event("meeting_booked", 180),
        event("content_downloaded", 0, "bo-1", email="bo@example.com"),
    )
    drain_events()
    funnel = runtime.store.funnel_counts(runtime.rules.current().vocab.stages)
    assert funnel["total_contacts"] == 2
    assert funnel["current"] == {"lead": 1, "sales_qualified_lead": 1}
    assert funnel["reached"]["lead"] == 2
    assert funnel["reached"]["marketing_qualified_lead"] == 1  # jumped over, still reached
    assert funnel["median_hours"]["sales_qualified_lead"] == 3.0
    assert funnel["statuses"] == {"new": 1}
    assert funnel["fired"]["content-download-makes-lead"] == 2


def test_a_redelivered_event_applies_once(runtime):
    accept(runtime, event("meeting_booked", -60))
    drain_events()
    accept(runtime, event("email_sent", 0))
    runtime.store.read_inbox("dead-worker", 10, 0)  # delivered to a worker that then died
    assert drain_events() == 1  # the dead worker's delivery is reclaimed
    # the same event id again through another route (seen-key expired, say)
    runtime.redis.delete("lc:seen:email_sent-0")
    accept(runtime, event("email_sent", 0))
    drain_events()
    state = runtime.store.contact("ann@example.com").state
    assert state.counters == {"contact_attempts": 1}
    assert len(runtime.store.timeline("ann@example.com")) == 2


def test_a_contact_busy_in_another_worker_waits_its_turn(runtime):
    accept(runtime, event("content_downloaded", 0), event("deal_won", 0, email="bo@example.com"))
    other = runtime.store.lock(["ann@example.com"])
    assert drain_events() == 1  # bo done; ann requeued, still in the inbox
    assert runtime.store.contact("ann@example.com") is None
    runtime.store.unlock(other)
    assert drain_events() == 1
    assert runtime.store.contact("ann@example.com").state.stage == "lead"


def test_sandbox_sync_pushes_the_latest_state_once(runtime):
    accept(runtime, event("content_downloaded", 0), event("form_submitted", 5, form="demo-request"))
    drain_events()
    assert runtime.store.dirty_count("sandbox") == 1  # two changes, one push
    assert sync_dirty("sandbox") == 1
    assert runtime.store.sandbox_view("ann@example.com")["stage"] == "marketing_qualified_lead"
    record = runtime.store.sync_records("ann@example.com", ["sandbox"])["sandbox"]
    assert (record["state"], record["synced_version"]) == ("synced", "2")  # one per event
    assert runtime.store.dirty_count("sandbox") == 0


def test_a_batch_of_pushes_is_recorded_at_once_and_a_newer_change_stays_dirty(runtime):
    from engine.store import Synced

    accept(runtime, event("content_downloaded", 0), event("deal_won", 0, email="bo@example.com"))
    drain_events()
    store = runtime.store
    ann, bo = (store.contact(e).state for e in ("ann@example.com", "bo@example.com"))
    accept(runtime, event("form_submitted", 5, form="demo-request"))  # ann changes after the read
    drain_events()
    pushed = [Synced(ann, "id-ann"), Synced(bo, "id-bo", seen="stage customer set in the CRM")]

    assert store.mark_synced("sandbox", pushed, runtime.clock()) == [False, True]
    assert store.dirty("sandbox", 10, runtime.clock()) == ["ann@example.com"]  # pushes again
    records = store.sync_records("bo@example.com", ["sandbox"])["sandbox"]
    assert (records["state"], records["crm_id"], records["seen"]) == (
        "synced", "id-bo", "stage customer set in the CRM"
    )  # fmt: skip
    assert store.crm_ids("ann@example.com") == {"sandbox": "id-ann"}
    assert store.mark_synced("sandbox", [], runtime.clock()) == []


def test_schedule_actions_become_rq_scheduled_jobs_that_re_enter(runtime):
    accept(
        runtime,
        event("meeting_booked", 0),
        event("email_replied", 60, subject="Not right now, next quarter"),
    )
    drain_events()
    queue = Queue("events", connection=runtime.redis, serializer=JSONSerializer)
    (job_id,) = ScheduledJobRegistry(queue=queue).get_job_ids()
    job = queue.fetch_job(job_id)
    assert job.func_name == "engine.pipeline.fire_scheduled"
    assert job.args[0]["type"] == "revisit_due"
    assert pipeline.fire_scheduled(*job.args) == "accepted"
    assert pipeline.fire_scheduled(*job.args) == "duplicate"
    drain_events()
    state = runtime.store.contact("ann@example.com").state
    assert state.status == "future_opportunity"
    assert runtime.store.timeline("ann@example.com")[-1]["event_id"] == job_id


def crm_event(type_: str, at_minutes: int, crm_id: str, **props) -> BehaviorEvent:
    return BehaviorEvent(
        id=f"hs-{type_}-{at_minutes}",
        type=type_,
        email="",
        occurred_at=T0 + timedelta(minutes=at_minutes),
        source="hubspot",
        properties=props,
        crm="hubspot",
        crm_id=crm_id,
    )


def test_events_known_only_by_crm_id_wait_until_the_id_is_learned(runtime):
    accept(runtime, crm_event("crm_stage_changed", 10, "1001", value="sales_qualified_lead"))
    drain_events()
    assert runtime.store.contact("ann@example.com") is None  # parked, not lost, not guessed
    assert runtime.store.unresolved_count() == 1
    # a later event carries both the email and the record id: the id is learned
    learned = event("form_submitted", 0, form="demo-request")
    accept(runtime, BehaviorEvent(**{**learned.__dict__, "crm": "hubspot", "crm_id": "1001"}))
    drain_events()
    state = runtime.store.contact("ann@example.com").state
    assert state.stage == "sales_qualified_lead"
    assert runtime.store.unresolved_count() == 0
    assert [t["event_id"] for t in runtime.store.timeline("ann@example.com")] == [
        "form_submitted-0",
        "hs-crm_stage_changed-10",
    ]
    assert runtime.store.crm_ids("ann@example.com") == {"hubspot": "1001"}
    # from now on the id resolves at once
    accept(runtime, crm_event("deal_won", 20, "1001"))
    drain_events()
    assert runtime.store.contact("ann@example.com").state.stage == "customer"


def test_one_time_tokens_are_remembered_only_with_an_accepted_delivery(runtime):
    assert runtime.store.was_used("mailgun:tok-1") is False
    runtime.store.accept(
        [event("email_replied", 0)], runtime.clock(), "mailgun", once=["mailgun:tok-1"]
    )
    assert runtime.store.was_used("mailgun:tok-1") is True
    assert runtime.store.was_used("mailgun:tok-2") is False
    metrics = runtime.store.metrics()
    assert metrics["accepted|mailgun"] == 1


class ScriptedCrm:
    """A CRM client stand-in for the sync job's bookkeeping (the real clients have their own
    tests against fake servers)."""

    name, batch_size = "scripted", 10

    def __init__(self):
        self.outcomes: dict[str, object] = {}
        self.pushed: list[list[str]] = []

    def ready_in(self):
        return 0.0

    def push(self, contacts, known_ids, profiles):
        from connectors.base.crm import PushResult

        self.pushed.append([c.email for c in contacts])
        failure = self.outcomes.get("*")
        if isinstance(failure, Exception):
            raise failure
        results = []
        for c in contacts:
            outcome = self.outcomes.get(c.email, "ok")
            if outcome == "ok":
                results.append(PushResult(c.email, ok=True, crm_id=f"id-{c.email}"))
            else:
                results.append(
                    PushResult(
                        c.email,
                        ok=False,
                        retryable=outcome == "retry",
                        error=f"{outcome} for {c.email}",
                    )
                )
        return results

    def emails_for(self, crm_ids):
        return {i: i.removeprefix("id-") for i in crm_ids if i.startswith("id-")}


@pytest.fixture
def scripted(runtime):
    crm = ScriptedCrm()
    runtime.crms = {"scripted": crm}
    return crm


def test_fatal_failures_become_dead_letters_retryable_after_a_fix(
    runtime, scripted, redis_url, monkeypatch
):
    from click.testing import CliRunner

    from engine.cli import main

    scripted.outcomes = {"bo@example.com": "fatal"}
    accept(runtime, event("deal_won", 0), event("deal_won", 0, "b1", email="bo@example.com"))
    drain_events()
    sync_dirty("scripted")
    (letter,) = runtime.store.dead_letters("scripted")
    assert (letter["email"], letter["error"]) == ("bo@example.com", "fatal for bo@example.com")
    assert runtime.store.crm_ids("ann@example.com") == {"scripted": "id-ann@example.com"}
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CRM_TARGETS", "sandbox")
    scripted.outcomes = {}
    runtime.store.retry_dead_letter("scripted", "bo@example.com", runtime.clock())
    sync_dirty("scripted")
    assert runtime.store.dead_letters("scripted") == []
    record = runtime.store.sync_records("bo@example.com", ["scripted"])["scripted"]
    assert record["state"] == "synced"
    listing = CliRunner().invoke(main, ["dead-letters"])
    assert "0 dead letter(s)" in listing.output


def test_a_sync_job_that_dies_holds_its_flag_for_seconds_not_a_minute(
    runtime, scripted, monkeypatch
):
    """The flag a commit sets lasts WAKE_SECONDS; the job shortens it first thing, so a job killed
    at any point keeps the next change (or the sweep) from sending another for seconds only."""
    accept(runtime, event("deal_won", 0))
    drain_events()
    assert runtime.redis.pttl("lc:wake:sync:scripted") > 50_000  # as the commit set it

    def die(self):
        raise KeyboardInterrupt  # the process dies before anything else

    monkeypatch.setattr(pipeline.Lease, "acquire", die)

    with pytest.raises(KeyboardInterrupt):
        sync_dirty("scripted")
    assert 0 < runtime.redis.pttl("lc:wake:sync:scripted") <= pipeline.SYNC_FLAG_SECONDS * 1000


def test_retryable_failures_back_off_per_contact_and_succeed_later(runtime, scripted):
    from engine.errors import RetriableSyncError

    scripted.outcomes = {"*": RetriableSyncError("503 maintenance")}
    accept(runtime, event("deal_won", 0))
    drain_events()
    sync_dirty("scripted")
    record = runtime.store.sync_records("ann@example.com", ["scripted"])["scripted"]
    assert (record["state"], record["error"]) == ("pending", "503 maintenance")
    assert runtime.store.dirty("scripted", 10, runtime.clock()) == []  # backing off
    runtime.clock.now += timedelta(seconds=5)
    scripted.outcomes = {}
    sync_dirty("scripted")
    assert runtime.store.sync_records("ann@example.com", ["scripted"])["scripted"]["state"] == (
        "synced"
    )


def test_unknown_crm_ids_are_looked_up_in_the_crm(runtime, scripted):
    accept(
        runtime,
        BehaviorEvent(
            id="x1",
            type="deal_won",
            email="",
            occurred_at=T0,
            source="hubspot",
            crm="scripted",
            crm_id="id-ann@example.com",
        ),
    )
    drain_events()
    assert runtime.store.contact("ann@example.com").state.stage == "customer"


def test_the_profile_keeps_what_events_told_about_the_person(runtime):
    accept(
        runtime,
        event(
            "form_submitted",
            0,
            form="demo-request",
            fields={"First Name": "Ann", "company": "Acme Solar"},
        ),
        event("webinar_attended", 5, last_name="Lee"),
    )
    drain_events()
    assert runtime.store.contact("ann@example.com").profile == {
        "first_name": "Ann",
        "company": "Acme Solar",
        "last_name": "Lee",
    }


def test_build_runtime_wires_the_configured_crms(redis_client):
    from connectors.hubspot.client import HubSpotClient
    from engine.config import ConfigError

    settings = Settings(
        rules_file="rules.yaml",
        crm_targets=("hubspot", "sandbox"),
        hubspot_access_token="pat-test",
        hubspot_api_base="http://127.0.0.1:9",
    )
    runtime = build_runtime(settings, redis_client)
    assert isinstance(runtime.crms["hubspot"], HubSpotClient)
    assert set(runtime.crms) == {"hubspot", "sandbox"}
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN"):
        build_runtime(Settings(rules_file="rules.yaml", crm_targets=("hubspot",)), redis_client)
    with pytest.raises(ConfigError, match="SALESFORCE"):
        build_runtime(Settings(rules_file="rules.yaml", crm_targets=("salesforce",)), redis_client)
    both = Settings(
        rules_file="rules.yaml",
        crm_targets=("hubspot", "salesforce"),
        hubspot_access_token="pat-test",
        salesforce_login_url="https://x.my.example",
        salesforce_client_id="id",
        salesforce_client_secret="secret",
    )
    assert set(build_runtime(both, redis_client).crms) == {"hubspot", "salesforce"}


def test_a_crm_mapping_change_in_the_rules_rebuilds_that_client(redis_client, tmp_path):
    rules_file = tmp_path / "rules.yaml"
    shipped = Path("rules.yaml").read_text(encoding="utf-8")
    rules_file.write_text(shipped, encoding="utf-8")
    settings = Settings(
        rules_file=str(rules_file),
        crm_targets=("hubspot", "sandbox"),
        hubspot_access_token="pat-test",
        hubspot_api_base="http://127.0.0.1:9",
    )
    runtime = build_runtime(settings, redis_client)
    runtime.rules.interval = 0
    first, sandbox = runtime.crm("hubspot"), runtime.crm("sandbox")
    assert runtime.crm("hubspot") is first  # nothing changed: the same client

    mapping = "status_values: {future_opportunity: OPEN}"
    changed = "status_values: {future_opportunity: IN_PROGRESS}"
    rules_file.write_text(shipped.replace(mapping, changed))
    second = runtime.crm("hubspot")
    assert second is not first and runtime.crms["hubspot"] is second
    assert second.mapping.status_values["future_opportunity"] == "IN_PROGRESS"
    assert runtime.crm("sandbox") is sandbox  # its mapping did not change

    rules_file.write_text(shipped.replace(mapping, "status_values: {nonsense: OPEN}"))
    assert runtime.crm("hubspot") is second  # refused: the previous mapping stays in force
    error = runtime.rules.status.error or ""
    assert "crm.hubspot.status_values: 'nonsense' is not one of" in error


def test_an_event_dated_in_the_future_is_kept_dated_when_it_arrived(runtime):
    """A sender's clock years ahead must not freeze the status: later real events would all
    look older than its status change and be refused as stale."""
    ahead = runtime.clock() + timedelta(days=3650)
    accept(runtime, event("meeting_booked", 0))
    drain_events()
    claimed = BehaviorEvent(
        id="from-the-future",
        type="call_logged",
        email="ann@example.com",
        occurred_at=ahead,
        properties={"outcome": "no_answer"},
    )
    accept(runtime, claimed)
    runtime.clock.now += timedelta(minutes=5)
    accept(runtime, event("call_logged", 185, id_="real", outcome="connected"))
    drain_events()
    contact = runtime.store.contact("ann@example.com")
    assert contact.state.status == "connected"
    future = next(
        t for t in runtime.store.timeline("ann@example.com") if t["event_id"] == claimed.id
    )
    assert future["occurred_at"].startswith("2026-11-26T12:00:00")
    assert future["claimed_occurred_at"].startswith("2036-")
    assert runtime.store.contact("ann@example.com").state.status_changed_at < ahead


def test_recent_deliveries_say_what_became_of_each(runtime):
    runtime.store.accept([event("deal_won", 0)], runtime.clock(), "typeform", ignored=2)
    runtime.store.accept([event("deal_won", 0)], runtime.clock(), "typeform", quarantined=1)
    latest, first = runtime.store.recent_deliveries()
    assert (first["source"], first["accepted"], first["ignored"]) == ("typeform", "1", "2")
    assert (latest["duplicates"], latest["quarantined"]) == ("1", "1")
