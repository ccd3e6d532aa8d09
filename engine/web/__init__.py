"""The web process: create_app(test_config=None), one blueprint per area, one JSON error handler.

The web never calls a CRM and never evaluates rules: it verifies, parses, makes events durable in
Redis and answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from engine import config, logs
from engine.errors import EngineError
from engine.web.services import Services

log = logging.getLogger("engine.web")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Settings come from the environment, then `test_config` (Settings field names) on top."""
    logs.to_stderr()  # gunicorn sets up only its own loggers
    settings = config.from_env()
    if test_config:
        settings = settings.with_overrides(test_config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024  # per-source limits are tighter
    app.json.sort_keys = False
    Services(settings).init_app(app)

    from engine.web import api, dashboard, health, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(dashboard.bp)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(EngineError)
    def engine_error(exc: EngineError):
        return jsonify(exc.to_dict()), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": code, "detail": exc.description}), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        detail = "an unexpected error; it has been logged"
        return jsonify({"error": "internal_error", "detail": detail}), 500
