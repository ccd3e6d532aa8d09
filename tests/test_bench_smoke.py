"""The benchmarks still run: their quick versions, with sane numbers (rules evaluation in-process;
ingest, CRM latency and worker memory with real processes, all stopped afterwards).

No timing assertions: the numbers depend on the machine and its load; BENCHMARKS.md has them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import rules_eval
from bench.common import Report, Row
from engine.rules import from_text

REPO = Path(__file__).resolve().parent.parent


def test_the_200_generated_rules_compile_without_errors_or_warnings():
    rules = from_text(rules_eval.generated_rules_text(), "generated-200.yaml")

    assert len(rules.ruleset.rules) == 200
    assert len(rules.compiled.rule_names) == 200
    assert [str(p) for p in rules.warnings] == []


def test_the_stand_in_playbook_is_valid():
    rules = from_text(rules_eval.FALLBACK_RULES, "fallback")

    assert len(rules.ruleset.rules) >= 20
    assert [str(p) for p in rules.warnings] == []


@pytest.fixture(scope="module")
def quick_report() -> Report:
    return rules_eval.run(quick=True)


def test_quick_run_gives_positive_rates_for_every_measurement(quick_report):
    numbers = quick_report.numbers
    for key in ("shipped", "generated"):
        for kind in ("per_second", "bare_per_second", "facts_per_second", "step_per_second"):
            assert numbers[f"{key}_{kind}"] > 0, f"{key}_{kind}"
        assert numbers[f"{key}_ratio"] > 0
    assert numbers["memory_per_second"] > 0
    assert numbers["memory_growth_mib"] < 1024  # sane, not the target


def test_rules_fired_and_the_bare_durable_loop_agree(quick_report):
    assert quick_report.numbers["shipped_mismatches"] == 0
    assert quick_report.numbers["generated_mismatches"] == 0


def test_every_row_renders_with_a_verdict_when_it_has_a_target(quick_report):
    markdown = quick_report.markdown()

    for row in quick_report.rows:
        assert row.what in markdown
        assert (row.met is None) == (row.target == "")


def test_rewriting_one_section_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_main, "MODULES", ("first", "second"))
    output = tmp_path / "BENCHMARKS.md"
    facts = {"date": "2026-11-26 10:00 UTC", "commit": "abc123"}
    first = Report("First", "about first", [Row("speed", 10.0, "events/s", "≥ 5", True)])
    second = Report("Second", "about second", [Row("size", 3.0, "MiB")])

    bench_main.write(output, {"first": first, "second": second}, facts)
    first.rows[0] = Row("speed", 20.0, "events/s", "≥ 5", True)
    bench_main.write(output, {"first": first}, facts)
    text = output.read_text(encoding="utf-8")

    assert text.startswith("# Benchmarks")
    assert "make bench" in text
    assert "| speed | 20 events/s | ≥ 5 | met |" in text
    assert "| size | 3 MiB | — | — |" in text
    assert text.index("## First") < text.index("## Second")


# --- The ingest benchmark: real redis-server, gunicorn, worker (and wrk when installed) -------


@pytest.fixture(scope="module")
def quick_ingest() -> Report:
    from bench import ingest

    return ingest.run(quick=True)


def test_quick_ingest_measures_processing_and_latency(quick_ingest):
    from bench import ingest

    numbers = quick_ingest.numbers
    assert numbers["processed_per_second"] > 0
    # each applied once, by one worker then by two
    assert numbers["processed_applied"] == [ingest.QUICK.prefill_events] * 2
    assert 0 < numbers["latency_p50_ms"] <= numbers["latency_p99_ms"] <= numbers["latency_max_ms"]
    assert numbers["offered_per_second"] > 0


def test_quick_ingest_loses_no_accepted_event_when_wrk_is_installed(quick_ingest):
    import shutil

    if shutil.which("wrk") is None:
        assert "accepted_per_second" not in quick_ingest.numbers
        assert any("wrk is not installed" in note for note in quick_ingest.notes)
        return
    numbers = quick_ingest.numbers
    assert numbers["accepted_per_second"] > 0
    assert numbers["bare_per_second"] > 0
    assert numbers["accepted_lost"] == 0


def test_quick_ingest_rows_have_verdicts_and_every_process_is_gone(quick_ingest):
    from bench import processes

    _rows_have_verdicts(quick_ingest)
    assert processes.STARTED, "the benchmark started no process"
    assert processes.survivors(processes.STARTED) == []


def _rows_have_verdicts(report: Report) -> None:
    for row in report.rows:
        assert row.what in report.markdown()
        assert (row.met is None) == (row.target == "")


# --- Accept → commit → CRM latency: real processes and the fake CRMs ---------------------------


def test_a_crm_arrival_is_the_first_write_after_which_the_crm_kept_the_final_state():
    from bench.crm_latency import arrival

    history = [
        (1.0, "lead", None),
        (2.0, "customer", None),
        (3.0, "lead", "NEW"),
        (4.0, "lead", "NEW"),
    ]

    assert arrival(history, "lead", "NEW") == 3.0
    assert arrival(history, "lead", None) == 3.0  # None: any status
    assert arrival(history, "customer", None) is None  # not what the CRM ended with
    assert arrival([], "lead", None) is None


def test_what_the_crm_limits_allow():
    from bench.crm_latency import Limit

    hubspot = Limit("HubSpot", batch=100, requests=2, limit=190, window=10.1)

    assert hubspot.capacity == pytest.approx(940.6, abs=0.1)
    assert hubspot.paced_p99(100, 10) == pytest.approx(2 * 10.1 / 190, abs=0.01)  # one step
    assert hubspot.paced_p99(1_000, 10) > hubspot.paced_p99(500, 10)  # over capacity: a backlog
    assert hubspot.bound(1_000, 10) == 5.0
    assert Limit("slow", batch=10, requests=2, limit=10, window=10.0).bound(100, 10) > 5.0


@pytest.fixture(scope="module")
def quick_crm_latency() -> Report:
    from bench import crm_latency

    return crm_latency.run(quick=True)


def test_quick_crm_latency_measures_every_rate_and_every_event_reaches_both_crms(quick_crm_latency):
    from bench import crm_latency

    numbers = quick_crm_latency.numbers
    for rate in crm_latency.RATES:
        key = f"r{rate}"
        assert numbers[f"{key}_offered"] > 0
        assert 0 < numbers[f"{key}_commit_p50_ms"] <= numbers[f"{key}_commit_p99_ms"]
        for crm in ("hubspot", "salesforce"):
            assert 0 < numbers[f"{key}_{crm}_p50_ms"] <= numbers[f"{key}_{crm}_p99_ms"]
        assert numbers[f"{key}_never_arrived"] == 0, numbers[f"{key}_detail"]
        assert numbers[f"{key}_mismatched"] == 0, numbers[f"{key}_detail"]
        assert numbers[f"{key}_detail"]["not_committed"] == 0


def test_quick_crm_latency_rows_have_verdicts_and_every_process_is_gone(quick_crm_latency):
    from bench import processes

    _rows_have_verdicts(quick_crm_latency)
    assert processes.survivors(processes.STARTED) == []


# --- Worker memory: the real worker over many events -------------------------------------------


@pytest.fixture(scope="module")
def quick_worker_memory() -> Report:
    from bench import worker_memory

    return worker_memory.run(quick=True)


def test_quick_worker_memory_processes_every_event_and_reads_the_rss(quick_worker_memory):
    from bench import worker_memory

    numbers = quick_worker_memory.numbers
    assert numbers["processed"] == worker_memory.QUICK.events
    assert numbers["events_per_second"] > 0
    assert len(numbers["rss_tenths_mib"]) == 10
    assert 10 < numbers["rss_tenth_mib"] <= numbers["rss_peak_mib"]
    assert abs(numbers["rss_growth_mib"]) < 1024  # sane, not the target


def test_quick_worker_memory_rows_have_verdicts_and_every_process_is_gone(quick_worker_memory):
    from bench import processes

    _rows_have_verdicts(quick_worker_memory)
    assert processes.survivors(processes.STARTED) == []
