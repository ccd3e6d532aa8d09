"""Quarantined deliveries: list them, and replay them through today's parsers once the cause is
fixed (a mapping added, a form field renamed back). Deliveries were verified when they arrived, so
a replay parses again without re-checking signatures (their timestamps have long expired)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from connectors.base.inbound import BadPayload, Delivery, InboundSource
from engine.model import parse_time
from engine.store import Store


@dataclass(frozen=True)
class Replayed:
    entry_id: str
    source: str
    accepted: int = 0
    duplicates: int = 0
    still_unusable: list[str] | None = None
    error: str | None = None

    @property
    def released(self) -> bool:
        return self.error is None and not self.still_unusable


def replay(
    store: Store, sources: Mapping[str, InboundSource], now: datetime, entry_id: str | None = None
) -> list[Replayed]:
    """Replay one quarantined delivery, or all of them; released ones leave the quarantine."""
    results = []
    for item in store.quarantined(count=10_000, entry_id=entry_id):
        result = _replay_one(store, sources, item, now)
        if result.released:
            store.release(item["id"])
        results.append(result)
    return results


def _query(url: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}


def _replay_one(
    store: Store, sources: Mapping[str, InboundSource], item: dict, now: datetime
) -> Replayed:
    spec = sources.get(item["source"])
    if spec is None:
        return Replayed(item["id"], item["source"], error="no such source any more")
    delivery = Delivery(
        source=spec.name,
        headers=json.loads(item.get("headers") or "{}"),
        body=item["body"],
        url=item.get("url") or "",
        query=_query(item.get("url") or ""),
        # parsed as of its arrival: a vendor that sends no time falls back to it
        now=parse_time(item["received_at"], "received_at") if item.get("received_at") else now,
    )
    try:
        parsed = spec.parse(delivery)
    except BadPayload as exc:
        return Replayed(item["id"], spec.name, error=exc.detail)
    accepted = store.accept(parsed.events, now, "replay")
    reasons = sorted({u.reason for u in parsed.unusable})
    return Replayed(
        item["id"], spec.name, len(accepted.accepted), len(accepted.duplicates), reasons or None
    )
