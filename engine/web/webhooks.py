"""POST /webhooks/<source>: size and type checks -> verify -> parse -> durable accept -> 202."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from connectors import SOURCES
from connectors.base.inbound import Answer, Delivery, InboundSource, Parsed
from engine.errors import EngineError, NotFound, UnsupportedMediaType
from engine.store import StoreUnavailable
from engine.web.body import bounded_body
from engine.web.services import Services, services

bp = Blueprint("webhooks", __name__)
PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
log = logging.getLogger("engine.web.webhooks")


class UnknownSource(NotFound):
    code = "unknown_source"


@bp.post("/webhooks/<source>")
def receive(source: str):
    svc = services()
    spec = SOURCES.get(source)
    if spec is None:
        raise UnknownSource(f"no source named {source!r}; known: {', '.join(sorted(SOURCES))}")
    secret = svc.settings.source_secret(spec.name)
    if secret is None and not svc.settings.allow_unsigned_webhooks:
        raise UnknownSource(
            f"source {source!r} is not configured: set {spec.env_var} "
            "(or ALLOW_UNSIGNED_WEBHOOKS=1 for local trials)"
        )
    delivery = _delivery(svc, spec)
    spec.verify(delivery, secret)
    parsed = spec.parse(delivery)
    return _accept(svc, spec, delivery, parsed)


def _delivery(svc: Services, spec: InboundSource) -> Delivery:
    if request.mimetype not in spec.content_types:
        expected = " or ".join(spec.content_types)
        got = request.mimetype or "no content type"
        raise UnsupportedMediaType(f"{spec.name} expects {expected}, got {got}")
    body = bounded_body(spec.max_bytes, f"{spec.name} deliveries")
    return Delivery(
        source=spec.name,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        now=svc.now(),
        query=request.args.to_dict(),
        url=_raw_url(),
        method=request.method,
        seen=svc.store.was_used,
        config=svc.settings.source_config(),
    )


def _raw_url() -> str:
    """The URL as the sender wrote it (HubSpot signs it): the raw request target when the server
    keeps it (gunicorn RAW_URI, werkzeug REQUEST_URI), since request.url has decoded escapes."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return request.url
    return f"{request.scheme}://{request.host}{raw}"


def _accept(svc: Services, spec: InboundSource, delivery: Delivery, parsed: Parsed):
    result = svc.store.accept(
        parsed.events,
        delivery.now,
        delivery.source,
        parsed.ignored,
        len(parsed.unusable),
        once=parsed.once,
    )
    if parsed.unusable:
        # The whole delivery is kept, so a replay after a fix sees exactly what the vendor sent;
        # credentials are not kept.
        reasons = "; ".join(sorted({u.reason for u in parsed.unusable}))
        headers = {k: v for k, v in delivery.headers.items() if k not in PRIVATE_HEADERS}
        kept = delivery.body if parsed.keep is None else parsed.keep
        svc.store.quarantine(
            delivery.source, reasons, kept, headers, delivery.now, url=delivery.url
        )
        log.info("%s.webhook.quarantined: %s", delivery.source, reasons)
    if result.wake:
        svc.wake_events()
    answer = Answer(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        ignored=parsed.ignored,
        quarantined=len(parsed.unusable),
        events=[e.id for e in parsed.events],
    )
    if spec.respond is not None:
        status, body, content_type = spec.respond(answer)
        return Response(body, status=status, content_type=content_type)
    return jsonify(answer.to_dict()), 202


@bp.errorhandler(EngineError)
def refused(exc: EngineError):
    """Every refusal is counted by source and error, and logged under its own key."""
    source = (request.view_args or {}).get("source", "?")
    source = source if source in SOURCES else "unknown"
    log.info("%s.webhook.%s: %s", source, exc.code, exc.detail)
    if not isinstance(exc, StoreUnavailable):  # counting would wait on Redis a second time
        services().store.count("rejected", f"{source}|{exc.code}")
    return jsonify(exc.to_dict()), exc.http_status
