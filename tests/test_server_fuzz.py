"""Generated payloads for every source against the real server (gunicorn): never a 5xx.

Each source gets mutated copies of its own fixtures and random JSON, half of them carrying valid
credentials for exactly those bytes (so they reach the parser, not just the signature check).
`make test` sends FUZZ_SERVER_COUNT (default 150) per source; `make soak` sends 10,000.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from connectors import SOURCES
from connectors.base.signatures import basic_auth_header
from connectors.hubspot.inbound import signed_headers as hubspot_signed
from connectors.standard.inbound import signed_headers as standard_signed
from tests.processes import free_port, lifecycle_serve, product_env, redis_server, redis_socket_url
from tests.test_faults import REPO, processes, short_dir  # noqa: F401 (fixtures)

COUNT = int(os.environ.get("FUZZ_SERVER_COUNT", "150"))
SECRET = "fuzz-secret-0123456789abcdef"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"fuzz-standard-secret-0123456789").decode()
ORG = "00D5g000004XXXXEAA"


def _hex(message: bytes) -> str:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def credentials(source: str, body: bytes, base: str) -> dict[str, str]:
    """Valid credentials for these exact bytes, the way each vendor signs."""
    now = datetime.now(UTC)
    ts = str(int(now.timestamp()))
    if source == "standard":
        try:  # the library signs text; a sender cannot sign bytes that are not UTF-8 either
            body.decode()
        except UnicodeDecodeError:
            return {}
        return standard_signed(STANDARD_SECRET, f"m-{random.randrange(10**9)}", body, now)
    if source == "typeform":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
        return {"Typeform-Signature": "sha256=" + base64.b64encode(digest).decode()}
    if source == "calcom":
        return {"X-Cal-Signature-256": _hex(body)}
    if source == "calendly":
        return {"Calendly-Webhook-Signature": f"t={ts},v1={_hex(ts.encode() + b'.' + body)}"}
    if source == "webflow":
        ms = str(int(now.timestamp() * 1000))
        return {"x-webflow-timestamp": ms, "x-webflow-signature": _hex(ms.encode() + b":" + body)}
    if source == "hubspot":
        return hubspot_signed(SECRET, f"{base}/webhooks/hubspot", body, now)
    return {"Authorization": basic_auth_header(SECRET)}  # Basic sources; mailgun signs in-body


def fixtures(source: str) -> list[bytes]:
    folder = REPO / "connectors" / source / "fixtures"
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".xml", ".txt")]
    return [p.read_bytes() for p in files if "SOURCES" not in p.name] or [b"{}"]


def mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(0, 8)):
        choice = rng.random()
        if not data or choice < 0.3:
            data[rng.randint(0, len(data)) :] = b""
        elif choice < 0.7:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            at = rng.randrange(len(data))
            data[at:at] = rng.choice([b"\x00", b'"', b"{", b"[]", b"\xff\xfe", b"9" * 40, b"null"])
    return bytes(data)


def random_json(rng: random.Random, depth: int = 0) -> object:
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] * (depth < 4))
    kind = rng.choice(kinds)
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "dict":
        keys = ["email", "id", "type", "payload", "event", "triggerEvent", "data", "x"]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return {
        "str": rng.choice(["", "a@b.co", "é", "x" * 300]),
        "int": rng.randint(-(2**63), 2**63),
        "float": rng.random() * 1e300,
        "bool": rng.random() < 0.5,
        "null": None,
    }[kind]


def payloads(source: str, count: int, seed: int) -> list[bytes]:
    rng, bases = random.Random(seed), fixtures(source)
    out = []
    for i in range(count):
        if i % 3 == 2:
            out.append(json.dumps(random_json(rng)).encode())
        else:
            out.append(mutate(rng, rng.choice(bases)))
    return out


def send(port: int, source: str, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/webhooks/{source}", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_generated_payloads_never_get_a_5xx(short_dir, processes, tmp_path):  # noqa: F811
    store_dir = short_dir / "redis"
    processes.add(redis_server(store_dir, "redis"))
    secrets = {f"{name.upper()}_WEBHOOK_SECRET": SECRET for name in SOURCES if name != "standard"}
    env = product_env(
        REDIS_URL=redis_socket_url(store_dir),
        RULES_FILE=str(REPO / "rules.yaml"),
        CRM_TARGETS="sandbox",
        LIFECYCLE_VAR_DIR=str(tmp_path / "var"),
        API_TOKEN="fuzz-token",
        HUBSPOT_CLIENT_SECRET=SECRET,
        SALESFORCE_ORG_ID=ORG,
        **secrets,
        STANDARD_WEBHOOK_SECRET=STANDARD_SECRET,
    )
    port = free_port()
    processes.add(lifecycle_serve(env, tmp_path / "web.log", port))
    base = f"http://127.0.0.1:{port}"
    statuses: dict[str, Counter[int]] = {}
    for index, source in enumerate(sorted(SOURCES)):
        content_type = SOURCES[source].content_types[0]
        jobs = []
        for i, body in enumerate(payloads(source, COUNT, seed=index)):
            headers = {"Content-Type": content_type}
            if i % 2 == 0:
                headers.update(credentials(source, body, base))
            jobs.append((body, headers))
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda job, s=source: send(port, s, *job), jobs))
        statuses[source] = Counter(results)
    failures = {s: dict(c) for s, c in statuses.items() if any(code >= 500 for code in c)}
    assert not failures, f"5xx answers: {failures}\n{(tmp_path / 'web.log').read_text()[-3000:]}"
    # the fuzz must reach the parsers: some signed payloads are read and answered 2xx or 400
    reached = {s for s, c in statuses.items() if c[400] or any(200 <= k < 300 for k in c)}
    assert len(reached) >= len(SOURCES) - 1, statuses
    print({s: dict(c) for s, c in statuses.items()})
