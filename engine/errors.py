"""The engine's error vocabulary: one flat module, each error knows how to present itself."""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Base class. `code` is the machine-readable name, `http_status` how the web answers it."""

    code = "engine_error"
    http_status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class InvalidEvent(EngineError):
    """A behaviour event that cannot be used (missing email, bad time, bad type...)."""

    code = "invalid_event"
    http_status = 422


@dataclass(frozen=True)
class Problem:
    """One finding about a rules file: an error (the file is refused) or a warning."""

    file: str
    line: int
    severity: str  # "error" | "warning"
    message: str
    rule: str | None = None

    def __str__(self) -> str:
        where = f"[{self.rule}] " if self.rule else ""
        return f"{self.file}:{self.line}: {self.severity}: {where}{self.message}"


class RulesError(EngineError):
    """A rules file that cannot be used. Carries every error found, each with file:line:rule."""

    code = "invalid_rules"
    http_status = 422

    def __init__(self, problems: list[Problem]):
        self.problems = [p for p in problems if p.severity == "error"] or problems
        super().__init__("\n".join(str(p) for p in self.problems))


class BadRequest(EngineError):
    code = "bad_request"
    http_status = 400


class Unauthorized(EngineError):
    code = "unauthorized"
    http_status = 401


class NotFound(EngineError):
    code = "not_found"
    http_status = 404


class PayloadTooLarge(EngineError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(EngineError):
    code = "unsupported_media_type"
    http_status = 415


class RetriableSyncError(EngineError):
    """A CRM call that may succeed later: 429, 5xx, timeouts, lost connections, row locks."""

    code = "crm_retriable"
    http_status = 503

    def __init__(self, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.retry_after = retry_after


class FatalSyncError(EngineError):
    """A CRM call that will fail again until someone fixes data or configuration (validation
    errors, bad picklist values, missing required fields): the contact goes to a dead letter."""

    code = "crm_fatal"
    http_status = 502
