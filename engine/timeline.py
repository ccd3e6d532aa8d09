"""The explain view of a contact: its timeline entries (DESIGN §6) and a readable rendering."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from engine.model import CLAIMED_OCCURRED_AT, ContactState, format_time
from engine.process import Step


def entry(step: Step, processed_at: datetime) -> dict[str, Any]:
    """One timeline entry: the event, the rules version, and every change with its rule."""
    event = step.event
    return {
        "event_id": event.id,
        "type": event.type,
        "source": event.source,
        "occurred_at": format_time(event.occurred_at),
        "processed_at": format_time(processed_at),
        "rules_version": step.rules_version,
        "changes": [change.to_dict() for change in step.changes],
        **_claimed(event.properties),
    }


def _claimed(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A sender's time later than the arrival, which the event was dated instead (not_after)."""
    claimed = properties.get(CLAIMED_OCCURRED_AT)
    return {CLAIMED_OCCURRED_AT: claimed} if claimed else {}


def render(state: ContactState, timeline: Iterable[Mapping[str, Any]]) -> str:
    """A contact and its timeline as text, for the CLI."""
    counters = ", ".join(f"{k}={v}" for k, v in sorted(state.counters.items())) or "none"
    lines = [
        f"{state.email}: stage {state.stage or '(none)'}, status {state.status or '(none)'}, "
        f"counters {counters}"
    ]
    for item in timeline:
        lines.append(
            f"  {item['occurred_at']}  {item['type']}  [{item['source']} {item['event_id']}]"
            f"  rules {item['rules_version']}"
        )
        for change in item["changes"]:
            lines.append("      " + _change_line(change))
        if not item["changes"]:
            lines.append("      (no rule fired)")
    return "\n".join(lines)


def _change_line(change: Mapping[str, Any]) -> str:
    arrow = f"{change['from'] if change['from'] is not None else '-'} -> {change['to']}"
    text = f"{change['rule']}: {change['field']} {arrow} {change['outcome']}"
    return f"{text} ({change['reason']})" if change.get("reason") else text
