"""/healthz (liveness with a Redis check) and /metrics (Prometheus)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from engine.store import StoreUnavailable
from engine.web.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    svc = services()
    try:
        svc.store.ping()
    except StoreUnavailable as exc:
        return jsonify({**exc.to_dict(), "redis": "unavailable"}), 503
    rules = svc.rules
    return jsonify(
        {
            "status": "ok",
            "redis": "ok",
            "rules_version": rules.current().version,
            "rules_error": rules.status.error,
        }
    )
