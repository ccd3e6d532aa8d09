"""What the engine's stages and statuses are called in HubSpot, what to write for a contact, and
what HubSpot's answers mean for each contact.

Pure: no HTTP, no Redis, no clock. `Mapping.from_config` validates the rules.yaml `crm.hubspot`
section; `Mapping.check_options` compares it with the options the HubSpot account really has;
`plan` decides, from what HubSpot holds, which properties to write for one contact; `outcomes`
reads a batch write's 200/207 answer back into one PushResult per contact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from typing import Any

from connectors.base.crm import PushResult
from engine.config import ConfigError
from engine.model import STATUS_STAGE, ContactState, Vocabulary

DEFAULT_STAGE_VALUES = {
    "subscriber": "subscriber",
    "lead": "lead",
    "marketing_qualified_lead": "marketingqualifiedlead",
    "sales_qualified_lead": "salesqualifiedlead",
    "opportunity": "opportunity",
    "customer": "customer",
    "evangelist": "evangelist",
}
DEFAULT_STATUS_VALUES = {
    "new": "NEW",
    "attempted_to_contact": "ATTEMPTED_TO_CONTACT",
    "connected": "CONNECTED",
    "open_deal": "OPEN_DEAL",
    "unqualified": "UNQUALIFIED",
    "bad_timing": "BAD_TIMING",
}
"""HubSpot's default hs_lead_status options have no counterpart of `future_opportunity`: the
shipped rules.yaml maps it to OPEN with `status_values`."""

KEYS = ("stage_property", "status_property", "stage_values", "status_values")
PREFIX = "crm.hubspot"
StageOrder = dict[str, int]
"""HubSpot stage value -> its position in the account's lifecycle (forward = larger)."""


@dataclass(frozen=True)
class Mapping:
    stage_property: str = "lifecyclestage"
    status_property: str = "hs_lead_status"
    stage_values: MappingType[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGE_VALUES))
    status_values: MappingType[str, str] = field(
        default_factory=lambda: dict(DEFAULT_STATUS_VALUES)
    )

    @classmethod
    def from_config(cls, config: MappingType[str, Any] | None, vocab: Vocabulary) -> Mapping:
        """The `crm.hubspot` section over the defaults; every stage and status of `vocab` must
        end up with a HubSpot value. Raises ConfigError naming the key or value at fault."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(KEYS))
        if unknown:
            raise ConfigError(f"{PREFIX}: unknown key(s) {', '.join(unknown)}; known: {KEYS}")
        names = {key: _name(config, key, default) for key, default in _PROPERTIES}
        stages = {**DEFAULT_STAGE_VALUES, **_values(config, "stage_values", vocab.stages)}
        statuses = {**DEFAULT_STATUS_VALUES, **_values(config, "status_values", vocab.statuses)}
        for kind, wanted, values in (
            ("stage", vocab.stages, stages),
            ("status", vocab.statuses, statuses),
        ):
            missing = [name for name in wanted if name not in values]
            if missing:
                raise ConfigError(
                    f"{PREFIX}.{kind}_values: no HubSpot value for {kind} "
                    f"{', '.join(missing)}; add e.g. `{kind}_values: {{{missing[0]}: ...}}`"
                )
        return cls(names["stage_property"], names["status_property"], stages, statuses)

    def check_options(
        self,
        vocab: Vocabulary,
        stage_options: list[dict] | None,
        status_options: list[dict] | None,
    ) -> StageOrder:
        """Every value we may write must be an option of the HubSpot property (None: the property
        is no dropdown and takes any text). Returns the account's stage order: by displayOrder,
        as HubSpot enforces its forward-only rule; for a text property, the engine's order."""
        problems = []
        for kind, names, values, prop, options in (
            ("stage", vocab.stages, self.stage_values, self.stage_property, stage_options),
            ("status", vocab.statuses, self.status_values, self.status_property, status_options),
        ):
            if options is None:  # not a dropdown: HubSpot takes any text
                continue
            allowed = [str(o.get("value")) for o in options]
            missing = [f"{values[n]} ({kind} {n})" for n in names if values[n] not in allowed]
            if missing:
                problems.append(
                    f"HubSpot property {prop} has no option {', '.join(missing)}; its options: "
                    f"{', '.join(allowed) or 'none'}. Fix {PREFIX}.{kind}_values or add the "
                    "option in HubSpot"
                )
        if problems:
            raise ConfigError(f"{PREFIX}: " + "; ".join(problems))
        if stage_options is None:
            return {self.stage_values[stage]: rank for rank, stage in enumerate(vocab.stages)}
        ranked = sorted(enumerate(stage_options), key=lambda p: (_order(p[1]), p[0]))
        return {str(option.get("value")): rank for rank, (_, option) in enumerate(ranked)}


_PROPERTIES = (("stage_property", "lifecyclestage"), ("status_property", "hs_lead_status"))
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def _name(config: MappingType[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not _PROPERTY_NAME.match(value):
        raise ConfigError(
            f"{PREFIX}.{key} must be a HubSpot property's internal name, got {value!r}"
        )
    return value


def _values(config: MappingType[str, Any], key: str, known: tuple[str, ...]) -> dict[str, str]:
    raw = config.get(key) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PREFIX}.{key} must be a mapping like {{name: HUBSPOT_VALUE}}")
    out = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"{PREFIX}.{key}: {name!r} is not one of {', '.join(known)}")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{PREFIX}.{key}.{name} must be a HubSpot option value, got {value!r}"
            )
        out[str(name)] = value.strip()
    return out


def _order(option: dict) -> float:
    try:
        return float(option.get("displayOrder", 0))
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Plan:
    """For one contact: the properties to write (empty: HubSpot already agrees, or is ahead) and
    what HubSpot held that made us hold back."""

    properties: dict[str, str]
    seen: str | None = None


def plan(
    state: ContactState, held: MappingType[str, Any] | None, mapping: Mapping, order: StageOrder
) -> Plan:
    """Never a stage behind the one HubSpot holds (it would refuse silently): when HubSpot is
    ahead nothing is written and `seen` says so. The lead status is written only while the
    contact is a sales qualified lead; elsewhere hs_lead_status is left as HubSpot has it."""
    held = held or {}
    props: dict[str, str] = {}
    if state.stage is not None:
        want = _value(mapping.stage_values, "stage", state.stage)
        current = held.get(mapping.stage_property) or None
        if current in order and want in order and order[current] > order[want]:
            return Plan({}, f"stage {current} set in HubSpot, ahead of {want}: left as is")
        if current != want:
            props[mapping.stage_property] = want
    if state.stage == STATUS_STAGE and state.status is not None:
        want_status = _value(mapping.status_values, "status", state.status)
        if (held.get(mapping.status_property) or None) != want_status:
            props[mapping.status_property] = want_status
    return Plan(props)


def _value(values: MappingType[str, str], kind: str, name: str) -> str:
    if name not in values:  # the rules changed since this client was built
        raise ConfigError(f"{PREFIX}.{kind}_values: no HubSpot value for {kind} {name}")
    return values[name]


def refused(
    sent: MappingType[str, str], got: MappingType[str, Any], mapping: Mapping
) -> str | None:
    """HubSpot answers 2xx to a backward stage write and keeps its value: say so."""
    want = sent.get(mapping.stage_property)
    held = got.get(mapping.stage_property)
    if want is not None and held is not None and held != want:
        return f"HubSpot kept stage {held} (refused {want}: stages only move forward there)"
    return None


def describe(error: MappingType[str, Any]) -> str:
    """A HubSpot error for a person: category, and the per-property messages that HubSpot embeds
    as a JSON string in `message` ("Property values were not valid: [...]")."""
    message = str(error.get("message") or "")
    category = str(error.get("category") or error.get("errorType") or "ERROR")
    head, _, embedded = message.partition(": [")
    if embedded:
        try:
            items = json.loads("[" + embedded)
        except ValueError:
            items = None
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            parts = [
                f"{i.get('name', '?')}: {i.get('message', '')} ({i.get('error', '')})"
                for i in items
            ]
            return f"{category}: {head}: {'; '.join(parts)}"[:500]
    return f"{category}: {message}"[:500]


def outcomes(items: list[tuple[str, dict]], body: dict, mapping: Mapping) -> dict[str, PushResult]:
    """One result per input (`items`: (email, input sent)). Results and errors are matched to
    inputs by objectWriteTraceId (we send the email), else by record id or email; an error
    HubSpot does not tie to an input applies to the inputs it left without a result.
    Validation errors are fatal (a dead letter with HubSpot's words); others are retried."""
    records: dict[str, dict] = {}
    for record in [r for r in body.get("results") or [] if isinstance(r, dict) and r.get("id")]:
        props = record.get("properties") or {}
        for key in (record.get("objectWriteTraceId"), record["id"], props.get("email")):
            if key:
                records.setdefault(str(key).lower(), record)
    errors: dict[str, dict] = {}
    loose: list[dict] = []
    for error in [e for e in body.get("errors") or [] if isinstance(e, dict)]:
        context = error.get("context") or {}
        keys = [*context.get("objectWriteTraceId", []), *context.get("ids", [])]
        errors.update({str(key).lower(): error for key in keys if str(key).lower() not in errors})
        loose.extend([] if keys else [error])
    out = {}
    for email, sent in items:
        key = str(sent["id"]).lower()
        record, error = records.get(email) or records.get(key), errors.get(email) or errors.get(key)
        if record is not None:
            seen = refused(sent["properties"], record.get("properties") or {}, mapping)
            out[email] = PushResult(email, ok=True, crm_id=str(record["id"]), seen=seen)
            continue
        error = error if error is not None else (loose[0] if loose else None)
        if error is None:
            message, retry = "HubSpot left this contact out of its answer", True
        else:
            message, retry = describe(error), error.get("category") != "VALIDATION_ERROR"
        out[email] = PushResult(email, ok=False, retryable=retry, error=message)
    return out
