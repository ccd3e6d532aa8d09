"""The HubSpot CRM client: pushes each contact's lifecycle stage and lead status with the CRM v3
batch endpoints, 100 contacts a call, through the shared connector base (one session and one
Redis rate limiter per HubSpot account).

For a batch: read what HubSpot holds (`batch/read` by email; by record id again for a known id
HubSpot does not confirm), decide per contact (mapping.plan: never a stage behind HubSpot's,
status only at SQL), then write the contacts HubSpot has with `batch/update` by id and create the
others with `batch/upsert` keyed by email. Per-input errors of a 207 become per-contact results
(mapping.outcomes). Property options are read lazily, at the first push (see CLIENT.md).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.base.crm import REQUESTS_PER_PUSH, PushResult
from connectors.base.http import RETRY_STATUSES, BearerToken, CrmSession, HttpResult
from connectors.base.ratelimit import RollingWindowLimiter, parse_rate
from connectors.hubspot.mapping import PREFIX, StageOrder, describe, outcomes, plan
from connectors.hubspot.mapping import Mapping as HubSpotMapping
from engine.config import ConfigError, Settings
from engine.errors import FatalSyncError, RetriableSyncError
from engine.model import ContactState, Vocabulary

__all__ = ["HubSpotClient", "build_client"]

OBJECTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
BATCH = 100
DEFAULT_RATE = "100/10s"
RATE_GUARD_SECONDS = 0.1
"""Added to the rate window: our clock and HubSpot's see each request a little apart."""
OPTIONS_TTL = 600.0
"""Property options are read again after this long (an admin may edit them)."""
CONFIG_RETRY = 60.0
"""After a configuration error, the options are read again no sooner than this."""
DAILY_HOLD = 300.0
"""After a 429 DAILY, no call for this long from this process (the limit resets at midnight)."""
PROFILE_PROPERTIES = {
    "first_name": "firstname",
    "last_name": "lastname",
    "company": "company",
    "phone": "phone",
}
Held = dict[str, Any]
"""One HubSpot record as batch/read returns it: {"id", "properties": {...}}."""


class HubSpotClient:
    name = "hubspot"
    batch_size = BATCH

    def __init__(
        self,
        base_url: str,
        token: str,
        mapping: HubSpotMapping,
        vocab: Vocabulary,
        *,
        limiter: Any = None,
        clock: Callable[[], float] = time.monotonic,
        **session_options: Any,
    ):
        self.mapping, self.vocab, self._clock = mapping, vocab, clock
        self.session = CrmSession(
            "hubspot",
            base_url,
            BearerToken(token),
            limiter=limiter,
            classify=self._classify,
            **session_options,
        )
        self._order: StageOrder | None = None
        self._config_error: ConfigError | None = None
        self._checked_at = float("-inf")
        self._daily_until = float("-inf")

    # --- the CrmClient contract ------------------------------------------------------------

    def push(
        self,
        contacts: Sequence[ContactState],
        known_ids: Mapping[str, str],
        profiles: Mapping[str, Mapping[str, str]],
    ) -> list[PushResult]:
        if self._holding():
            return _all(contacts, "HubSpot daily API limit reached; retrying later", retry=True)
        try:
            order = self.stage_order()
            held = self._read(contacts, known_ids)
        except ConfigError as exc:  # a dead letter with the reason, not a crashed worker
            return _all(contacts, exc.detail)
        except RetriableSyncError as exc:
            return _all(contacts, exc.detail, retry=True)
        except FatalSyncError as exc:
            return _all(contacts, exc.detail, retry=self._holding())
        results, updates, upserts = self._sort(contacts, held, order, profiles)
        results.update(self._write("update", updates))
        results.update(self._write("upsert", upserts))
        return [results[c.email] for c in contacts]

    def _sort(self, contacts, held, order, profiles) -> tuple[dict[str, PushResult], list, list]:
        """Per contact: done already (HubSpot agrees or is ahead), an update by record id, or an
        upsert by email that creates it (with the names events told us)."""
        results: dict[str, PushResult] = {}
        updates, upserts, claimed = [], [], {}
        for contact in contacts:
            email, record = contact.email, held.get(contact.email)
            crm_id = str(record["id"]) if record else None
            try:
                todo = plan(contact, record and record.get("properties"), self.mapping, order)
            except ConfigError as exc:
                results[email] = _failed(email, exc.detail, False)
                continue
            if crm_id in claimed:
                results[email] = _failed(email, _shared(crm_id, claimed[crm_id]), False)
                continue
            if crm_id:
                claimed[crm_id] = email
            if not todo.properties:
                results[email] = PushResult(email, ok=True, crm_id=crm_id, seen=todo.seen)
            elif crm_id:
                updates.append((email, {"id": crm_id, "properties": todo.properties}))
            else:
                props = {**_profile(profiles.get(email) or {}), "email": email, **todo.properties}
                upserts.append((email, {"id": email, "idProperty": "email", "properties": props}))
        return results, updates, upserts

    def ready_in(self) -> float:
        limiter = self.session.limiter
        if limiter is None or self._holding():
            return 0.0
        return limiter.ready_in(REQUESTS_PER_PUSH)

    def emails_for(self, crm_ids: Sequence[str]) -> dict[str, str]:
        ids = [i for i in dict.fromkeys(str(x).strip() for x in crm_ids) if i.isdigit()]
        found: dict[str, str] = {}
        for start in range(0, len(ids), BATCH):
            for record in self._batch_read(ids[start : start + BATCH], None, ["email"]):
                email = (record.get("properties") or {}).get("email")
                if email:
                    found[str(record["id"])] = str(email).strip().lower()
        return found

    def close(self) -> None:
        self.session.close()

    # --- the account's options -------------------------------------------------------------

    def stage_order(self) -> StageOrder:
        """Read both properties' options (lazily: at the first push, then every OPTIONS_TTL),
        check the mapping against them, and return the account's stage order."""
        now = self._clock()
        if self._config_error is not None and now - self._checked_at < CONFIG_RETRY:
            raise self._config_error
        if self._order is not None and now - self._checked_at < OPTIONS_TTL:
            return self._order
        try:
            stage = self._options(self.mapping.stage_property, "stage_property")
            status = self._options(self.mapping.status_property, "status_property")
            order = self.mapping.check_options(self.vocab, stage, status)
        except ConfigError as exc:
            self._order, self._config_error, self._checked_at = None, exc, now
            raise
        except RetriableSyncError:
            if self._order is None:
                raise
            return self._order  # keep the options read before; try again next time
        self._order, self._config_error, self._checked_at = order, None, now
        return order

    def _options(self, prop: str, key: str) -> list[dict] | None:
        result = self.session.call("GET", f"{PROPERTIES}/{prop}", ok=(200, 404))
        if result.status == 404:
            raise ConfigError(f"{PREFIX}.{key}: HubSpot has no contact property {prop!r}")
        body = result.body if isinstance(result.body, dict) else {}
        if body.get("type") != "enumeration":
            return None
        return [o for o in body.get("options") or [] if isinstance(o, dict)]

    # --- reading and writing ---------------------------------------------------------------

    def _read(self, contacts: Sequence[ContactState], known: Mapping[str, str]) -> dict[str, Held]:
        """What HubSpot holds for each contact it has, in one read by email; a contact whose known
        record id HubSpot does not confirm (its email changed there, say) is read again by id."""
        props = [self.mapping.stage_property, self.mapping.status_property, "email"]
        found: dict[str, Held] = {}
        wanted = {c.email for c in contacts}
        for record in self._batch_read(sorted(wanted), "email", props):
            email = str((record.get("properties") or {}).get("email") or "").strip().lower()
            if email in wanted:
                found[email] = record
        recheck = {
            known[email]: email
            for email in sorted(wanted)
            if known.get(email) and str((found.get(email) or {}).get("id")) != known[email]
        }
        if recheck:
            for record in self._batch_read(list(recheck), None, props):
                email = recheck.get(str(record.get("id")))
                if email:
                    found[email] = record
        return found

    def _batch_read(self, ids: list[str], id_property: str | None, props: list[str]) -> list:
        body: dict[str, Any] = {"properties": props, "inputs": [{"id": i} for i in ids]}
        if id_property:
            body["idProperty"] = id_property
        result = self.session.call("POST", f"{OBJECTS}/batch/read", json=body, ok=(200, 207))
        data = result.body if isinstance(result.body, dict) else {}
        return [r for r in data.get("results") or [] if isinstance(r, dict) and r.get("id")]

    def _write(self, kind: str, items: list[tuple[str, dict]]) -> dict[str, PushResult]:
        """One batch/update or batch/upsert; per-contact results. A batch HubSpot refuses whole
        for validation is split in halves until the contacts at fault are alone."""
        if not items:
            return {}
        inputs = [{**data, "objectWriteTraceId": email} for email, data in items]
        try:
            result = self.session.call(
                "POST", f"{OBJECTS}/batch/{kind}", json={"inputs": inputs}, ok=(200, 201, 207, 400)
            )
        except RetriableSyncError as exc:
            return {email: _failed(email, exc.detail, True) for email, _ in items}
        except FatalSyncError as exc:
            return {email: _failed(email, exc.detail, self._holding()) for email, _ in items}
        body = result.body if isinstance(result.body, dict) else {}
        if result.status == 400:
            if body.get("category") == "VALIDATION_ERROR" and len(items) > 1:
                half = len(items) // 2
                return {**self._write(kind, items[:half]), **self._write(kind, items[half:])}
            return {email: _failed(email, describe(body), False) for email, _ in items}
        return outcomes(items, body, self.mapping)

    # --- errors ------------------------------------------------------------------------------

    def _classify(self, result: HttpResult) -> tuple[bool, str]:
        body = result.body if isinstance(result.body, dict) else None
        message = describe(body) if body else str(result.body or "")[:500]
        if result.status == 429 and body and body.get("policyName") == "DAILY":
            self._daily_until = self._clock() + DAILY_HOLD
            return False, message  # not worth retrying now: push() reports it as retryable
        return result.status in RETRY_STATUSES, message

    def _holding(self) -> bool:
        return self._clock() < self._daily_until


def _failed(email: str, error: str, retryable: bool) -> PushResult:
    return PushResult(email, ok=False, retryable=retryable, error=error)


def _all(contacts: Sequence[ContactState], error: str, retry: bool = False) -> list[PushResult]:
    return [_failed(c.email, error, retry) for c in contacts]


def _shared(crm_id: str, other: str) -> str:
    return (
        f"HubSpot contact {crm_id} is also {other}'s record (one HubSpot contact holds both "
        "emails); merge or split them in HubSpot"
    )


def _profile(profile: Mapping[str, str]) -> dict[str, str]:
    """Names and company for a contact HubSpot does not have yet (only ever on creation)."""
    return {PROFILE_PROPERTIES[k]: v for k, v in profile.items() if k in PROFILE_PROPERTIES and v}


def build_client(
    settings: Settings,
    redis_client: Any,
    crm_config: Mapping[str, Any] | None = None,
    vocab: Vocabulary | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **session_options: Any,
) -> HubSpotClient:
    """The client for the account of HUBSPOT_ACCESS_TOKEN. Validates the `crm.hubspot` mapping
    against `vocab` (the rules' stages and statuses); no network I/O here: the account's property
    options are read and checked at the first push. The request budget is HUBSPOT_RATE_LIMIT
    (default 100/10s; 190/10s for Professional and Enterprise private apps)."""
    token = settings.hubspot_access_token
    if not token:
        raise ConfigError("HUBSPOT_ACCESS_TOKEN is not set (a HubSpot private app's access token)")
    vocab = vocab or Vocabulary()
    mapping = HubSpotMapping.from_config(crm_config, vocab)
    rate = (os.environ if env is None else env).get("HUBSPOT_RATE_LIMIT") or DEFAULT_RATE
    try:
        limit, window = parse_rate(rate)
    except ValueError as exc:
        raise ConfigError(f"HUBSPOT_RATE_LIMIT: {exc}") from None
    account = "hubspot:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    limiter = RollingWindowLimiter(
        redis_client, account, limit, window + RATE_GUARD_SECONDS, together=REQUESTS_PER_PUSH
    )
    return HubSpotClient(
        settings.hubspot_api_base, token, mapping, vocab, limiter=limiter, **session_options
    )
