"""A faithful fake of HubSpot's CRM v3 contacts API on loopback, for tests and the benchmark.

Real HTTP (ThreadingHTTPServer in a thread). Its bodies and statuses come from the recorded ones
in fixtures/ (see fixtures/CLIENT_SOURCES.md): the property definitions and their options, the
401, the TEN_SECONDLY_ROLLING and search 429s, the 207 multi-status envelope with INVALID_OPTION
and OBJECT_NOT_FOUND errors, the "Duplicate IDs" 400, the X-HubSpot-RateLimit-* headers.

What it does like HubSpot: Bearer auth; a rolling 10-second request budget (and 5/s for search);
batch read / update / upsert of at most 100 inputs with per-input errors (207); enumeration
values checked against the property's options; a backward `lifecyclestage` write answered 2xx
with the value left as it was. Knobs for faults: `fail_next` (5xx bursts), `throttle_next`
(429 storms, TEN_SECONDLY_ROLLING or DAILY), `revoked` (the token stops working: 401), `invalid`
(per-record validation failures), `whole_batch_validation` (refuse a batch whole instead of a
207), `person_sets` (someone edits a contact in HubSpot), `on_write` (... just before our write
lands), `set_options` (an admin edits a property's options), `default_stage` (the stage HubSpot
gives contacts created without one), `retry_after` (send Retry-After with 429s), `storm` (until
`calm`, a seeded share of requests answered 429 or 5xx, mixed). `requests` logs every request with
its headers and body, `writes` every applied write, and `on_applied` is told the properties
a contact holds after each API write lands.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

FIXTURES = Path(__file__).parent / "fixtures"
OBJECTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts/"
TEXT_PROPERTIES = ("email", "firstname", "lastname", "company", "phone")
NOT_FOUND = (
    "Could not get some CONTACT objects, they may be deleted or not exist. "
    "Check that ids are valid."
)
STAMP = "2026-11-26T12:00:00.000Z"
Answer = tuple[int, dict[str, str], Any]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _error(message: str, category: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category, **extra}  # fmt: skip


class FakeHubSpot:
    def __init__(
        self,
        token: str = "pat-na1-11111111-2222-3333-4444-555555555555",
        *,
        rate: tuple[int, float] | None = (190, 10.0),
        search_rate: tuple[int, float] = (5, 1.0),
        portal_id: int = 62515,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.token, self.rate, self.search_rate = token, rate, search_rate
        self.portal_id, self.clock, self.lock = portal_id, clock, threading.RLock()
        self.contacts: dict[str, dict[str, Any]] = {}
        """record id -> {"id", "properties", "createdAt", "updatedAt", "archived"}"""
        self._emails: dict[str, str] = {}
        self._indexed: dict[str, str] = {}
        self.properties = {
            name: fixture(f"property-{name}-definition-recorded.json")["property"]
            for name in ("lifecyclestage", "hs_lead_status")
        }
        self.requests: list[dict[str, Any]] = []
        self.writes: list[tuple[str, dict[str, str], str]] = []
        """(email, properties sent, "update"|"upsert"|"person") for every applied write"""
        self.invalid: dict[str, str] = {}
        """email -> property: any value written there is refused as INVALID_OPTION"""
        self.whole_batch_validation = False
        self.retry_after: str | None = None
        """a Retry-After to send with 429s (HubSpot's recorded 429s carry none)"""
        self.default_stage: str | None = None
        self.revoked = False
        self._bursts: list[int] = []
        self._throttled, self._policy = 0, "TEN_SECONDLY_ROLLING"
        self._storm: Storm | None = None
        self.stormed: Counter[int] = Counter()
        """status -> requests a storm answered with it"""
        self.on_write: Callable[[FakeHubSpot], None] | None = None
        """called before a batch write is applied: a person editing a contact meanwhile"""
        self.on_applied: Callable[[str, dict[str, Any]], None] | None = None
        """called after an API write lands on a contact (under the fake's lock, before the answer
        leaves), with its email and a copy of the properties it now holds: when HubSpot had what"""
        self._sent: deque[float] = deque()
        self._searches: deque[float] = deque()
        self._next_id = 1001
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeHubSpot:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = fake.handle(self.command, self.path, self.headers, raw)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        httpd = self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        serve = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeHubSpot:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # --- knobs -----------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next `count` requests get a 5xx (an HTML page, as a proxy in front would send)."""
        with self.lock:
            self._bursts.extend([status] * count)

    def throttle_next(self, count: int, policy: str = "TEN_SECONDLY_ROLLING") -> None:
        """The next `count` requests get a 429: TEN_SECONDLY_ROLLING (workers that do not share
        our limiter), or DAILY (the account's daily budget, shared by all its apps, is spent)."""
        with self.lock:
            self._throttled, self._policy = count, policy

    def storm(
        self,
        share: float,
        statuses: Sequence[int] = (429, 500, 502, 503, 504),
        *,
        seed: int = 0,
        retry_after: str | None = "1",
    ) -> None:
        """Until `calm()`, each authorized request fails with probability `share`: a 429
        (TEN_SECONDLY_ROLLING, with `retry_after` as Retry-After) or a 5xx page, the status drawn
        from `statuses`. The draws come from Random(seed), so the same sequence of requests meets
        the same sequence of failures."""
        if not 0.0 <= share <= 1.0 or not statuses:
            raise ValueError("a storm needs a share between 0 and 1 and at least one status")
        with self.lock:
            self._storm = Storm(share, tuple(statuses), random.Random(seed), retry_after)

    def calm(self) -> None:
        """The storm is over: requests are answered normally again."""
        with self.lock:
            self._storm = None

    def set_options(self, prop: str, values: list[str]) -> None:
        with self.lock:
            self.properties[prop]["options"] = [
                {"label": v.title(), "value": v, "displayOrder": i, "hidden": False}
                for i, v in enumerate(values)
            ]

    def person_sets(self, email: str, /, **props: str) -> str:
        """Someone edits (or creates) the contact in HubSpot's UI: no forward-only rule applied."""
        with self.lock:
            record = self._by_email(email) or self._create(email)
            record["properties"].update(props)
            self._index(record)
            self.writes.append((email.lower(), dict(props), "person"))
            return record["id"]

    # --- inspection ------------------------------------------------------------------------

    def contact(self, email: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._by_email(email)
            return dict(record["properties"]) if record else None

    def sent(self, email: str, prop: str) -> list[str]:
        """Every value the API wrote to `prop` of the contact, in order (refused ones included)."""
        with self.lock:
            api = [p for e, p, how in self.writes if e == email and how != "person"]
            return [p[prop] for p in api if prop in p]

    def calls(self, suffix: str = "", status: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith(suffix)
                    and (status is None or r["status"] == status)]  # fmt: skip

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> Answer:
        path, _, query = raw_path.partition("?")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        entry = {"method": method, "path": path, "query": parse_qs(query),
                 "headers": dict(headers.items()), "body": body, "at": self.clock()}  # fmt: skip
        with self.lock:
            self.requests.append(entry)
            status, extra, answer = self._answer(method, path, entry["headers"], body)
            entry["status"] = status
        return status, {"Content-Type": "application/json;charset=utf-8", **extra}, answer

    def _answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        if self.revoked or auth != f"Bearer {self.token}":
            return 401, {}, {**fixture("error-401-invalid-authentication-observed.json")["body"],
                             "correlationId": str(uuid.uuid4())}  # fmt: skip
        if self._bursts:
            return _server_error(self._bursts.pop(0))
        storm = self._storm
        stormed = storm.draw() if storm is not None else None
        if storm is not None and stormed is not None:
            self.stormed[stormed] += 1
            if stormed != 429:
                return _server_error(stormed)
            status, extra, answer = self._too_many()
            after = {"Retry-After": storm.retry_after} if storm.retry_after else {}
            return status, {**extra, **after}, answer
        search = path == f"{OBJECTS}/search"
        limited = self._limit(search)
        if limited is not None:
            return limited
        extra = {} if search else self._rate_headers()
        if method == "GET" and path.startswith(PROPERTIES):
            return self._property(path.removeprefix(PROPERTIES), extra)
        routes = {"batch/read": self._read, "batch/update": self._update,
                  "batch/upsert": self._upsert, "search": self._search}  # fmt: skip
        route = routes.get(path.removeprefix(f"{OBJECTS}/")) if method == "POST" else None
        if route is None:
            return 404, extra, _error(f"No route for {method} {path}", "OBJECT_NOT_FOUND")
        if not isinstance(body, dict):
            return 400, extra, _error("Invalid input JSON on line 1", "VALIDATION_ERROR")
        status, answer = route(body)
        return status, extra, answer

    def _limit(self, search: bool) -> Answer | None:
        now = self.clock()
        if search:
            limit, window = self.search_rate
            if not _admit(self._searches, limit, window, now):
                body = fixture("error-429-search-secondly-recorded.json")["response"]["body"]
                return 429, self._retry_after(), {**body, "correlationId": str(uuid.uuid4())}
            return None
        if self._throttled:
            self._throttled -= 1
            if self._policy == "DAILY":
                body = {**fixture("error-429-daily-docs-example.json")["body"]}
                return 429, self._rate_headers(), {**body, "correlationId": str(uuid.uuid4())}
            return self._too_many()
        if self.rate is not None and not _admit(self._sent, *self.rate, now):
            return self._too_many()
        return None

    def _too_many(self) -> Answer:
        body = fixture("error-429-ten-secondly-rolling-real.json")["body"]
        group = f"publicapi:private-app-api-calls-ten-secondly:{self.portal_id}"
        answer = {**body, "correlationId": str(uuid.uuid4()), "groupName": group}
        return 429, {**self._rate_headers(), **self._retry_after()}, answer

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}

    def _rate_headers(self) -> dict[str, str]:
        limit, window = self.rate or (190, 10.0)
        recent = sum(1 for t in self._sent if t > self.clock() - window)
        return {
            "X-HubSpot-Correlation-Id": str(uuid.uuid4()),
            "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, 250000 - len(self.requests))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, limit - recent)),
        }

    # --- endpoints -------------------------------------------------------------------------

    def _property(self, name: str, extra: dict[str, str]) -> Answer:
        if name not in self.properties and name not in TEXT_PROPERTIES:
            return 404, extra, _error(f"Unable to find property {name}", "OBJECT_NOT_FOUND")
        definition = self.properties.get(name) or {"name": name, "type": "string",
                                                   "fieldType": "text", "options": []}  # fmt: skip
        return 200, extra, copy.deepcopy(definition)

    def _read(self, body: dict) -> tuple[int, dict]:
        wanted = body.get("properties") or []
        by_email = body.get("idProperty") == "email"
        results, missing = [], []
        for item in body.get("inputs") or []:
            key = str(item.get("id", ""))
            record = self._by_email(key) if by_email else self.contacts.get(key)
            if record is None:
                missing.append(key)
            else:
                results.append(self._view(record, {p: record["properties"].get(p) for p in wanted}))
        if not missing:
            return _batch(results, [])
        return _batch(results, [_error(NOT_FOUND, "OBJECT_NOT_FOUND", context={"ids": missing})])

    def _update(self, body: dict) -> tuple[int, dict]:
        return self._write(body, "update")

    def _upsert(self, body: dict) -> tuple[int, dict]:
        return self._write(body, "upsert")

    def _write(self, body: dict, kind: str) -> tuple[int, dict]:
        inputs = [i for i in body.get("inputs") or [] if isinstance(i, dict)]
        refused = self._refuse_batch(inputs, kind)
        if refused is not None:
            return refused
        if self.on_write is not None:
            self.on_write(self)
        checked = [(i, self._problems(i, kind)) for i in inputs]
        if self.whole_batch_validation and any(problems for _, problems in checked):
            items = [p for _, problems in checked for p in problems]
            return 400, _error(_invalid_message(items), "VALIDATION_ERROR")
        results, errors, missing, traces = [], [], [], []
        for item, problems in checked:
            trace = item.get("objectWriteTraceId")
            if problems:
                context = {"context": {"objectWriteTraceId": [trace]}} if trace else {}
                errors.append(_error(_invalid_message(problems), "VALIDATION_ERROR", **context))
                continue
            record = self._target(item, kind)
            if record is None:
                missing.append(str(item.get("id")))
                traces.extend([trace] if trace else [])
                continue
            new = record.pop("_new", False)
            view = self._view(record, self._apply(record, item.get("properties") or {}, kind))
            view |= {"objectWriteTraceId": trace} if trace else {}
            results.append(view | ({"new": new} if kind == "upsert" else {}))
        if missing:
            context = {"ids": missing} | ({"objectWriteTraceId": traces} if traces else {})
            errors.append(_error(NOT_FOUND, "OBJECT_NOT_FOUND", context=context))
        return _batch(results, errors)

    def _refuse_batch(self, inputs: list[dict], kind: str) -> tuple[int, dict] | None:
        if not inputs or len(inputs) > 100:
            message = f"Batch inputs must hold 1 to 100 items, got {len(inputs)}"
            return 400, _error(message, "VALIDATION_ERROR")
        if kind == "upsert" and any(i.get("idProperty") != "email" for i in inputs):
            return 400, _error("Upsert needs a unique idProperty (e.g. email)", "VALIDATION_ERROR")
        ids = [str(i.get("id", "")).lower() for i in inputs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            message = f"Duplicate IDs found in batch input: [{', '.join(dupes)}]."
            message += " IDs must be unique"
            return 400, _error(message, "VALIDATION_ERROR", context={"ids": dupes})
        return None

    def _problems(self, item: dict, kind: str) -> list[dict[str, Any]]:
        props, key = item.get("properties") or {}, str(item.get("id", ""))
        email = key.lower() if kind == "upsert" else self._email_of(key)
        problems = []
        for name, value in props.items():
            definition = self.properties.get(name)
            if definition is None and name not in TEXT_PROPERTIES:
                message = f'Property "{name}" does not exist'
                problems.append(self._problem(name, message, "PROPERTY_DOESNT_EXIST"))
                continue
            allowed = [o["value"] for o in (definition or {}).get("options", [])]
            bad = definition is not None and value != "" and value not in allowed
            if bad or self.invalid.get(email or "") == name:
                message = f"{value} was not one of the allowed options: [{', '.join(allowed)}]"
                problems.append(self._problem(name, message, "INVALID_OPTION"))
        return problems

    def _problem(self, name: str, message: str, code: str) -> dict[str, Any]:
        return {"isValid": False, "message": message, "error": code, "name": name,
                "localizedErrorMessage": message, "portalId": self.portal_id}  # fmt: skip

    def _target(self, item: dict, kind: str) -> dict[str, Any] | None:
        if kind == "update":
            return self.contacts.get(str(item.get("id")))
        record = self._by_email(str(item["id"]))
        if record is None:
            record = self._create(str(item["id"]))
            record["_new"] = True
        return record

    def _apply(self, record: dict, props: dict[str, str], kind: str) -> dict[str, Any]:
        """Write like HubSpot: a lifecyclestage behind the current one is silently kept."""
        held = record["properties"]
        for name, value in props.items():
            if name == "lifecyclestage" and value and self._behind(value, held.get(name)):
                continue
            held[name] = value if value != "" else None
        held["lastmodifieddate"] = record["updatedAt"] = STAMP
        self._index(record)
        self.writes.append((str(held.get("email") or ""), dict(props), kind))
        if self.on_applied is not None:
            self.on_applied(str(held.get("email") or ""), dict(held))
        return {name: held.get(name) for name in props} | {"email": held.get("email")}

    def _behind(self, value: str, current: str | None) -> bool:
        rank = {o["value"]: o["displayOrder"] for o in self.properties["lifecyclestage"]["options"]}
        return current in rank and value in rank and rank[value] < rank[current]

    def _search(self, body: dict) -> tuple[int, dict]:
        groups = body.get("filterGroups") or []
        ordered = sorted(self.contacts.values(), key=lambda r: int(r["id"]))
        matches = [
            r
            for r in ordered
            if not groups or any(_matches(r, g.get("filters") or []) for g in groups)
        ]
        limit = min(int(body.get("limit") or 10), 200)
        start = int(body.get("after") or 0)
        wanted = body.get("properties") or ["createdate", "email", "firstname", "lastname"]
        page = [self._view(r, {p: r["properties"].get(p) for p in wanted})
                for r in matches[start : start + limit]]  # fmt: skip
        answer: dict[str, Any] = {"total": len(matches), "results": page}
        if start + limit < len(matches):
            answer["paging"] = {"next": {"after": str(start + limit)}}
        return 200, answer

    # --- records ---------------------------------------------------------------------------

    def _by_email(self, email: str) -> dict[str, Any] | None:
        record_id = self._emails.get(email.strip().lower())
        return self.contacts.get(record_id) if record_id else None

    def _email_of(self, record_id: str) -> str | None:
        record = self.contacts.get(record_id)
        return (record["properties"].get("email") or "").lower() if record else None

    def _index(self, record: dict[str, Any]) -> None:
        email = (record["properties"].get("email") or "").strip().lower()
        old = self._indexed.get(record["id"])
        if old and old != email:
            self._emails.pop(old, None)
        if email:
            self._emails[email], self._indexed[record["id"]] = record["id"], email

    def _create(self, email: str) -> dict[str, Any]:
        record_id, self._next_id = str(self._next_id), self._next_id + 1
        props = {"email": email.strip().lower(), "hs_object_id": record_id, "createdate": STAMP,
                 "lifecyclestage": self.default_stage}  # fmt: skip
        record = {"id": record_id, "properties": props, "createdAt": STAMP, "updatedAt": STAMP,
                  "archived": False}  # fmt: skip
        self.contacts[record_id] = record
        self._index(record)
        return record

    def _view(self, record: dict, props: dict[str, Any]) -> dict[str, Any]:
        held = record["properties"]
        base = {"hs_object_id": record["id"], "createdate": held.get("createdate"),
                "lastmodifieddate": held.get("lastmodifieddate", STAMP)}  # fmt: skip
        return {"id": record["id"], "properties": {**base, **props},
                "createdAt": record["createdAt"], "updatedAt": record["updatedAt"],
                "archived": False}  # fmt: skip


class Storm:
    """A share of requests answered with a status drawn from `statuses` (seeded)."""

    def __init__(
        self, share: float, statuses: tuple[int, ...], rng: random.Random, retry_after: str | None
    ):
        self.share, self.statuses, self.rng, self.retry_after = share, statuses, rng, retry_after

    def draw(self) -> int | None:
        """The status this request gets, or None when it passes."""
        hit = self.rng.random() < self.share
        status = self.rng.choice(self.statuses)
        return status if hit else None


def _server_error(status: int) -> Answer:
    """A 5xx as a proxy in front of HubSpot sends it: an HTML page."""
    page = f"<html><body><h1>{status} Server Error</h1></body></html>"
    return status, {"Content-Type": "text/html"}, page


def _admit(sent: deque[float], limit: int, window: float, now: float) -> bool:
    while sent and sent[0] <= now - window:
        sent.popleft()
    if len(sent) >= limit:
        return False
    sent.append(now)
    return True


def _batch(results: list[dict], errors: list[dict]) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    return (207 if errors else 200), {**body, "startedAt": STAMP, "completedAt": STAMP}


def _invalid_message(problems: list[dict]) -> str:
    return "Property values were not valid: " + json.dumps(problems, separators=(",", ":"))


def _matches(record: dict, filters: list[dict]) -> bool:
    """Every filter holds (a filter group); EQ/NEQ/IN/NOT_IN compare case-insensitively."""
    for f in filters:
        raw = record["properties"].get(f.get("propertyName"))
        value = None if raw in (None, "") else str(raw).lower()
        one = str(f.get("value", "")).lower()
        many = [str(x).lower() for x in f.get("values") or []]
        held = {
            "EQ": value == one,
            "NEQ": value != one,
            "IN": value in many,
            "NOT_IN": value not in many,
            "HAS_PROPERTY": value is not None,
            "NOT_HAS_PROPERTY": value is None,
        }.get(f.get("operator"), False)
        if not held:
            return False
    return True
