"""`lifecycle backtest`: a known small history replayed through the shipped rules and a candidate
gives exact funnels on both sides, the exact difference, and the contacts that end differently
with the rules that made it; read from the real event log (the inbox stream) on a real Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import backtest as bt
from engine import cli
from engine.lifecycle import scheduled_event_id
from engine.model import BehaviorEvent
from engine.rules import from_text, load
from engine.store import INBOX, Store

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (REPO / "rules.yaml").read_text(encoding="utf-8")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

WEBINAR = """  - name: webinar-makes-lead
    when:
      event: webinar_attended
    then:
      - promote: lead
"""
MEETING = """  - name: meeting-booked-makes-sql
    description: A booked meeting means sales has a conversation coming.
    when:
      event: meeting_booked
    then:
"""


def candidate_text() -> str:
    """The shipped rules, except: a webinar makes an MQL (renamed rule), and a meeting makes an
    SQL only for a contact already marketing qualified."""
    assert WEBINAR in SHIPPED and MEETING in SHIPPED
    text = SHIPPED.replace(
        WEBINAR,
        WEBINAR.replace("webinar-makes-lead", "webinar-makes-mql").replace(
            "promote: lead", "promote: marketing_qualified_lead"
        ),
    )
    gated = MEETING.replace(
        "      event: meeting_booked\n",
        "      event: meeting_booked\n      contact.stage: {at_least: marketing_qualified_lead}\n",
    )
    return text.replace(MEETING, gated)


# (email, id, type, days before now, properties)
HISTORY = [
    ("ann@example.com", "a1", "webinar_attended", 10, {"webinar": "solar-101"}),
    ("bo@example.com", "b1", "content_downloaded", 10, {"asset": "guide.pdf"}),
    ("bo@example.com", "b2", "meeting_booked", 9, {}),
    ("cy@example.com", "c1", "form_submitted", 10, {"form": "demo-request"}),
    ("cy@example.com", "c2", "meeting_booked", 9, {}),
    ("di@example.com", "d1", "webinar_attended", 102, {"webinar": "solar-101"}),
    ("di@example.com", "d2", "meeting_booked", 101, {}),
    ("di@example.com", "d3", "email_replied", 100, {"subject": "Re: hi", "text": "not right now"}),
    ("ed@example.com", "e1", "meeting_booked", 5, {}),
]


def events(now: datetime = NOW) -> list[dict]:
    return [
        {
            "id": id_,
            "type": kind,
            "email": email,
            "occurred_at": (now - timedelta(days=days)).isoformat(),
            "properties": props,
        }
        for email, id_, kind, days, props in HISTORY
    ]


def row(stage, current, reached, conversion, median):
    return {
        "stage": stage,
        "current": current,
        "reached": reached,
        "conversion_from_previous": conversion,
        "median_hours_to_reach": median,
    }


CURRENT_STAGES = [
    row("subscriber", 0, 5, None, 0.0),
    row("lead", 1, 5, 1.0, 0.0),
    row("marketing_qualified_lead", 0, 4, 0.8, 12.0),
    row("sales_qualified_lead", 4, 4, 1.0, 24.0),
    row("opportunity", 0, 0, 0.0, None),
    row("customer", 0, 0, None, None),
    row("evangelist", 0, 0, None, None),
]
CANDIDATE_STAGES = [
    row("subscriber", 1, 5, None, 0.0),
    row("lead", 1, 4, 0.8, 0.0),
    row("marketing_qualified_lead", 1, 3, 0.75, 0.0),
    row("sales_qualified_lead", 2, 2, 0.6667, 24.0),
    row("opportunity", 0, 0, 0.0, None),
    row("customer", 0, 0, None, None),
    row("evangelist", 0, 0, None, None),
]


@pytest.fixture(scope="module")
def rules():
    return load(REPO / "rules.yaml"), from_text(candidate_text(), "candidate.yaml")


def test_the_funnel_of_each_side_and_their_difference_on_a_known_history(rules):
    current, candidate = rules
    history = [BehaviorEvent.from_dict(e) for e in events()]

    result = bt.backtest(history, current, candidate, NOW)

    assert (result.events, result.contacts, result.changed) == (9, 5, 3)
    assert result.current["total_contacts"] == result.candidate["total_contacts"] == 5
    assert result.current["stages"] == CURRENT_STAGES
    assert result.candidate["stages"] == CANDIDATE_STAGES
    assert {k: v for k, v in result.current["statuses"].items() if v} == {
        "new": 3,
        "future_opportunity": 1,  # the 90-day revisit, due 10 days ago, fired in the replay
    }
    assert {k: v for k, v in result.candidate["statuses"].items() if v} == {
        "new": 1,
        "future_opportunity": 1,
    }
    assert (result.current["rules_version"], result.candidate["rules_version"]) == (
        current.version,
        candidate.version,
    )
    assert result.current["rules"]["revisit-later"] == {"fired": 1}
    assert "webinar-makes-mql" in result.candidate["rules"]

    diff = bt.difference(result.current, result.candidate)
    assert [(r["stage"], r["current"], r["reached"]) for r in diff["stages"]] == [
        ("subscriber", 1, 0),
        ("lead", 0, -1),
        ("marketing_qualified_lead", 1, -1),
        ("sales_qualified_lead", -2, -2),
        ("opportunity", 0, 0),
        ("customer", 0, 0),
        ("evangelist", 0, 0),
    ]
    assert [r["conversion_from_previous"] for r in diff["stages"]] == [
        None, -0.2, -0.05, -0.3333, 0.0, None, None
    ]  # fmt: skip
    assert diff["statuses"] == {"new": -2}
    assert diff["rules_fired"] == {
        "webinar-makes-lead": -2,
        "meeting-booked-makes-sql": -2,
        "webinar-makes-mql": 2,
    }


def test_contacts_that_end_differently_name_the_rules_that_made_it(rules):
    history = [BehaviorEvent.from_dict(e) for e in events()]

    result = bt.backtest(history, *rules, NOW, examples=5)

    assert sorted((str(a), str(b), n) for (a, b), n in result.transitions.items()) == [
        ("lead", "marketing_qualified_lead", 1),
        ("sales_qualified_lead / new", "lead", 1),
        ("sales_qualified_lead / new", "subscriber", 1),
    ]
    examples = {e.email: e for e in result.examples}
    assert set(examples) == {"ann@example.com", "bo@example.com", "ed@example.com"}
    bo = examples["bo@example.com"]
    assert bo.only_current == (
        "meeting-booked-makes-sql: stage → sales_qualified_lead",
        "meeting-booked-makes-sql: status → new",
    )
    assert bo.only_candidate == ()
    assert bo.divergence is not None
    assert (bo.divergence.event_id, bo.divergence.current, bo.divergence.candidate) == (
        "b2",
        ("meeting-booked-makes-sql",),
        (),
    )
    ann = examples["ann@example.com"]
    assert ann.only_current == ("webinar-makes-lead: stage → lead",)
    assert ann.only_candidate == ("webinar-makes-mql: stage → marketing_qualified_lead",)

    assert len(bt.backtest(history, *rules, NOW, examples=2).examples) == 2


def test_the_same_rules_on_both_sides_change_nothing(rules):
    current, _ = rules
    history = [BehaviorEvent.from_dict(e) for e in events()]

    result = bt.backtest(history, current, current, NOW)

    assert result.changed == 0 and result.examples == []
    assert result.current == result.candidate
    assert "No contact ends differently" in bt.render(result, "a.yaml", "a.yaml")


def raw(event: dict) -> dict[str, str]:
    return {"e": json.dumps(event), "src": "standard", "at": NOW.isoformat()}


def test_the_history_keeps_each_event_once_and_leaves_out_what_a_replay_must_not_see():
    stored = [raw(e) for e in events()]
    delayed = {
        "id": scheduled_event_id("d3", "not-now-is-bad-timing", "revisit_due"),
        "type": "revisit_due",
        "email": "di@example.com",
        "occurred_at": (NOW - timedelta(days=10)).isoformat(),
        "source": "schedule",
    }
    crm_only = {"id": "h1", "type": "crm_stage_changed", "email": "", "crm": "hubspot",
                "crm_id": "501", "occurred_at": NOW.isoformat()}  # fmt: skip
    unknown = {**crm_only, "id": "h2", "crm_id": "999"}
    stored += [raw(events()[1]), raw(delayed), {"e": "not json"}, raw(crm_only), raw(unknown)]
    asked = []

    def emails_for(refs):
        asked.append(refs)
        return {("hubspot", "501"): "bo@example.com"}

    history = bt.history_from_entries(stored, NOW - timedelta(days=30), emails_for)

    assert [e.id for e in history.events] == ["a1", "b1", "b2", "c1", "c2", "e1", "h1"]
    assert history.events[-1].email == "bo@example.com"
    assert asked == [[("hubspot", "501"), ("hubspot", "999")]]
    assert (history.entries, history.duplicates, history.scheduled) == (14, 1, 1)
    assert (history.outside, history.unreadable, history.unresolved) == (3, 1, 1)


# --- the command, on the event log in Redis ----------------------------------------------------


def invoke(redis_url: str, *args: str, rules_file: str = str(REPO / "rules.yaml")):
    env = {"REDIS_URL": redis_url, "RULES_FILE": rules_file}
    result = CliRunner().invoke(cli.main, ["backtest", *args], env=env)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def stored(redis_client, tmp_path):
    """The history accepted the way the web accepts it, plus what the log also holds: a requeued
    entry (the same event again) and the delayed event the running engine made."""
    now = datetime.now(UTC)
    history = events(now)
    store = Store(redis_client)
    store.accept([BehaviorEvent.from_dict(e) for e in history], now)
    redis_client.xadd(INBOX, raw(history[2]))
    delayed = {
        "id": scheduled_event_id("d3", "not-now-is-bad-timing", "revisit_due"),
        "type": "revisit_due",
        "email": "di@example.com",
        "occurred_at": (now - timedelta(days=10)).isoformat(),
        "source": "schedule",
    }
    store.accept([BehaviorEvent.from_dict(delayed)], now, "schedule")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(candidate_text(), encoding="utf-8")
    return candidate


def test_the_command_prints_both_funnels_the_difference_and_examples(redis_url, stored):
    result = invoke(redis_url, "--rules", str(stored))

    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0].startswith("Backtest over the whole stored history: 9 events, 5 contacts")
    assert "  left out: 1 duplicate entries, 1 engine-scheduled events" in result.stdout
    table = [line for line in out if line.startswith("  ") and "_" in line.split()[0]]
    assert table == [
        "  marketing_qualified_lead       0       4    80%       1       3    75%      +1      -1 "
        " -5.0pt",
        "  sales_qualified_lead           4       4   100%       2       2    67%      -2      -2 "
        "-33.3pt",
    ]
    assert (
        "  lead                           1       5   100%       1       4    80%       0      -1 "
        "-20.0pt" in out
    )
    assert "  lead statuses (candidate - current): new -2" in out
    assert (
        "  rules fired (candidate - current): webinar-makes-lead -2, meeting-booked-makes-sql -2, "
        "webinar-makes-mql +2" in out
    )
    assert "3 of 5 contacts (60.0%) end differently (current → candidate):" in out
    assert "        1  sales_qualified_lead / new → lead" in out
    assert "  bo@example.com: sales_qualified_lead / new → lead" in out
    assert (
        "      - meeting-booked-makes-sql: stage → sales_qualified_lead   (current rules only)"
        in out
    )
    assert (
        "      + webinar-makes-mql: stage → marketing_qualified_lead   (candidate rules only)"
        in out
    )
    assert any(
        line.startswith("      first difference: ")
        and "meeting_booked [b2]: current fired [meeting-booked-makes-sql]; candidate fired nothing"
        in line
        for line in out
    )
    assert result.stderr == ""  # no progress bar: no terminal and a short run


def test_json_and_since_keep_only_the_window(redis_url, stored):
    whole = json.loads(invoke(redis_url, "--rules", str(stored), "--json").stdout)
    recent = json.loads(
        invoke(redis_url, "--rules", str(stored), "--json", "--since", "30d").stdout
    )

    assert (whole["events"], whole["contacts"], whole["changed_contacts"]) == (9, 5, 3)
    assert whole["current"]["stages"] == CURRENT_STAGES
    assert whole["candidate"]["stages"] == CANDIDATE_STAGES
    assert whole["difference"]["statuses"] == {"new": -2}
    assert (recent["events"], recent["contacts"], recent["changed_contacts"]) == (6, 4, 3)
    assert "3 events before the window" in recent["left_out"]
    assert recent["current"]["statuses"]["future_opportunity"] == 0


def test_a_progress_bar_on_stderr_for_long_runs(redis_url, stored, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_ABOVE", 5)

    result = invoke(redis_url, "--rules", str(stored))

    assert result.exit_code == 0
    assert "reading the event log" in result.stderr
    assert "replaying through both rule sets" in result.stderr
    assert "reading the event log" not in result.stdout


def test_a_bad_candidate_gives_its_errors_with_file_and_line(redis_url, stored, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - name: a\n    when: {event: deal_won}\n    then: {promote: custmer}\n"
    )

    result = invoke(redis_url, "--rules", str(bad))

    assert result.exit_code == 1
    assert f"{bad}:4: error: [a] unknown stage 'custmer'" in result.stderr
    assert result.stdout == ""


def test_redis_unavailable_is_a_clear_message(tmp_path):
    gone = f"unix://{tmp_path / 'nothing-here.sock'}"

    result = invoke(gone, "--rules", str(REPO / "rules.yaml"))

    assert result.exit_code == 1
    assert "cannot read the event history: Redis is unavailable" in result.stderr
    assert "make run" in result.stderr


def test_a_bad_duration_is_a_usage_error(redis_url, stored):
    result = invoke(redis_url, "--rules", str(stored), "--since", "soon")

    assert result.exit_code == 2
    assert "'soon' is no duration" in result.stderr


# --- the benchmark (bench/backtest.py) still runs ----------------------------------------------


def test_the_quick_benchmark_replays_every_stored_event_and_stops_its_redis():
    from bench import backtest as bench
    from bench import processes

    report = bench.run(quick=True)

    numbers = report.numbers
    assert numbers["events"] == bench.QUICK.events  # every stored event replayed once
    assert numbers["contacts"] == bench.QUICK.contacts
    assert 0 < numbers["changed_contacts"] < numbers["contacts"]
    assert numbers["seconds"] > 0 and numbers["replay_per_second"] > 0
    for row in report.rows:
        assert row.what in report.markdown()
        assert (row.met is None) == (row.target == "")
    assert processes.STARTED and processes.survivors(processes.STARTED) == []
