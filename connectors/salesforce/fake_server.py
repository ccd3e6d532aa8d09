"""A fake Salesforce org on loopback (real HTTP) for the tests and the benchmark.

It answers what the client sends, the way Salesforce does, with bodies built from the captured
fixtures in `fixtures/api/`: the OAuth token endpoint (form body only, client credentials), SOQL
on Lead / Contact / LeadStatus (`WHERE <field> IN (...)` or `= '...'`, `LIMIT`, paging by
`nextRecordsUrl`), single-record PATCH (204) and create (201), and sObject Collections create and
update with per-record results. Lead `Status` is a restricted picklist of the org's LeadStatus
values and the stage field one of the stage names (or free text); LastName and Company are
required on a Lead; converted leads are read-only; every API answer carries `Sforce-Limit-Info:
api-usage=N/M`; a write without `Sforce-Auto-Assign: FALSE` lets "assignment rules" take the
lead's owner.

Everything is inspectable (`leads`, `contacts`, `log` of every request with headers and body,
`on_applied` told each record's fields after an API write lands) and
faults are knobs: `throttle` (a rolling window answered with 403 REQUEST_LIMIT_EXCEEDED),
`daily_limit`, `fail_next` (5xx bursts), `storm` (until `calm`, a seeded share of API requests
answered 403 REQUEST_LIMIT_EXCEEDED, 429 or 5xx, mixed), `expire_tokens`, `token_error`,
`lock_rows`, `validation_rule`, `remove_status`, and a person's edits: `person_sets`, `convert`.
Answers that no fixture shows are marked UNVERIFIED where they are made.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.model import DEFAULT_STAGES

FIXTURES = Path(__file__).parent / "fixtures" / "api"
ORG_ID, USER_ID = "00D5e000000FAKEEAA", "005000000000001AAA"
ASSIGNED_OWNER = "005000000000009AAA"
"""Who the org's lead assignment rules would make the owner (a write without the header)."""
LEAD_STATUSES = (
    ("Open - Not Contacted", False, True),
    ("Working - Contacted", False, False),
    ("Closed - Converted", True, False),
    ("Closed - Not Converted", False, False),
)
"""(value, IsConverted, IsDefault): the Developer Edition set (reference §6.1)."""
BASE_FIELDS = {
    "Lead": ("Id", "Email", "FirstName", "LastName", "Company", "Phone", "Status", "OwnerId",
             "IsConverted", "ConvertedContactId"),
    "Contact": ("Id", "Email", "FirstName", "LastName", "Phone", "OwnerId", "AccountId"),
    "LeadStatus": ("Id", "ApiName", "MasterLabel", "IsConverted", "IsDefault", "SortOrder"),
}  # fmt: skip
READ_ONLY = frozenset({"Id", "IsConverted", "ConvertedContactId"})
REQUIRED = {"Lead": ("LastName", "Company"), "Contact": ("LastName",)}
PREFIX = {"Lead": "00Q", "Contact": "003"}
NOT_FOUND = "rest_errors/404_not_found_docs.json"
_SELECT = re.compile(
    r"^\s*SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+(?P<obj>\w+)"
    r"(?:\s+WHERE\s+(?P<col>\w+)\s*(?:IN\s*\((?P<list>.*)\)|=\s*(?P<one>'.*')))?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = re.compile(r"\s*'((?:[^'\\]|\\.)*)'\s*(?:,|$)", re.DOTALL)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Answer(Exception):
    """Ends a request early with this status and body."""

    def __init__(self, status: int, body: Any):
        super().__init__(status)
        self.status, self.body = status, body


def refuse(status: int, name: str | None, message: str | None = None, code: str = "") -> Answer:
    """A request-level error: a fixture's body (its message replaced), or a code + message."""
    body = fixture(name) if name else [{"message": message, "errorCode": code}]
    if message is not None:
        body[0]["message"] = message
    return Answer(status, body)


def record_error(name: str | None, message: str | None = None, fields=(), code: str = "") -> dict:
    """An error as sObject Collections reports it per record (`statusCode`, not `errorCode`)."""
    first = fixture(name)[0] if name else {"errorCode": code, "message": message}
    return {
        "statusCode": first["errorCode"],
        "message": message if message is not None else first["message"],
        "fields": list(fields),
    }


class Rejected(Exception):
    def __init__(self, error: dict):
        super().__init__(error["statusCode"])
        self.error = error


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: Any
    status: int
    at: float = 0.0
    """The fake's clock when the request was answered."""

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PATCH") and self.path.startswith("/services/data/")


class FakeSalesforce:
    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        api_version: str = "v64.0",
        stage_field: str = "Lifecycle_Stage__c",
        stage_values: tuple[str, ...] | None = DEFAULT_STAGES,
        daily_limit: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client_id, self.client_secret, self.version = client_id, client_secret, api_version
        self.stage_field, self.stage_values, self.clock = stage_field, stage_values, clock
        self.daily_limit, self.api_usage = daily_limit, 0
        self.leads: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.statuses = [
            {"Id": f"01J{i:015d}", "ApiName": v, "MasterLabel": v, "IsConverted": c,
             "IsDefault": d, "SortOrder": i}
            for i, (v, c, d) in enumerate(LEAD_STATUSES, 1)
        ]  # fmt: skip
        self.log: list[Logged] = []
        self.on_applied: Callable[[str, dict[str, Any]], None] | None = None
        """Called after an API write lands on a Lead or Contact (under the fake's lock, before the
        answer leaves), with its Email and a copy of the record's fields: when the org had what."""
        self.tokens: set[str] = set()
        self.token_requests = self.throttled = 0
        self.token_error: str | None = None
        """"password" or "expired": the token endpoint answers that invalid_grant fixture."""
        self.page_size = 2000
        self._window: tuple[int, float] | None = None
        self._sent: collections.deque[float] = collections.deque()
        self._fail: list[int] = []
        self._storm: _Storm | None = None
        self.stormed: collections.Counter[int] = collections.Counter()
        """status -> API requests a storm answered with it"""
        self._expire_in: int | None = None
        self._locked = 0
        self._rules: dict[str, str] = {}
        self._pages: dict[str, list[dict]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    def start(self) -> FakeSalesforce:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def settings(self) -> dict[str, str]:
        """Settings overrides that point a client here."""
        return {
            "salesforce_login_url": self.base_url,
            "salesforce_client_id": self.client_id,
            "salesforce_client_secret": self.client_secret,
            "salesforce_api_version": self.version,
        }

    # --- knobs and views --------------------------------------------------------------------

    def throttle(self, limit: int | None, window_seconds: float = 10.0) -> None:
        """Answer 403 REQUEST_LIMIT_EXCEEDED past `limit` API requests per rolling window."""
        self._window = (limit, window_seconds) if limit else None
        self._sent.clear()

    def fail_next(self, count: int, status: int = 503) -> None:
        self._fail.extend([status] * count)

    def storm(
        self,
        share: float,
        statuses: Sequence[int] = (403, 429, 500, 502, 503),
        *,
        seed: int = 0,
        retry_after: str | None = "1",
    ) -> None:
        """Until `calm()`, each authorized API request fails with probability `share`, with a
        status drawn from `statuses`: 403 is the platform's REQUEST_LIMIT_EXCEEDED (concurrent)
        answer, 429 an edge throttle with `retry_after` as Retry-After (UNVERIFIED: the REST API
        itself throttles with the 403), 5xx as `fail_next`. The draws come from Random(seed)."""
        if not 0.0 <= share <= 1.0 or not statuses:
            raise ValueError("a storm needs a share between 0 and 1 and at least one status")
        with self._lock:
            self._storm = _Storm(share, tuple(statuses), random.Random(seed), retry_after)

    def calm(self) -> None:
        """The storm is over: API requests are answered normally again."""
        with self._lock:
            self._storm = None

    def expire_tokens(self, after: int = 0) -> None:
        """Every token issued so far stops working after `after` more API requests."""
        self._expire_in = after

    def lock_rows(self, count: int) -> None:
        """The next `count` record writes fail with UNABLE_TO_LOCK_ROW."""
        self._locked = count

    def validation_rule(self, email: str, message: str | None) -> None:
        """A validation rule that rejects writes to this person's records (None lifts it)."""
        if message is None:
            self._rules.pop(email.lower(), None)
        else:
            self._rules[email.lower()] = message

    def remove_status(self, value: str) -> None:
        """An admin removes a Lead Status value."""
        self.statuses = [s for s in self.statuses if s["ApiName"] != value]

    def add_lead(self, email: str, **fields: Any) -> str:
        with self._lock:
            return self._insert("Lead", {"LastName": "Lee", "Company": "Acme", **fields,
                                         "Email": email})  # fmt: skip

    def person_sets(self, record_id: str, **fields: Any) -> None:
        """A person's edit in the Salesforce UI (no API request, not logged)."""
        with self._lock:
            (self.leads if record_id in self.leads else self.contacts)[record_id].update(fields)

    def convert(self, lead_id: str) -> str:
        """Lead conversion: a Contact with the lead's person and stage; the lead turns read-only."""
        with self._lock:
            lead = self.leads[lead_id]
            keep = ("Email", "FirstName", "LastName", "Phone", self.stage_field)
            contact_id = self._insert("Contact", {k: lead[k] for k in keep if k in lead})
            lead.update(
                IsConverted=True, ConvertedContactId=contact_id, Status="Closed - Converted"
            )
            return contact_id

    def lead_for(self, email: str) -> dict[str, Any] | None:
        wanted = email.casefold()
        return next((r for r in self.leads.values() if r["Email"].casefold() == wanted), None)

    def leads_with(self, email: str) -> list[dict[str, Any]]:
        """Copies of every Lead with this email (more than one: a duplicate was created), safe to
        call while requests are being served."""
        wanted = email.casefold()
        with self._lock:
            leads = list(self.leads.values())
            return [dict(r) for r in leads if str(r.get("Email") or "").casefold() == wanted]

    def writes(self) -> list[Logged]:
        return [entry for entry in self.log if entry.is_write]

    def api_requests(self) -> list[Logged]:
        return [e for e in self.log if e.path.startswith(f"/services/data/{self.version}/")]

    # --- HTTP -------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple:
        parts = urlsplit(target)
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            body: Any = json.loads(raw) if raw and "json" in lower.get("content-type", "") else raw
        except ValueError:
            body = raw
        extra: dict[str, str] = {}
        with self._lock:
            try:
                status, payload = self._route(method, parts.path, parts.query, lower, body, raw)
            except Answer as answer:
                status, payload = answer.status, answer.body
            query = dict(parse_qsl(parts.query))
            self.log.append(Logged(method, parts.path, query, lower, body, status, self.clock()))
            if status == 429 and self._storm is not None and self._storm.retry_after:
                extra["Retry-After"] = self._storm.retry_after
            if parts.path.startswith("/services/data/v") and status != 401:
                extra["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.daily_limit}"
        if payload is None:
            return status, extra, b""
        if isinstance(payload, str):
            return status, {"Content-Type": "text/html", **extra}, payload.encode()
        data = json.dumps(payload).encode()
        return status, {"Content-Type": "application/json;charset=UTF-8", **extra}, data

    def _route(self, method, path, query, headers, body, raw) -> tuple[int, Any]:
        if path == "/services/oauth2/token" and method == "POST":
            return self._token(headers, raw)
        if path.rstrip("/") == "/services/data":
            return 200, [{"label": "Summer '25", "url": f"/services/data/{self.version}",
                          "version": self.version[1:]}]  # fmt: skip
        if not path.startswith("/services/data/v"):
            raise refuse(404, NOT_FOUND)
        if len(path) + len(query) > 16_384:
            return 414, "<html><body>414 URI Too Long</body></html>"
        self._tick_tokens()
        if headers.get("authorization", "").removeprefix("Bearer ").strip() not in self.tokens:
            raise refuse(401, "rest_errors/401_invalid_session_id.json")
        self._limits()
        if self._fail:
            return _server_error(self._fail.pop(0))
        stormed = self._storm.draw() if self._storm is not None else None
        if stormed is not None:
            self.stormed[stormed] += 1
            if stormed == 403:
                raise refuse(403, "rest_errors/403_request_limit_exceeded_concurrent.json")
            if stormed == 429:  # UNVERIFIED: an edge throttle's page
                return 429, "<html><body><h1>429 Too Many Requests</h1></body></html>"
            return _server_error(stormed)
        prefix = f"/services/data/{self.version}/"
        if not path.startswith(prefix):
            raise refuse(404, NOT_FOUND)
        rest, unassigned = path.removeprefix(prefix), headers.get("sforce-auto-assign") == "FALSE"
        parts = rest.split("/")
        if method == "GET" and rest == "query":
            return 200, self._soql(dict(parse_qsl(query)).get("q", ""))
        if method == "GET" and parts[0] == "query" and len(parts) == 2:
            return 200, self._page(parts[1])
        if rest == "composite/sobjects" and method in ("PATCH", "POST"):
            return 200, self._collection(body, method == "POST", unassigned)
        if parts[0] == "sobjects" and len(parts) in (2, 3) and parts[1] in REQUIRED:
            return self._single(method, parts[1], (parts[2:] or [None])[0], body, unassigned)
        raise refuse(404, NOT_FOUND)

    def _tick_tokens(self) -> None:
        if self._expire_in is not None:
            if self._expire_in <= 0:
                self.tokens.clear()
                self._expire_in = None
            else:
                self._expire_in -= 1

    def _limits(self) -> None:
        if self.api_usage >= self.daily_limit:
            raise refuse(403, "rest_errors/403_request_limit_exceeded_daily.json")
        if self._window is not None:
            (limit, window), now = self._window, self.clock()
            while self._sent and self._sent[0] <= now - window:
                self._sent.popleft()
            if len(self._sent) >= limit:
                self.throttled += 1
                raise refuse(403, "rest_errors/403_request_limit_exceeded_concurrent.json")
            self._sent.append(now)
        self.api_usage += 1

    def _token(self, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        self.token_requests += 1
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        form_body = headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        if not form_body or form.get("grant_type") != "client_credentials":
            # UNVERIFIED description; the endpoint reads form fields only
            return 400, {"error": "unsupported_grant_type", "error_description": "grant type "
                         "not supported"}  # fmt: skip
        if self.token_error:
            name = {"password": "password", "expired": "expired_refresh"}[self.token_error]
            return 400, fixture(f"oauth/token_error_invalid_grant_{name}.json")
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                  self.client_secret):  # fmt: skip
            # UNVERIFIED wording for a wrong consumer key or secret
            return 400, {"error": "invalid_client", "error_description": "invalid client "
                         "credentials"}  # fmt: skip
        body = fixture("oauth/token_success_client_credentials.json")
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(32)}"
        issued = str(int(time.time() * 1000))
        identity = f"{self.base_url}/id/{ORG_ID}/{USER_ID}"
        digest = hmac.new(self.client_secret.encode(), (identity + issued).encode(), hashlib.sha256)
        signature = base64.b64encode(digest.digest()).decode()
        body.update(access_token=token, instance_url=self.base_url, id=identity,
                    issued_at=issued, signature=signature, scope="api")  # fmt: skip
        self.tokens.add(token)
        return 200, body

    # --- SOQL -------------------------------------------------------------------------------

    def _soql(self, soql: str) -> dict[str, Any]:
        found = _SELECT.match(soql)
        values = _literals(found["list"] if found and found["list"] is not None else
                           found["one"] if found else None)  # fmt: skip
        if not found or (found["col"] and values is None):  # UNVERIFIED message; code per [R4]
            raise refuse(400, None, f"unexpected token: {soql[:80]}", "MALFORMED_QUERY")
        sobject = found["obj"]
        if sobject not in BASE_FIELDS:
            raise refuse(400, None, f"sObject type '{sobject}' is not supported.", "INVALID_TYPE")
        known = {f.lower(): f for f in self._fields(sobject)}
        fields = [f.strip() for f in found["fields"].split(",")]
        for name in [*fields, found["col"] or "Id"]:
            if name.lower() not in known:
                message = f"No such column '{name}' on sobject of type {sobject}"
                raise refuse(400, "rest_errors/400_invalid_field.json", message)
        rows = self.statuses if sobject == "LeadStatus" else list(self._table(sobject).values())
        if found["col"]:
            column = known[found["col"].lower()]
            if column == "Id":
                wanted = {v[:15] for v in values or ()}
                rows = [r for r in rows if r["Id"][:15] in wanted]
            else:
                folded = {v.casefold() for v in values or ()}
                rows = [r for r in rows if str(r.get(column) or "").casefold() in folded]
        rows = rows[: int(found["limit"])] if found["limit"] else rows
        return self._first_page([self._shape(sobject, r, [known[f.lower()] for f in fields])
                                 for r in rows])  # fmt: skip

    def _shape(self, sobject: str, row: dict, fields: list[str]) -> dict:
        url = f"/services/data/{self.version}/sobjects/{sobject}/{row['Id']}"
        return {"attributes": {"type": sobject, "url": url}, **{f: row.get(f) for f in fields}}

    def _first_page(self, records: list[dict]) -> dict:
        page, rest = records[: self.page_size], records[self.page_size :]
        body: dict[str, Any] = {"totalSize": len(records), "done": not rest, "records": page}
        if rest:
            locator = f"01g{next(self._ids):015d}"
            self._pages[locator] = rest
            body["nextRecordsUrl"] = f"/services/data/{self.version}/query/{locator}"
        return body

    def _page(self, locator: str) -> dict[str, Any]:
        if locator not in self._pages:
            raise refuse(404, NOT_FOUND)
        return self._first_page(self._pages.pop(locator))

    # --- writes -----------------------------------------------------------------------------

    def _collection(self, body: Any, create: bool, unassigned: bool) -> list[dict]:
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records:
            raise Answer(400, fixture("composite/sobjects_400_request_level_error_restforce.json"))
        if len(records) > 200:  # UNVERIFIED message
            raise refuse(400, None, "record limit reached. cannot submit more than 200 records "
                         "into this call", "EXCEEDED_ID_LIMIT")  # fmt: skip
        for record in records:
            self._known_fields(record)
        checked = []
        for record in records:
            try:
                checked.append((record.get("id"), self._check(record, create)))
            except Rejected as exc:  # a malformed id is not echoed back (docs example)
                malformed = exc.error["statusCode"] == "MALFORMED_ID"
                checked.append((None if malformed else record.get("id"), exc.error))
        if any(error for _, error in checked) and body.get("allOrNone"):
            rolled = fixture("composite/sobjects_update_200_rolled_back_allOrNone_true_docs.json")
            collateral = rolled[0]["errors"][0]
            return [_failed(rid, error or collateral) for rid, error in checked]
        return [
            _failed(rid, error) if error else
            {"id": self._apply(record, create, unassigned), "success": True, "errors": []}
            for record, (rid, error) in zip(records, checked, strict=True)
        ]  # fmt: skip

    def _single(self, method, sobject, record_id, body, unassigned) -> tuple[int, Any]:
        if method == "GET" and record_id in self._table(sobject):
            return 200, self._shape(sobject, self._table(sobject)[record_id],
                                    list(self._fields(sobject)))  # fmt: skip
        if method not in ("PATCH", "POST") or not isinstance(body, dict):
            raise refuse(404, NOT_FOUND)
        record = {**body, "attributes": {"type": sobject}}
        if record_id:
            record["id"] = record_id
        self._known_fields(record)
        try:
            self._check(record, method == "POST")
        except Rejected as exc:
            code, error = exc.error["statusCode"], exc.error
            status = 404 if code in ("NOT_FOUND", "ENTITY_IS_DELETED") else 400
            raise Answer(status, [{"message": error["message"], "errorCode": code,
                                   "fields": error["fields"]}]) from None  # fmt: skip
        rid = self._apply(record, method == "POST", unassigned)
        if method == "POST":
            return 201, {**fixture("rest_success/create_201.json"), "id": rid}
        return 204, None

    def _known_fields(self, record: Any) -> None:
        sobject = (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
        if sobject not in REQUIRED:  # UNVERIFIED message
            raise refuse(400, None, f"sObject type '{sobject}' is not supported.", "INVALID_TYPE")
        for name in record:
            if name not in ("attributes", "id") and name not in self._fields(sobject):
                message = f"No such column '{name}' on sobject of type {sobject}"
                raise refuse(400, "rest_errors/400_invalid_field.json", message)

    def _check(self, record: dict, create: bool) -> None:
        """Raises Rejected with the per-record error; changes nothing."""
        sobject, rid = record["attributes"]["type"], record.get("id")
        sent = {k: v for k, v in record.items() if k not in ("attributes", "id")}
        row = sent
        if not create:
            if not isinstance(rid, str) or not re.fullmatch(PREFIX[sobject] + r"\w{12}(\w{3})?",
                                                            rid):  # fmt: skip
                message = f"{sobject} ID: id value of incorrect type: {rid}"
                raise Rejected(record_error("rest_errors/400_malformed_id_docs.json", message,
                                            ["Id"]))  # fmt: skip
            current = self._table(sobject).get(rid)
            if current is None:
                raise Rejected(record_error(NOT_FOUND))
            if current.get("IsConverted"):  # UNVERIFIED code and message
                message = "cannot reference converted lead"
                raise Rejected(record_error(None, message, code="CANNOT_UPDATE_CONVERTED_LEAD"))
            row = {**current, **sent}
        missing = [f for f in REQUIRED[sobject] if not row.get(f)]
        if missing:  # UNVERIFIED message format
            message = f"Required fields are missing: [{', '.join(missing)}]"
            raise Rejected(record_error(None, message, missing, "REQUIRED_FIELD_MISSING"))
        touched = sorted(READ_ONLY & set(sent))
        if touched:  # UNVERIFIED message
            message = f"Unable to create/update fields: {', '.join(touched)}."
            raise Rejected(record_error(None, message, touched, "INVALID_FIELD_FOR_INSERT_UPDATE"))
        self._check_picklists(sobject, sent)
        if self._locked > 0:
            self._locked -= 1
            raise Rejected(record_error("rest_errors/unable_to_lock_row.json"))
        rule = self._rules.get(str(row.get("Email") or "").lower())
        if rule:
            raise Rejected(record_error(None, rule, code="FIELD_CUSTOM_VALIDATION_EXCEPTION"))

    def _check_picklists(self, sobject: str, sent: dict[str, Any]) -> None:
        checks = [(self.stage_field, "Lifecycle Stage", self.stage_values)]
        if sobject == "Lead":
            checks.append(("Status", "Lead Status", tuple(s["ApiName"] for s in self.statuses)))
        for field, label, allowed in checks:
            if field in sent and allowed is not None and sent[field] not in allowed:
                text = str(sent[field]).replace("&", "&amp;").replace("'", "&#39;")
                message = f"{label}: bad value for restricted picklist field: {text}"
                raise Rejected(record_error("rest_errors/400_restricted_picklist.json", message,
                                            [field]))  # fmt: skip

    def _apply(self, record: dict, create: bool, unassigned: bool) -> str:
        sobject = record["attributes"]["type"]
        fields = {k: v for k, v in record.items() if k not in ("attributes", "id")}
        if create:
            rid = self._insert(sobject, fields)
        else:
            rid = record["id"]
            self._table(sobject)[rid].update(fields)
        if sobject == "Lead" and not unassigned:
            self.leads[rid]["OwnerId"] = ASSIGNED_OWNER  # assignment rules ran
        if self.on_applied is not None:
            row = self._table(sobject)[rid]
            self.on_applied(str(row.get("Email") or ""), dict(row))
        return rid

    def _insert(self, sobject: str, fields: dict[str, Any]) -> str:
        rid = f"{PREFIX[sobject]}5e{next(self._ids):010d}AAA"
        row = {**dict.fromkeys(self._fields(sobject)), "OwnerId": USER_ID, **fields, "Id": rid}
        if sobject == "Lead":
            default = next(s["ApiName"] for s in self.statuses if s["IsDefault"])
            row.update(Status=row["Status"] or default, IsConverted=False)
        self._table(sobject)[rid] = row
        return rid

    def _fields(self, sobject: str) -> tuple[str, ...]:
        base = BASE_FIELDS[sobject]
        return base if sobject == "LeadStatus" else (*base, self.stage_field)

    def _table(self, sobject: str) -> dict[str, dict[str, Any]]:
        return self.leads if sobject == "Lead" else self.contacts


@dataclass
class _Storm:
    share: float
    statuses: tuple[int, ...]
    rng: random.Random
    retry_after: str | None

    def draw(self) -> int | None:
        """The status this request gets, or None when it passes."""
        hit = self.rng.random() < self.share
        status = self.rng.choice(self.statuses)
        return status if hit else None


def _failed(record_id: str | None, error: dict) -> dict:
    return {**({"id": record_id} if record_id else {}), "success": False, "errors": [error]}


def _literals(text: str | None) -> list[str] | None:
    """The string literals of an IN list (or one `= '...'`), unescaped; None when malformed."""
    if text is None:
        return None
    values, pos = [], 0
    while pos < len(text.rstrip()):
        found = _LITERAL.match(text, pos)
        if not found:
            return None
        values.append(re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m[1], m[1]), found[1]))
        pos = found.end()
    return values


def _server_error(status: int) -> tuple[int, Any]:
    if status == 500:  # UNVERIFIED body: the platform's generic error
        return 500, [{"message": "An unexpected error occurred. Please include this ErrorId if "
                      "you contact support: 1234567890-12345 (-1234567890)",
                      "errorCode": "UNKNOWN_EXCEPTION"}]  # fmt: skip
    # 502/503 come from Salesforce Edge or maintenance pages: HTML (UNVERIFIED exact text)
    return status, f"<html><body><h1>{status} Service Unavailable</h1></body></html>"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one write (no delayed-ACK stalls)
    fake: FakeSalesforce

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, body = self.fake.handle(self.command, self.path, dict(self.headers), raw)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
