"""The sync benchmark still runs: its quick version, against the fake org, with sane numbers.

No timing assertions (the numbers depend on the machine); BENCHMARKS.md has the full run's.
"""

from __future__ import annotations

from connectors.salesforce import bench_sync


def test_quick_drain_reaches_every_contact_within_the_budget():
    numbers = bench_sync.run(quick=True)
    assert numbers["not_in_salesforce_as_in_engine"] == 0
    assert numbers["leads_created"] == numbers["contacts"] // 2
    assert numbers["contacts_per_s"] > 0
    assert numbers["share_429"] < 0.05
    assert numbers["requests"] <= 3 * numbers["contacts"] / 200 + 2  # query, update, create
