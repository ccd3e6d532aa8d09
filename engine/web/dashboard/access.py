"""Who may use the dashboard: the API token, typed once into the sign-in form, becomes a signed
session cookie. Flask's session key is derived from the token (in embedded mode the token itself
is generated into ./var/), so a new token signs everyone out; nothing secret is hard-coded.

Every action is a POST carrying the session's CSRF token, compared in constant time.
rq-dashboard, mounted at /rq behind the same sign-in, gets the token as a header for its POSTs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from rq.serializers import JSONSerializer

from engine import embedded
from engine.web.services import services

SESSION_HOURS = 12


MACHINE_PATHS = ("/webhooks/", "/api/", "/healthz", "/metrics")


class DashboardOnlySessions(SecureCookieSessionInterface):
    """Sessions are for people at the dashboard: webhooks and the bearer API never open one
    (verifying a signed cookie on every accepted event is measurable on the hot path)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(MACHINE_PATHS):
            return self.null_session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if isinstance(session, self.null_session_class):
            return
        super().save_session(app, session, response)


def derive(token: str, purpose: str) -> str:
    label = f"lifecycle dashboard {purpose}".encode()
    return hmac.new(token.encode(), label, hashlib.sha256).hexdigest()


def set_up(app: Flask) -> None:
    """Session key and cookie settings for the app, and /rq."""
    token = app.extensions["lifecycle"].api_token
    if token and not app.secret_key:
        app.secret_key = derive(token, "session key")
    app.session_interface = DashboardOnlySessions()
    app.config.update(
        SESSION_COOKIE_NAME="lifecycle_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    mount_rq(app)


def signed_in() -> bool:
    token, mark = services().api_token, session.get("auth")
    if not token or not isinstance(mark, str):
        return False
    return hmac.compare_digest(mark.encode(), derive(token, "signed in").encode())


def sign_in(token: str) -> None:
    """A fresh session (never one fixed before sign-in) with its own CSRF token."""
    session.clear()
    session.permanent = True
    session["auth"] = derive(token, "signed in")
    session["csrf"] = secrets.token_urlsafe(32)


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def csrf_token() -> str:
    if not isinstance(session.get("csrf"), str):
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not isinstance(expected, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.funnel")


def to_login() -> Response:
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


# --- /rq -----------------------------------------------------------------------------------------


def mount_rq(app: Flask) -> None:
    """rq-dashboard at /rq (0.9 works with rq 2.x), reading the engine's JSON-serialized jobs."""
    import rq_dashboard
    from rq_dashboard import web as rq_web

    rq_web.config.serializer = JSONSerializer  # the engine's queues never use pickle
    app.config["RQ_DASHBOARD_REDIS_URL"] = embedded.redis_url(app.extensions["lifecycle"].settings)
    rq_web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    # Hooked on rq-dashboard's blueprint only: the app-wide hooks would run on every event post.
    name = rq_dashboard.blueprint.name
    app.before_request_funcs.setdefault(name, []).append(_guard_rq)
    app.after_request_funcs.setdefault(name, []).append(_rq_csrf_header)


def _guard_rq() -> Any:
    if request.endpoint == "rq_dashboard.static":
        return None
    if not signed_in():
        if request.path.endswith(".json"):
            return {"error": "unauthorized", "detail": "sign in at /login"}, 401
        return to_login()
    changes = request.method not in ("GET", "HEAD")
    if (changes or request.endpoint == "rq_dashboard.requeue_all") and not csrf_ok():
        return {"error": "csrf_failed", "detail": "send the X-CSRF-Token header"}, 403
    return None


def _rq_csrf_header(response: Response) -> Response:
    """Teach rq-dashboard's jQuery to send the CSRF token with its POSTs."""
    if response.mimetype != "text/html":
        return response
    script = url_for("dashboard.static", filename="rq-csrf.js")
    tag = f'<script src="{script}" data-csrf="{csrf_token()}"></script></body>'
    response.set_data(response.get_data(as_text=True).replace("</body>", tag, 1))
    return response
