"""Sync drain: a backlog of dirty contacts pushed to each fake CRM under its rate limit.

Each connector owns its measurement (connectors/<crm>/bench_sync.py: the fake CRM in its own
process on loopback, a dedicated Redis, the real sync job); this module puts their numbers side by
side in BENCHMARKS.md with the issue's targets.
"""

from __future__ import annotations

from typing import Any

from bench.common import Report, Row
from connectors.hubspot import bench_sync as hubspot
from connectors.salesforce import bench_sync as salesforce

TITLE = "Sync drain against the CRMs' limits"
TARGET_BUDGET, TARGET_429 = 0.95, 0.01


def run(quick: bool = False) -> Report:
    report = Report(
        TITLE,
        "20,000 dirty contacts (2,000 with `--quick`) drained by the real sync job against each "
        "fake CRM over loopback, limited to 190 requests per rolling 10 s. Budget used = requests "
        "sent ÷ requests the limit allows over whole windows (the steady state; the first window "
        "of a rolling limit lets a burst through, so the raw figure can exceed 100 %). Sources: "
        "`connectors/hubspot/bench_sync.py`, `connectors/salesforce/bench_sync.py`.",
    )
    for name, module in (("HubSpot", hubspot), ("Salesforce", salesforce)):
        _add(report, name, module.run(quick=quick))
    return report


def _add(report: Report, name: str, numbers: dict[str, Any]) -> None:
    key = name.lower()
    used = numbers.get("budget_used_whole_windows") or numbers["budget_used"]
    share = numbers.get("share_429", 0.0)
    report.add(
        f"{key}_contacts_per_s",
        Row(f"{name}: contacts pushed per second", numbers["contacts_per_s"], "contacts/s"),
    )
    report.add(
        f"{key}_requests_per_100",
        Row(
            f"{name}: requests per 100 contacts", numbers["requests_per_100_contacts"], "", digits=2
        ),
    )
    report.add(
        f"{key}_budget_used",
        Row(
            f"{name}: request budget used",
            100 * used,
            "%",
            f"≥ {TARGET_BUDGET:.0%}",
            used >= TARGET_BUDGET,
            1,
        ),
    )
    report.add(
        f"{key}_share_429",
        Row(
            f"{name}: calls answered 429",
            100 * share,
            "%",
            f"< {TARGET_429:.0%}",
            share < TARGET_429,
            2,
        ),
    )
    report.notes.append(
        f"{name}: {numbers['contacts']:,} contacts in {numbers['seconds']} s, "
        f"{numbers['requests']} requests ({numbers['budget']}), raw budget figure "
        f"{numbers['budget_used']:.0%}."
    )
