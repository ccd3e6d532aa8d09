"""`lifecycle check`: file:line messages, exit codes, never a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result


def test_check_passes_on_the_shipped_rules():
    result = run("check", str(ROOT / "rules.yaml"))
    assert result.exit_code == 0, result.output
    assert "scenario(s) passed, 0 failed" in result.output
    assert "valid, version" in result.output


def test_check_reports_a_yaml_syntax_error_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: a\n    when: {event: [form_submitted}\n    then: []\n")
    result = run("check", str(bad))
    assert result.exit_code == 1
    assert result.output.startswith(f"{bad}:3: error: YAML syntax:")


def test_check_lists_every_error_and_warning(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: a\n"
        "    when: {event: form_submited}\n"
        "    then: {promote: leed}\n"
        "  - name: b\n"
        "    when: {event: deal_won}\n"
        "    then: {set_status: connected}\n"
    )
    result = run("check", str(bad))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{bad}:4: error: [a] unknown stage 'leed' (did you mean 'lead'?)" in lines
    assert lines[-1] == f"{bad}: 1 error(s), 0 warning(s): not valid"


def test_warnings_alone_pass(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("rules:\n  - {name: a, when: {event: form_submited}, then: {promote: lead}}\n")
    result = run("check", str(ok))
    assert result.exit_code == 0, result.output
    assert f"{ok}:2: warning: [a] event type 'form_submited'" in result.output
    assert "did you mean 'form_submitted'" in result.output


def test_check_refuses_a_crm_mapping_the_crm_would_refuse_at_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - {name: a, when: {event: deal_won}, then: {promote: customer}}\n"
        "crm:\n"
        "  hubspot:\n"
        "    stage_property: lifecyclestage\n"
        "    status_values: {nonsense: OPEN}\n"
        "  salesforce:\n"
        "    object: Account\n"
        "  pipedrive: {}\n"
    )
    result = run("check", str(bad))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{bad}:6: error: crm.hubspot.status_values: 'nonsense' is not")
    assert lines[1].startswith(f"{bad}:8: error: crm.salesforce.object: only Lead is supported")
    assert (
        lines[2]
        == f"{bad}:9: error: crm.pipedrive: unknown CRM; known: hubspot, salesforce, sandbox"
    )
    assert lines[3] == f"{bad}: 3 error(s), 0 warning(s): not valid"


def test_a_failing_scenario_fails_the_check(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - {name: a, when: {event: deal_won}, then: {promote: customer}}\n")
    (tmp_path / "r.test.yaml").write_text(
        "scenarios:\n"
        "  - name: won\n"
        "    events:\n"
        "      - event: deal_won\n"
        "    expect: {stage: evangelist}\n"
    )
    result = run("check", str(rules))
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'r.test.yaml'}:5: error: [won] expected stage 'evangelist', got 'customer'"
        in result.output
    )


def test_a_malformed_scenario_file_names_its_line(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - {name: a, when: {event: deal_won}, then: {promote: customer}}\n")
    (tmp_path / "r.test.yaml").write_text(
        "scenarios:\n  - name: won\n    events:\n      - {event: deal_won, after: soon}\n"
    )
    result = run("check", str(rules))
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'r.test.yaml'}:4: error: [won] after:/wait: take a duration" in result.output
    )


def test_check_of_a_missing_file(tmp_path):
    result = run("check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "nope.yaml:1: error: cannot read rules file" in result.output


def test_simulate_prints_each_contacts_timeline():
    result = run(
        "simulate", str(ROOT / "examples" / "events.jsonl"), "--rules", str(ROOT / "rules.yaml")
    )
    assert result.exit_code == 0, result.output
    assert "ann@example.com: stage customer, status open_deal" in result.output
    assert "meeting-booked-makes-sql: status - -> new applied" in result.output
    assert "9 event(s), 0 duplicate(s), 2 contact(s), 0 line(s) refused" in result.output


def test_simulate_applies_an_event_id_once_and_names_bad_lines(tmp_path):
    events = tmp_path / "events.jsonl"
    good = (
        '{"id": "a", "type": "deal_won", "email": "x@example.com", '
        '"occurred_at": "2026-11-26T10:00:00Z"}'
    )
    events.write_text(
        f"{good}\n{good}\nnot json\n"
        '{"id": "b", "type": "deal_won", "occurred_at": "2026-11-26T10:00:00Z"}\n'
    )
    result = CliRunner().invoke(
        main, ["simulate", str(events), "--rules", str(ROOT / "rules.yaml")]
    )
    assert result.exit_code == 1
    assert f"{events}:3: error: not JSON" in result.output
    assert f"{events}:4: error: event is missing email" in result.output
    assert "1 event(s), 1 duplicate(s), 1 contact(s), 2 line(s) refused" in result.output
