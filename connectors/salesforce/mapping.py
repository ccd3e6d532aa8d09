"""The `crm.salesforce` section of rules.yaml (which fields receive the stage and the lead status,
which Salesforce values stand for the engine's stages and statuses) and what it means for one
contact: `plan_push` decides what to write. Pure: no I/O.

Every key is optional (defaults in DEFAULTS). A bad key or value raises ConfigError naming it, so
`lifecycle worker` refuses to start with a mapping Salesforce would reject record by record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from typing import Any

from connectors.base.crm import PushResult
from connectors.base.ratelimit import parse_rate
from engine.config import ConfigError
from engine.model import DEFAULT_STAGES, STATUS_STAGE, ContactState, Vocabulary

DEFAULT_STATUS_VALUES: dict[str, str] = {
    "new": "Open - Not Contacted",
    "attempted_to_contact": "Working - Contacted",
    "connected": "Working - Contacted",
    "open_deal": "Working - Contacted",
    "unqualified": "Closed - Not Converted",
    "bad_timing": "Open - Not Contacted",
    "future_opportunity": "Open - Not Contacted",
}
"""The Developer Edition LeadStatus values (reference §6.1). Orgs differ: map yours."""

DEFAULTS: dict[str, Any] = {
    "object": "Lead",
    "stage_field": "Lifecycle_Stage__c",
    "status_field": "Status",
    "status_values": {},
    "stage_values": {},
    "contact_stage_field": None,  # None: the same as stage_field
    "contact_status_field": None,  # None: a converted lead's Contact gets no status
    "placeholder": "[unknown]",
    "rate_limit": "100/10s",
    "max_api_usage": 0.9,
}
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
"""A Salesforce API name (standard, custom `__c`, or namespaced): also keeps SOQL injection-free."""
PICKLIST_MAX = 255
PROFILE_FOR = {
    "LastName": ("last_name", 80),
    "Company": ("company", 255),
    "FirstName": ("first_name", 40),
    "Phone": ("phone", 40),
}
"""Lead field -> (profile key, Salesforce's length limit)."""
PLACEHOLDER_FIELDS = ("LastName", "Company")
"""Required on a Lead: the placeholder stands in until the events tell the real value."""


@dataclass(frozen=True)
class SalesforceMapping:
    stage_field: str = "Lifecycle_Stage__c"
    status_field: str = "Status"
    contact_stage_field: str = "Lifecycle_Stage__c"
    contact_status_field: str | None = None
    stage_values: dict[str, str] = field(default_factory=lambda: {s: s for s in DEFAULT_STAGES})
    status_values: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STATUS_VALUES))
    stages: tuple[str, ...] = DEFAULT_STAGES
    placeholder: str = "[unknown]"
    rate: tuple[int, float] = (100, 10.0)
    max_api_usage: float = 0.9
    object: str = "Lead"

    def stage_value(self, stage: str) -> str:
        return self.stage_values.get(stage, stage)

    def status_value(self, status: str) -> str | None:
        return self.status_values.get(status)

    def rank(self, stage: str | None) -> int:
        return -1 if stage is None or stage not in self.stages else self.stages.index(stage)

    def held_stage(self, value: object) -> str | None:
        """The engine stage a Salesforce value stands for (the earliest, when several stages
        share a value), matched without regard to case; None for an empty or unknown value."""
        if not isinstance(value, str) or not value.strip():
            return None
        wanted = value.strip().casefold()
        for stage in self.stages:
            if self.stage_value(stage).casefold() == wanted or stage.casefold() == wanted:
                return stage
        return None

    def fields_for(self, sobject: str) -> tuple[str, str | None]:
        """(stage field, status field or None) on a Lead or on the Contact a lead became."""
        if sobject == "Lead":
            return self.stage_field, self.status_field
        return self.contact_stage_field, self.contact_status_field


def parse_mapping(
    raw: MappingType[str, Any] | None, vocab: Vocabulary | None = None
) -> SalesforceMapping:
    """Validate `crm.salesforce` (None or {} -> every default) against the rules' vocabulary."""
    vocab = vocab or Vocabulary()
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"crm.salesforce: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    conf = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    if conf["object"] != "Lead":
        raise ConfigError(
            f"crm.salesforce.object: only Lead is supported (got {conf['object']!r}); "
            "converted leads are followed to the Contact they became"
        )
    stage_field = _field_name("stage_field", conf["stage_field"])
    status_field = _field_name("status_field", conf["status_field"])
    contact_stage = conf["contact_stage_field"] or stage_field
    contact_status = conf["contact_status_field"]
    statuses = _values("status_values", conf["status_values"], vocab.statuses)
    missing = [s for s in vocab.statuses if s not in statuses and s not in DEFAULT_STATUS_VALUES]
    if missing:
        raise ConfigError(
            f"crm.salesforce.status_values: no Salesforce value for status(es) "
            f"{', '.join(missing)}; add them (e.g. {missing[0]}: Working - Contacted)"
        )
    known_defaults = {k: v for k, v in DEFAULT_STATUS_VALUES.items() if k in vocab.statuses}
    return SalesforceMapping(
        stage_field=stage_field,
        status_field=status_field,
        contact_stage_field=_field_name("contact_stage_field", contact_stage),
        contact_status_field=(
            _field_name("contact_status_field", contact_status) if contact_status else None
        ),
        stage_values={
            **{s: s for s in vocab.stages},
            **_values("stage_values", conf["stage_values"], vocab.stages),
        },
        status_values={**known_defaults, **statuses},
        stages=tuple(vocab.stages),
        placeholder=_text("placeholder", conf["placeholder"], 80),
        rate=_rate(conf["rate_limit"]),
        max_api_usage=_fraction("max_api_usage", conf["max_api_usage"]),
    )


def _field_name(key: str, value: object) -> str:
    if not isinstance(value, str) or not _FIELD.match(value):
        raise ConfigError(
            f"crm.salesforce.{key}: {value!r} is not a Salesforce field API name "
            "(letters, digits and underscores, like Lifecycle_Stage__c)"
        )
    return value


def _values(key: str, value: object, allowed: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, MappingType):
        raise ConfigError(f"crm.salesforce.{key} must be a mapping like {{new: Open}}")
    out: dict[str, str] = {}
    for name, mapped in value.items():
        if name not in allowed:
            raise ConfigError(
                f"crm.salesforce.{key}: {name!r} is not one of the rules' names "
                f"({', '.join(allowed)})"
            )
        out[name] = _text(f"{key}.{name}", mapped, PICKLIST_MAX)
    return out


def _text(key: str, value: object, most: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > most:
        raise ConfigError(
            f"crm.salesforce.{key}: needs a non-empty text of at most {most} characters, "
            f"got {value!r}"
        )
    return value.strip()


def _rate(value: object) -> tuple[int, float]:
    try:
        return parse_rate(str(value))
    except ValueError as exc:
        raise ConfigError(f"crm.salesforce.rate_limit: {exc}") from None


def _fraction(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"crm.salesforce.{key}: a fraction in (0, 1], got {value!r}")
    return float(value)


# --- what to write for one contact (pure) -------------------------------------------------------


@dataclass
class Target:
    """The record a contact is synced to, with the values Salesforce holds."""

    sobject: str  # "Lead", or "Contact" for a converted lead or a known contact id
    id: str
    stage: Any = None
    status: Any = None
    missing: bool = False  # a converted lead whose Contact is gone
    placeholders: tuple[str, ...] = ()
    """Required Lead fields still holding the placeholder (filled once the events tell)."""


@dataclass
class Plan:
    email: str
    record: dict[str, Any] | None = None
    """The sObject Collections record to send; None when nothing is to be written."""
    create: bool = False
    crm_id: str | None = None
    seen: str | None = None
    result: PushResult | None = None


def plan_push(
    m: SalesforceMapping,
    contact: ContactState,
    target: Target | None,
    profile: MappingType[str, str],
    statuses: dict[str, bool],
) -> Plan:
    """The stage never behind what Salesforce holds (a later stage there is kept and reported as
    `seen`); the status only while the contact is a sales qualified lead; nothing when Salesforce
    already holds both. `statuses`: the org's LeadStatus values -> converted? ({} = unknown)."""
    plan = Plan(contact.email, crm_id=target.id if target else None)
    if target is not None and target.missing:
        error = f"salesforce: the lead was converted to Contact {target.id}, which is gone"
        plan.result = PushResult(contact.email, False, error=error, crm_id=target.id)
        return plan
    stage_field, status_field = m.fields_for(target.sobject if target else "Lead")
    held = m.held_stage(target.stage) if target else None
    ahead = held is not None and m.rank(held) > m.rank(contact.stage)
    status = None
    if status_field and not ahead and contact.stage == STATUS_STAGE and contact.status:
        status = m.status_value(contact.status)
        problem = status_problem(contact.status, status, statuses)
        if problem:
            plan.result = PushResult(contact.email, False, error=problem, crm_id=plan.crm_id)
            return plan
    if target is None:
        plan.record, plan.create = _new_lead(m, contact, profile, status), True
        return plan
    fields: dict[str, str] = {}
    if ahead:
        plan.seen = f"stage {held} set in Salesforce ({stage_field} = {target.stage})"
    elif contact.stage and target.stage != m.stage_value(contact.stage):
        fields[stage_field] = m.stage_value(contact.stage)
    if status is not None and status_field and target.status != status:
        fields[status_field] = status
    for name in target.placeholders:
        key, most = PROFILE_FOR[name]
        if value := _cut(profile.get(key), most):
            fields[name] = value
    if fields:
        plan.record = {"attributes": {"type": target.sobject}, "id": target.id, **fields}
    else:
        plan.result = PushResult(contact.email, True, crm_id=target.id, seen=plan.seen)
    return plan


def _new_lead(
    m: SalesforceMapping, contact: ContactState, profile: MappingType[str, str], status: str | None
) -> dict[str, Any]:
    """LastName and Company are required: what the events told, else the visible placeholder."""
    record: dict[str, Any] = {"attributes": {"type": "Lead"}, "Email": contact.email}
    for name, (key, most) in PROFILE_FOR.items():
        value = _cut(profile.get(key), most)
        if value or name in PLACEHOLDER_FIELDS:
            record[name] = value or m.placeholder
    if contact.stage:
        record[m.stage_field] = m.stage_value(contact.stage)
    if status is not None:
        record[m.status_field] = status
    return record


def status_problem(status: str, value: str | None, statuses: dict[str, bool]) -> str | None:
    """Why `value` cannot be written as the lead status, or None."""
    if value is None:
        return f"status {status} has no Salesforce value; add it under crm.salesforce.status_values"
    if statuses and value not in statuses:
        known = ", ".join(sorted(statuses))
        return f"status {status} maps to {value!r}, not a Lead Status of this org ({known})"
    if statuses.get(value):
        return (
            f"status {status} maps to {value!r}, a converted status: Salesforce converts leads "
            "only through lead conversion"
        )
    return None


def _cut(value: object, most: int) -> str:
    return value.strip()[:most] if isinstance(value, str) else ""
