"""Prometheus metrics, cluster-wide: the counters live in Redis (every web and worker process on
every machine adds to them), so any instance's /metrics tells the whole story."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engine.store import LATENCY_BUCKETS, Store

DELIVERY_OUTCOMES = ("received", "accepted", "duplicate", "ignored", "quarantined")


class RedisCollector(Collector):
    def __init__(self, store: Store, crms: tuple[str, ...]):
        self.store, self.crms = store, crms

    def collect(self) -> Iterator[object]:
        counts = self.store.metrics()
        yield from self._deliveries(counts)
        yield _counter(
            "lifecycle_events_processed",
            "Events applied by the workers",
            [([], counts.get("processed|events", 0))],
        )
        yield _counter(
            "lifecycle_changes",
            "Recorded changes by outcome",
            [
                ([outcome], counts.get(f"changes|{outcome}", 0))
                for outcome in ("applied", "refused", "noop")
            ],
            ["outcome"],
        )
        yield self._rule_fires()
        yield self._sync(counts)
        yield self._queues()
        yield _latency(counts)

    def _deliveries(self, counts: dict[str, int]) -> Iterator[object]:
        by_source: dict[tuple[str, str], int] = defaultdict(int)
        rejected: list[tuple[list[str], int]] = []
        for key, value in counts.items():
            name, _, label = key.partition("|")
            if name in ("accepted", "duplicate"):
                by_source[name, label] += value
                by_source["received", label] += value  # their sum; the store does not count it
            elif name in ("ignored", "quarantined"):
                by_source[name, label] += value
            elif name == "rejected":
                source, _, code = label.partition("|")
                rejected.append(([source, code], value))
        for source in {source for _, source in by_source}:  # the store keeps no zero counts
            for outcome in DELIVERY_OUTCOMES:
                by_source[outcome, source] += 0
        yield _counter(
            "lifecycle_events",
            "Events received from each source, by outcome",
            [([s, o], v) for (o, s), v in sorted(by_source.items())],
            ["source", "outcome"],
        )
        yield _counter(
            "lifecycle_requests_rejected",
            "Requests refused, by source and error",
            rejected,
            ["source", "error"],
        )

    def _rule_fires(self) -> CounterMetricFamily:
        fired = self.store.redis.hgetall("lc:rules:fired")
        return _counter(
            "lifecycle_rule_fires",
            "Times each rule fired",
            [([_text(k)], int(v)) for k, v in sorted(fired.items())],
            ["rule"],
        )

    def _sync(self, counts: dict[str, int]) -> CounterMetricFamily:
        rows = []
        for key, value in counts.items():
            name, _, label = key.partition("|")
            if name == "sync":
                crm, _, result = label.partition("|")
                rows.append(([crm, result], value))
        return _counter("lifecycle_sync_results", "CRM pushes by result", rows, ["crm", "result"])

    def _queues(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily("lifecycle_queue_depth", "Work waiting", labels=["queue"])
        gauge.add_metric(["inbox_backlog"], self.store.backlog())
        gauge.add_metric(["inbox_pending"], self.store.pending_count())
        for crm in self.crms:
            gauge.add_metric([f"dirty_{crm}"], self.store.dirty_count(crm))
        return gauge


def _counter(name: str, doc: str, rows, labels: list[str] | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels or [])
    for label_values, value in rows:
        family.add_metric(label_values, value)
    return family


def _latency(counts: dict[str, int]) -> HistogramMetricFamily:
    buckets = [(str(b), counts.get(f"latency_le|{b}", 0)) for b in LATENCY_BUCKETS]
    total = counts.get("latency_count|accept_to_commit", 0)
    buckets.append(("+Inf", total))
    family = HistogramMetricFamily(
        "lifecycle_accept_to_commit_seconds", "From accepted to committed, per event"
    )
    family.add_metric([], buckets, counts.get("latency_sum_ms|accept_to_commit", 0) / 1000)
    return family


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def render(store: Store, crms: tuple[str, ...]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(store, crms))
    return generate_latest(registry)
