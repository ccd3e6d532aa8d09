"""The fake org answers as the captured Salesforce bodies do (so the client tests mean something),
and every API fixture the client relies on is served or understood here."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from connectors.base.http import HttpResult
from connectors.salesforce.auth import ApiUsage, first_error, make_classifier
from connectors.salesforce.fake_server import ASSIGNED_OWNER, FIXTURES, FakeSalesforce, fixture

V = "/services/data/v64.0"


@pytest.fixture
def fake():
    server = FakeSalesforce().start()
    yield server
    server.stop()


def call(fake, method, path, body=None, token=None, form=None, headers=None):
    data = None
    sent = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    if token:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(fake.base_url + path, data, sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            status, raw, got = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    parsed = json.loads(raw) if raw and "json" in got.get("Content-Type", "") else raw
    return status, parsed, got


def token(fake) -> str:
    form = {"grant_type": "client_credentials", "client_id": fake.client_id,
            "client_secret": fake.client_secret}  # fmt: skip
    status, body, _ = call(fake, "POST", "/services/oauth2/token", form=form)
    assert status == 200
    return body["access_token"]


def query(fake, soql: str, tok: str):
    return call(fake, "GET", f"{V}/query?" + urllib.parse.urlencode({"q": soql}), token=tok)


def test_token_success_has_the_fixtures_keys_and_points_at_the_instance(fake):
    form = {"grant_type": "client_credentials", "client_id": fake.client_id,
            "client_secret": fake.client_secret}  # fmt: skip
    status, body, _ = call(fake, "POST", "/services/oauth2/token", form=form)
    assert status == 200
    assert body.keys() == fixture("oauth/token_success_client_credentials.json").keys()
    assert body["instance_url"] == fake.base_url and body["token_type"] == "Bearer"
    assert body["issued_at"].isdigit()


@pytest.mark.parametrize(
    ("kind", "name"),
    [("password", "token_error_invalid_grant_password"),
     ("expired", "token_error_invalid_grant_expired_refresh")],
)  # fmt: skip
def test_token_refusals_are_the_invalid_grant_fixtures(fake, kind, name):
    fake.token_error = kind
    form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    status, body, _ = call(fake, "POST", "/services/oauth2/token", form=form)
    assert (status, body) == (400, fixture(f"oauth/{name}.json"))


def test_token_endpoint_reads_form_bodies_only_and_checks_the_secret(fake):
    good = {"grant_type": "client_credentials", "client_id": fake.client_id,
            "client_secret": fake.client_secret}  # fmt: skip
    status, body, _ = call(fake, "POST", "/services/oauth2/token", body=good)
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body, _ = call(fake, "POST", "/services/oauth2/token",
                           form={**good, "client_secret": "wrong"})  # fmt: skip
    assert (status, body["error"]) == (400, "invalid_client")


@pytest.mark.parametrize(
    "name", ["401_invalid_session_id", "401_invalid_session_id_not_valid_for_rest"]
)
def test_unknown_or_expired_sessions_get_the_401_fixture(fake, name):
    tok = token(fake)
    fake.expire_tokens()
    status, body, _ = query(fake, "SELECT Id FROM Lead", tok)
    assert (status, body) == (401, fixture("rest_errors/401_invalid_session_id.json"))
    assert first_error(fixture(f"rest_errors/{name}.json"))[0] == "INVALID_SESSION_ID"


def test_every_api_answer_carries_the_limit_header_but_the_versions_list(fake):
    tok = token(fake)
    status, body, headers = query(fake, "SELECT Id, Email FROM Lead", tok)
    assert status == 200 and headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    status, body, headers = call(fake, "GET", f"{V}/nothing-here", token=tok)
    assert status == 404 and body == fixture("rest_errors/404_not_found_docs.json")
    assert headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    status, body, headers = call(fake, "GET", "/services/data/")
    assert status == 200 and "Sforce-Limit-Info" not in headers


def test_query_pages_follow_the_fixtures_shape(fake):
    tok = token(fake)
    fake.page_size = 1
    fake.add_lead("ann@example.com")
    fake.add_lead("bo@example.com")
    _, first, _ = query(fake, "SELECT Id, Email FROM Lead WHERE Email IN ('ANN@example.com', "
                        "'bo@example.com')", tok)  # fmt: skip
    paged = fixture("rest_success/query_first_page_not_done.json")
    assert first.keys() == paged.keys() and first["done"] is False
    assert first["records"][0]["attributes"]["type"] == "Lead"
    _, second, _ = call(fake, "GET", first["nextRecordsUrl"], token=tok)
    assert second.keys() == fixture("rest_success/query_done_docs.json").keys()
    assert second["done"] is True and second["records"][0]["Email"] == "bo@example.com"


def test_bad_soql_and_unknown_fields_are_refused_like_salesforce(fake):
    tok = token(fake)
    status, body, _ = query(fake, "SELECT Id FROM Lead WHERE Email IN ('a@x.com'", tok)
    assert (status, body[0]["errorCode"]) == (400, "MALFORMED_QUERY")
    status, body, _ = query(fake, "SELECT Id, Bogus__c FROM Lead", tok)
    assert (status, body[0]["errorCode"]) == (400, "INVALID_FIELD")
    assert body[0]["message"] == "No such column 'Bogus__c' on sobject of type Lead"


def test_collections_report_per_record_failures_with_status_codes(fake):
    tok = token(fake)
    lead = fake.add_lead("ann@example.com")
    records = [
        {"attributes": {"type": "Lead"}, "id": lead, "Status": "Working - Contacted"},
        {"attributes": {"type": "Lead"}, "id": "001xx000003DGb2999", "Status": "Working"},
        {"attributes": {"type": "Lead"}, "id": lead, "Status": "Hot"},
    ]
    status, body, _ = call(fake, "PATCH", f"{V}/composite/sobjects", token=tok,
                           body={"allOrNone": False, "records": records},
                           headers={"Sforce-Auto-Assign": "FALSE"})  # fmt: skip
    assert status == 200
    partial = fixture("composite/sobjects_update_200_partial_allOrNone_false_docs.json")
    assert body[0].keys() == partial[0].keys() and body[1].keys() == partial[1].keys()
    assert body[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    message = body[1]["errors"][0]["message"]
    assert message == "Lead ID: id value of incorrect type: 001xx000003DGb2999"
    assert body[2]["errors"][0] == {
        "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "message": "Lead Status: bad value for restricted picklist field: Hot",
        "fields": ["Status"],
    }
    assert fake.leads[lead]["Status"] == "Working - Contacted"


def test_all_or_none_rolls_back_with_the_documented_collateral_error(fake):
    tok = token(fake)
    lead = fake.add_lead("ann@example.com")
    records = [
        {"attributes": {"type": "Lead"}, "id": lead, "Status": "Working - Contacted"},
        {"attributes": {"type": "Lead"}, "id": lead, "Status": "Hot"},
    ]
    _, body, _ = call(fake, "PATCH", f"{V}/composite/sobjects", token=tok,
                      body={"allOrNone": True, "records": records})  # fmt: skip
    rolled = fixture("composite/sobjects_update_200_rolled_back_allOrNone_true_docs.json")
    assert body[0]["errors"] == rolled[0]["errors"]
    assert fake.leads[lead]["Status"] == "Open - Not Contacted"


def test_request_level_collection_errors(fake):
    tok = token(fake)
    status, body, _ = call(fake, "PATCH", f"{V}/composite/sobjects", token=tok,
                           body={"allOrNone": False, "records": []})  # fmt: skip
    request_level = fixture("composite/sobjects_400_request_level_error_restforce.json")
    assert (status, body) == (400, request_level)
    records = [{"attributes": {"type": "Lead"}, "Email": "a@x.com", "Nope": 1}]
    status, body, _ = call(fake, "POST", f"{V}/composite/sobjects", token=tok,
                           body={"records": records})  # fmt: skip
    assert (status, body[0]["errorCode"]) == (400, "INVALID_FIELD")


def test_creates_need_last_name_and_company(fake):
    tok = token(fake)
    records = [{"attributes": {"type": "Lead"}, "Email": "a@x.com", "LastName": "Lee"},
               {"attributes": {"type": "Lead"}, "Email": "b@x.com", "LastName": "Bo",
                "Company": "Acme"}]  # fmt: skip
    _, body, _ = call(fake, "POST", f"{V}/composite/sobjects", token=tok,
                      body={"allOrNone": False, "records": records},
                      headers={"Sforce-Auto-Assign": "FALSE"})  # fmt: skip
    assert body[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert body[0]["errors"][0]["fields"] == ["Company"]
    assert body[1]["success"] is True and body[1]["id"].startswith("00Q")
    assert fake.leads[body[1]["id"]]["Status"] == "Open - Not Contacted"  # defaulted


def test_single_record_writes_204_and_201_and_assignment_rules(fake):
    tok = token(fake)
    status, body, _ = call(fake, "POST", f"{V}/sobjects/Lead", token=tok,
                           body={"Email": "a@x.com", "LastName": "A", "Company": "C"})  # fmt: skip
    assert status == 201 and body.keys() == fixture("rest_success/create_201.json").keys()
    assert fake.leads[body["id"]]["OwnerId"] == ASSIGNED_OWNER  # no header: rules ran
    lead = fake.add_lead("b@x.com")
    status, raw, _ = call(fake, "PATCH", f"{V}/sobjects/Lead/{lead}", token=tok,
                          body={"Lifecycle_Stage__c": "lead"},
                          headers={"Sforce-Auto-Assign": "FALSE"})  # fmt: skip
    assert (status, raw) == (204, b"")
    assert fake.leads[lead]["OwnerId"] != ASSIGNED_OWNER
    fake.convert(lead)
    status, body, _ = call(fake, "PATCH", f"{V}/sobjects/Lead/{lead}", token=tok,
                           body={"Lifecycle_Stage__c": "customer"})  # fmt: skip
    assert status == 400 and body[0]["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"


def test_limits_and_outages_answer_with_the_fixture_bodies(fake):
    tok = token(fake)
    fake.throttle(1, 60)
    assert query(fake, "SELECT Id FROM Lead", tok)[0] == 200
    status, body, _ = query(fake, "SELECT Id FROM Lead", tok)
    concurrent = fixture("rest_errors/403_request_limit_exceeded_concurrent.json")
    assert (status, body) == (403, concurrent)
    fake.throttle(None)
    fake.daily_limit = fake.api_usage
    status, body, headers = query(fake, "SELECT Id FROM Lead", tok)
    assert (status, body) == (403, fixture("rest_errors/403_request_limit_exceeded_daily.json"))
    assert headers["Sforce-Limit-Info"] == f"api-usage={fake.api_usage}/{fake.api_usage}"
    fake.daily_limit = 10
    fake.fail_next(1, 503)
    status, body, _ = query(fake, "SELECT Id FROM Lead", tok)
    assert status == 503 and b"Service Unavailable" in body
    fake.lock_rows(1)
    lead = fake.add_lead("a@x.com")
    status, body, _ = call(fake, "PATCH", f"{V}/sobjects/Lead/{lead}", token=tok,
                           body={"Lifecycle_Stage__c": "lead"})  # fmt: skip
    assert (status, body[0]["errorCode"]) == (400, "UNABLE_TO_LOCK_ROW")


RETRYABLE = {
    "403_request_limit_exceeded_concurrent.json",
    "403_request_limit_exceeded_daily.json",
    "unable_to_lock_row.json",
}


@pytest.mark.parametrize("path", sorted((FIXTURES / "rest_errors").glob("*.json")), ids=str)
def test_every_rest_error_fixture_is_classified(path: Path):
    status = int(path.name[:3]) if path.name[:3].isdigit() else 400
    retriable, message = make_classifier(None)(HttpResult(status, fixture(
        f"rest_errors/{path.name}"), {}))  # fmt: skip
    assert retriable == (path.name in RETRYABLE)
    code, text = first_error(fixture(f"rest_errors/{path.name}"))
    assert message == f"{code}: {text}"


def test_every_limit_header_example_parses():
    lines = (FIXTURES / "headers" / "sforce_limit_info_examples.txt").read_text().splitlines()
    usages = [ApiUsage.parse(line) for line in lines if not line.startswith("#")]
    assert [(u.used, u.limit) for u in usages] == [
        (18, 5000), (14, 5000), (25, 5000), (10018, 100000), (10018, 100000), (384, 5000000),
    ]  # fmt: skip
    assert ApiUsage.parse("per-app-api-usage=17/250(appName=x)") is None
