"""/healthz (liveness with a Redis check) and /metrics (Prometheus)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from engine.store import StoreUnavailable
from engine.web import metrics
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


@bp.get("/metrics")
def metrics_view():
    svc = services()
    body = metrics.render(svc.store, svc.settings.crm_targets)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
