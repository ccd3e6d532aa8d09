"""Pushes each contact's lifecycle stage and lead status to Salesforce (DESIGN §8).

One push of up to 200 contacts costs two to four API calls: the Leads found by email (SOQL
`Email IN (...)`, split so no URL passes Salesforce's limit), the Contacts that converted leads
became, one sObject Collections update and one create (`allOrNone: false`, results per record).
Every write carries `Sforce-Auto-Assign: FALSE`, so assignment rules never move a lead's owner.

What is written (CLIENT.md has the user's view): the stage field, never behind the stage
Salesforce holds (a later stage set there is kept and reported as `PushResult.seen`); the status,
only while the contact is a sales qualified lead; nothing when Salesforce already has both.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus, urlsplit

import redis

from connectors.base.crm import REQUESTS_PER_PUSH, PushResult
from connectors.base.http import CrmSession, HttpResult
from connectors.base.ratelimit import RollingWindowLimiter
from connectors.salesforce.auth import (
    DAILY_LIMIT_PAUSE,
    RETRYABLE_CODES,
    ApiUsage,
    ClientCredentials,
    GuardedLimiter,
    api_version,
    login_url,
    make_classifier,
)
from connectors.salesforce.mapping import (
    PLACEHOLDER_FIELDS,
    Plan,
    SalesforceMapping,
    Target,
    parse_mapping,
    plan_push,
)
from engine.config import ConfigError, Settings
from engine.errors import FatalSyncError, RetriableSyncError
from engine.model import ContactState, Vocabulary
from engine.store import Store

log = logging.getLogger("connectors.salesforce")

WRITE_HEADERS = {"Sforce-Auto-Assign": "FALSE"}
COLLECTION_SIZE = 200
MAX_QUERY_BYTES = 12_000
"""Encoded SOQL per GET; Salesforce answers 414 past 16,384 bytes of URI."""
STATUS_CACHE_SECONDS = 600.0
RECORD_RETRYABLE = RETRYABLE_CODES | {"ALL_OR_NONE_OPERATION_ROLLED_BACK", "ENTITY_IS_DELETED"}
"""Per-record codes worth another push (a deleted record is looked up again next time)."""
_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
CALL_OPTIONS = {"Sforce-Call-Options": "client=lifecycle-engine"}


class SalesforceClient:
    name = "salesforce"
    batch_size = COLLECTION_SIZE

    def __init__(
        self,
        http: CrmSession,
        auth: ClientCredentials,
        mapping: SalesforceMapping,
        api_version: str,
        limiter: GuardedLimiter | None = None,
        usage_store: Store | None = None,
    ):
        self.http, self.auth, self.mapping, self.limiter = http, auth, mapping, limiter
        self.data = f"/services/data/{api_version}"
        self.limit_info: ApiUsage | None = None
        """The org's daily API usage from the last response's Sforce-Limit-Info header."""
        self._usage_store = usage_store
        self._statuses: dict[str, bool] = {}
        self._statuses_at = float("-inf")

    # --- the CrmClient contract -------------------------------------------------------------

    def push(
        self,
        contacts: Sequence[ContactState],
        known_ids: Mapping[str, str],
        profiles: Mapping[str, Mapping[str, str]],
    ) -> list[PushResult]:
        try:
            self.auth.ensure()
            targets = self._find([c.email for c in contacts], known_ids)
            statuses = self._org_statuses()
            plans = [
                plan_push(
                    self.mapping, c, targets.get(c.email), profiles.get(c.email) or {}, statuses
                )
                for c in contacts
            ]
            self._save([p for p in plans if p.record is not None and not p.create], False)
            self._save([p for p in plans if p.create], True)
        finally:
            self._publish_usage()
        return [p.result or PushResult(p.email, ok=False, error="not pushed") for p in plans]

    def ready_in(self) -> float:
        return 0.0 if self.limiter is None else self.limiter.ready_in(REQUESTS_PER_PUSH)

    def emails_for(self, crm_ids: Sequence[str]) -> dict[str, str]:
        """Lead (00Q...) and Contact (003...) ids -> email; other ids are not ours to ask."""
        found: dict[str, str] = {}
        try:
            self.auth.ensure()
            for sobject, prefix in (("Lead", "00Q"), ("Contact", "003")):
                ids = sorted({i for i in crm_ids if _ID.match(i) and i.startswith(prefix)})
                for record in self._query_in(["Id", "Email"], sobject, "Id", ids) if ids else []:
                    rid = str(record.get("Id"))
                    for asked in (i for i in ids if i in (rid, rid[:15])):
                        found[asked] = str(record.get("Email") or "")
        finally:
            self._publish_usage()
        return {i: email for i, email in found.items() if email}

    def close(self) -> None:
        self.http.close()
        self.auth.close()

    # --- finding the record for each contact ----------------------------------------------

    def _find(self, emails: list[str], known: Mapping[str, str]) -> dict[str, Target]:
        m = self.mapping
        fields = ["Id", "Email", m.stage_field, m.status_field, "IsConverted", "ConvertedContactId"]
        fields += PLACEHOLDER_FIELDS
        fields = list(dict.fromkeys(fields))
        by_email: dict[str, list[dict]] = {}
        for lead in self._query_in(fields, "Lead", "Email", emails):
            by_email.setdefault(str(lead.get("Email") or "").strip().lower(), []).append(lead)
        moved = {  # leads we know by id whose email a person changed in Salesforce
            known[e][:15]: e for e in emails if known.get(e, "")[:3] == "00Q" and e not in by_email
        }
        for lead in self._query_in(fields, "Lead", "Id", sorted(moved)) if moved else []:
            by_email[moved[str(lead["Id"])[:15]]] = [lead]
        leads = {e: _choose(by_email.get(e, []), known.get(e)) for e in emails}
        wanted = {known[e] for e in emails if known.get(e, "").startswith("003")}
        wanted |= {
            str(lead["ConvertedContactId"])
            for lead in leads.values()
            if lead and lead.get("IsConverted") and lead.get("ConvertedContactId")
        }
        contacts: dict[str, dict] = {}
        if wanted:
            names = ["Id", "Email", *(f for f in m.fields_for("Contact") if f)]
            found = self._query_in(list(dict.fromkeys(names)), "Contact", "Id", sorted(wanted))
            contacts = {str(c["Id"]): c for c in found}
        targets: dict[str, Target] = {}
        for email in emails:
            contact, lead = _by_id(contacts, known.get(email, "")), leads[email]
            if contact is None and lead and lead.get("IsConverted"):
                contact_id = str(lead.get("ConvertedContactId") or "")
                contact = _by_id(contacts, contact_id) or {"Id": contact_id, "missing": True}
            if contact is not None or lead:
                targets[email] = self._target("Contact" if contact else "Lead", contact or lead)
        return targets

    def _target(self, sobject: str, record: Mapping[str, Any]) -> Target:
        stage_field, status_field = self.mapping.fields_for(sobject)
        status = record.get(status_field) if status_field else None
        missing = bool(record.get("missing"))
        unknown = tuple(f for f in PLACEHOLDER_FIELDS if record.get(f) == self.mapping.placeholder)
        target = Target(sobject, str(record["Id"]), record.get(stage_field), status, missing)
        target.placeholders = unknown if sobject == "Lead" else ()
        return target

    def _org_statuses(self) -> dict[str, bool]:
        """LeadStatus values -> converted?, cached; {} when unknown (nothing checked then)."""
        if self.mapping.status_field != "Status":
            return {}
        if time.monotonic() - self._statuses_at < STATUS_CACHE_SECONDS:
            return self._statuses
        try:
            rows = self._query("SELECT ApiName, MasterLabel, IsConverted FROM LeadStatus")
        except FatalSyncError as exc:
            log.warning("salesforce: LeadStatus unreadable, statuses not checked: %s", exc.detail)
            rows = []
        self._statuses = {
            str(value): bool(row.get("IsConverted"))
            for row in rows
            for value in (row.get("ApiName"), row.get("MasterLabel"))
            if value
        }
        self._statuses_at = time.monotonic()
        return self._statuses

    # --- writing ----------------------------------------------------------------------------

    def _save(self, plans: list[Plan], create: bool) -> None:
        ordered = sorted(plans, key=lambda p: p.record["attributes"]["type"])  # type: ignore[index]
        for start in range(0, len(ordered), COLLECTION_SIZE):
            chunk = ordered[start : start + COLLECTION_SIZE]
            payload = {"allOrNone": False, "records": [p.record for p in chunk]}
            try:
                body = self._call(
                    "POST" if create else "PATCH",
                    f"{self.data}/composite/sobjects",
                    json=payload,
                    headers=WRITE_HEADERS,
                    ok=(200,),
                ).body
                if not isinstance(body, list) or len(body) != len(chunk):
                    raise RetriableSyncError(f"salesforce: unexpected collection answer {body!r}")
            except (RetriableSyncError, FatalSyncError) as exc:
                again = isinstance(exc, RetriableSyncError)
                for p in chunk:
                    p.result = PushResult(p.email, False, again, exc.detail, p.crm_id)
                continue
            for plan, item in zip(chunk, body, strict=True):
                plan.result = self._outcome(plan, item if isinstance(item, dict) else {})

    def _outcome(self, plan: Plan, item: Mapping[str, Any]) -> PushResult:
        if item.get("success"):
            crm_id = str(item.get("id") or plan.crm_id)
            return PushResult(plan.email, True, crm_id=crm_id, seen=plan.seen)
        errors = [e for e in item.get("errors") or [] if isinstance(e, dict)]
        codes = {str(e.get("statusCode")) for e in errors}
        if "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in codes:
            self._statuses_at = float("-inf")  # the org's values changed: read them again
        sobject = (plan.record or {}).get("attributes", {}).get("type")
        what = f"create Lead {plan.email}" if plan.create else f"update {sobject} {plan.crm_id}"
        detail = "; ".join(_describe(e) for e in errors) or "no error detail"
        retryable = bool(codes) and codes <= RECORD_RETRYABLE
        return PushResult(plan.email, False, retryable, f"salesforce {what}: {detail}", plan.crm_id)

    # --- HTTP ------------------------------------------------------------------------------

    def _query_in(self, fields: list[str], sobject: str, column: str, values: list[str]) -> list:
        select = f"SELECT {', '.join(fields)} FROM {sobject} WHERE {column} IN "
        records: list[dict] = []
        for chunk in _chunks(values, MAX_QUERY_BYTES - len(quote_plus(select))):
            records += self._query(f"{select}({','.join(soql_quote(v) for v in chunk)})")
        return records

    def _query(self, soql: str) -> list[dict]:
        body = self._call("GET", f"{self.data}/query", params={"q": soql}, ok=(200,)).body
        records = list(body.get("records") or []) if isinstance(body, dict) else []
        while isinstance(body, dict) and not body.get("done", True) and body.get("nextRecordsUrl"):
            body = self._call("GET", str(body["nextRecordsUrl"]), ok=(200,)).body
            records += list(body.get("records") or []) if isinstance(body, dict) else []
        return [r for r in records if isinstance(r, dict)]

    def _call(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        try:
            return self.http.call(method, path, **kwargs)
        finally:
            headers = {k.lower(): v for k, v in self.http.last_headers.items()}
            usage = ApiUsage.parse(headers.get("sforce-limit-info"))
            if usage is not None:
                self._note(usage)

    def _note(self, usage: ApiUsage) -> None:
        crossed = self.limit_info is None or self.limit_info.share < self.mapping.max_api_usage
        self.limit_info = usage
        if usage.share >= self.mapping.max_api_usage and self.limiter is not None:
            if crossed:
                log.warning("salesforce: API usage %s; pausing pushes", usage.header)
            why = f"the org's API usage reached {usage.header} (max_api_usage)"
            self.limiter.pause(DAILY_LIMIT_PAUSE, why)

    def _publish_usage(self) -> None:
        if self._usage_store is not None and self.limit_info is not None:
            self._usage_store.record_api_usage(self.name, self.limit_info.fields())


def soql_quote(value: str) -> str:
    """A SOQL string literal: backslash, quotes and control characters escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{escaped}'"


def _chunks(values: list[str], budget: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(quote_plus(soql_quote(value))) + 3  # the encoded comma
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


def _choose(leads: list[dict], known_id: str | None) -> dict | None:
    """The lead we sync: the one whose id we learned, else an open one, else a converted one
    (lowest id first: the oldest, so duplicates never take turns)."""
    if known_id and (match := _by_id({str(x["Id"]): x for x in leads}, known_id)):
        return match
    ranked = sorted(leads, key=lambda x: (bool(x.get("IsConverted")), str(x.get("Id"))))
    return ranked[0] if ranked else None


def _by_id(records: Mapping[str, dict], wanted: str) -> dict | None:
    """Salesforce ids come in 15- and 18-character forms; the first 15 identify the record."""
    if not wanted:
        return None
    return records.get(wanted) or next(
        (r for i, r in records.items() if i[:15] == wanted[:15]), None
    )


def _describe(error: Mapping[str, Any]) -> str:
    fields = error.get("fields") or []
    where = f" (fields: {', '.join(map(str, fields))})" if fields else ""
    return f"{error.get('statusCode') or error.get('errorCode')}: {error.get('message')}{where}"


def build_client(
    settings: Settings,
    redis_client: redis.Redis,
    crm_config: Mapping[str, Any] | None,
    *,
    vocab: Vocabulary | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SalesforceClient:
    """The Salesforce client from the environment and rules.yaml's `crm.salesforce` mapping;
    ConfigError names whatever is missing or wrong. No network call happens here."""
    mapping = parse_mapping(crm_config, vocab)
    base = login_url(settings.salesforce_login_url)
    for env, value in (
        ("SALESFORCE_CLIENT_ID", settings.salesforce_client_id),
        ("SALESFORCE_CLIENT_SECRET", settings.salesforce_client_secret),
    ):
        if not value:
            raise ConfigError(f"{env} is not set (the connected app's consumer key / secret)")
    version = api_version(settings.salesforce_api_version)
    account = f"salesforce:{urlsplit(base).hostname}"
    limiter = GuardedLimiter(
        RollingWindowLimiter(
            redis_client, account, *mapping.rate, sleep=sleep, together=REQUESTS_PER_PUSH
        ),
        redis_client,
    )
    auth = ClientCredentials(
        base,
        settings.salesforce_client_id,  # type: ignore[arg-type]
        settings.salesforce_client_secret,  # type: ignore[arg-type]
        on_instance=lambda url: None,
        sleep=sleep,
    )
    http = CrmSession(
        "salesforce",
        base,
        auth,
        limiter=limiter,
        classify=make_classifier(limiter),
        sleep=sleep,
        extra_headers=CALL_OPTIONS,
    )
    auth.on_instance = lambda url: setattr(http, "base_url", url)
    return SalesforceClient(http, auth, mapping, version, limiter, Store(redis_client))
