"""Unit tests of adapter.ehr with `responses`: auth, retries, errors, paging, writes."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from responses import matchers

from adapter.ehr import (
    EhrConfigurationError,
    FhirAuthError,
    FhirClient,
    FhirConflictError,
    FhirNotFoundError,
    FhirPagingError,
    FhirResponseError,
    FhirServerError,
    FhirTimeoutError,
    FhirTransientError,
    RetryPolicy,
    SmartBackendServices,
    StaticBearerToken,
    Transport,
)
from adapter.ehr.auth import ASSERTION_TYPE

BASE = "https://ehr.test/fhir"
TOKEN_URL = "https://auth.ehr.test/token"


class FakeTime:
    """A clock that only moves when the client sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = time.time()  # real "now" so that JWT libraries accept iat/exp
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_transport(fake_time: FakeTime, **policy: Any) -> Transport:
    return Transport(
        retry=RetryPolicy(**{"max_attempts": 4, "max_total_seconds": 60.0, **policy}),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )


@pytest.fixture
def client(fake_time: FakeTime) -> FhirClient:
    return FhirClient(BASE, transport=make_transport(fake_time))


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def outcome(code: str, diagnostics: str, expression: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def patient(pid: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": "1"}}


def bundle(ids: list[str], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Observation"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"resource": {"resourceType": "Observation", "id": i}, "search": {"mode": "match"}}
            for i in ids
        ],
    }


def assertion_of(call: Any) -> str:
    form = parse_qs(call.request.body)
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_assertion_type"] == [ASSERTION_TYPE]
    return form["client_assertion"][0]


# -- SMART Backend Services ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES384", "RS384"])
def test_client_assertion_verifies_with_public_key_and_has_required_claims(
    algorithm: str,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    fake_time: FakeTime,
) -> None:
    key = ec_key if algorithm == "ES384" else rsa_key
    smart = SmartBackendServices(
        client_id="rems-adapter",
        private_key_pem=pem(key),
        algorithm=algorithm,
        token_endpoint=TOKEN_URL,
        clock=fake_time.clock,
    )
    first = smart.client_assertion(TOKEN_URL)
    second = smart.client_assertion(TOKEN_URL)

    header = jwt.get_unverified_header(first)
    assert header["alg"] == algorithm
    assert header["typ"] == "JWT"
    assert header["kid"] == smart.public_jwks()["keys"][0]["kid"]
    claims = jwt.decode(
        first,
        key.public_key(),
        algorithms=[algorithm],
        audience=TOKEN_URL,
        options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False},
    )
    assert claims["iss"] == claims["sub"] == "rems-adapter"
    assert claims["aud"] == TOKEN_URL
    assert claims["exp"] == int(fake_time.now) + 300  # SMART: at most five minutes ahead
    other = jwt.decode(second, key.public_key(), algorithms=[algorithm], audience=TOKEN_URL,
                       options={"verify_exp": False})  # fmt: skip
    assert other["jti"] != claims["jti"]  # replay protection needs a fresh jti each time
    # the published JWK is the public half of the signing key
    jwk = smart.public_jwks()["keys"][0]
    public = jwt.PyJWK(jwk).key
    assert jwt.decode(first, public, algorithms=[algorithm], audience=TOKEN_URL,
                      options={"verify_exp": False})["jti"] == claims["jti"]  # fmt: skip


def test_key_must_fit_algorithm(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(EhrConfigurationError, match="RS384 needs an RSA"):
        SmartBackendServices(client_id="c", private_key_pem=pem(ec_key), algorithm="RS384")
    with pytest.raises(EhrConfigurationError, match="not supported"):
        SmartBackendServices(client_id="c", private_key_pem=pem(ec_key), algorithm="HS256")
    with pytest.raises(EhrConfigurationError, match="not a readable PEM"):
        SmartBackendServices(client_id="c", private_key_pem=b"nope", algorithm="ES384")


def smart_client(
    key: ec.EllipticCurvePrivateKey, fake_time: FakeTime, **kwargs: Any
) -> tuple[FhirClient, SmartBackendServices]:
    smart = SmartBackendServices(
        client_id="rems-adapter",
        private_key_pem=pem(key),
        algorithm="ES384",
        clock=fake_time.clock,
        **kwargs,
    )
    return FhirClient(BASE, auth=smart, transport=make_transport(fake_time)), smart


def add_discovery(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{BASE}/.well-known/smart-configuration",
        json={
            "token_endpoint": TOKEN_URL,
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        },
    )


def add_token(rsps: responses.RequestsMock, token: str, expires_in: int = 3600) -> None:
    rsps.post(
        TOKEN_URL,
        json={"access_token": token, "token_type": "bearer", "expires_in": expires_in},
    )


@responses.activate
def test_401_gets_a_new_token_once_then_succeeds(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time)
    add_discovery(responses.mock)
    add_token(responses.mock, "token-1")
    add_token(responses.mock, "token-2")
    read_url = f"{BASE}/Patient/p1"
    responses.get(read_url, status=401, json=outcome("login", "Access token expired"),
                  match=[matchers.header_matcher({"Authorization": "Bearer token-1"})])  # fmt: skip
    responses.get(read_url, json=patient(),
                  match=[matchers.header_matcher({"Authorization": "Bearer token-2"})])  # fmt: skip

    assert client.read("Patient", "p1")["id"] == "p1"

    token_calls = [c for c in responses.calls if c.request.url == TOKEN_URL]
    assert len(token_calls) == 2
    # each token request carried its own assertion, for the discovered token endpoint
    first, second = (assertion_of(c) for c in token_calls)
    assert first != second
    assert jwt.decode(first, options={"verify_signature": False})["aud"] == TOKEN_URL


@responses.activate
def test_second_401_after_refresh_is_an_auth_error(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time, token_endpoint=TOKEN_URL)
    add_token(responses.mock, "token-1")
    responses.get(f"{BASE}/Patient/p1", status=401, json=outcome("login", "Invalid token"))

    with pytest.raises(FhirAuthError) as caught:
        client.read("Patient", "p1")
    assert caught.value.status == 401
    assert caught.value.issues[0].code == "login"
    fhir_calls = [c for c in responses.calls if c.request.url.startswith(BASE)]
    assert len(fhir_calls) == 2  # the original and exactly one retry with a new token


@responses.activate
def test_token_is_cached_and_reasserted_when_it_expires(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time, token_endpoint=TOKEN_URL)
    add_token(responses.mock, "token-1", expires_in=600)
    add_token(responses.mock, "token-2", expires_in=600)
    responses.get(f"{BASE}/Patient/p1", json=patient())

    client.read("Patient", "p1")
    client.read("Patient", "p1")
    fake_time.now += 530  # still outside the 60 s refresh margin of the 600 s lifetime
    client.read("Patient", "p1")
    fake_time.now += 20  # now inside it: a new assertion, a new token
    client.read("Patient", "p1")

    auth_headers = [
        c.request.headers["Authorization"]
        for c in responses.calls
        if c.request.url.startswith(BASE)
    ]
    assert auth_headers == ["Bearer token-1"] * 3 + ["Bearer token-2"]
    assert sum(c.request.url == TOKEN_URL for c in responses.calls) == 2


@responses.activate
def test_token_endpoint_refusal_names_the_oauth_error(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time, token_endpoint=TOKEN_URL)
    responses.post(
        TOKEN_URL,
        status=401,
        json={"error": "invalid_client", "error_description": "unknown key"},
    )
    with pytest.raises(FhirAuthError, match="invalid_client: unknown key") as caught:
        client.read("Patient", "p1")
    assert caught.value.oauth_error == "invalid_client"
    assert not [c for c in responses.calls if c.request.url.startswith(BASE)]


@responses.activate
def test_discovery_refuses_a_server_without_our_algorithm(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time)
    responses.get(
        f"{BASE}/.well-known/smart-configuration",
        json={
            "token_endpoint": TOKEN_URL,
            "token_endpoint_auth_signing_alg_values_supported": ["RS384"],
        },
    )
    with pytest.raises(FhirAuthError, match="does not accept ES384"):
        client.read("Patient", "p1")


@responses.activate
def test_static_bearer_token_401_is_final(fake_time: FakeTime) -> None:
    client = FhirClient(BASE, auth=StaticBearerToken("s3cret"), transport=make_transport(fake_time))
    responses.get(f"{BASE}/Patient/p1", status=401)
    with pytest.raises(FhirAuthError) as caught:
        client.read("Patient", "p1")
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(client.auth)


# -- retries ------------------------------------------------------------------------------------


@responses.activate
def test_429_waits_for_retry_after_seconds(client: FhirClient, fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/Patient/p1", json=patient())

    assert client.read("Patient", "p1")["id"] == "p1"
    assert fake_time.sleeps == [7.0]


@responses.activate
def test_503_retry_after_http_date_is_honoured(client: FhirClient, fake_time: FakeTime) -> None:
    when = email.utils.formatdate(fake_time.now + 12, usegmt=True)
    responses.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": when})
    responses.get(f"{BASE}/Patient/p1", json=patient())

    client.read("Patient", "p1")
    assert fake_time.sleeps == [pytest.approx(12.0, abs=1.0)]


@responses.activate
def test_503_then_success_backs_off_with_bounded_jitter(
    client: FhirClient, fake_time: FakeTime
) -> None:
    responses.get(f"{BASE}/Patient/p1", status=503)
    responses.get(f"{BASE}/Patient/p1", status=502)
    responses.get(f"{BASE}/Patient/p1", json=patient())

    assert client.read("Patient", "p1")["id"] == "p1"
    assert len(responses.calls) == 3
    assert len(fake_time.sleeps) == 2
    assert all(0 <= s <= 10.0 for s in fake_time.sleeps)  # backoff_max


@responses.activate
def test_retries_are_bounded_in_count(client: FhirClient, fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/Patient/p1", status=503, json=outcome("transient", "busy"))
    with pytest.raises(FhirTransientError) as caught:
        client.read("Patient", "p1")
    assert caught.value.status == 503
    assert caught.value.attempts == 4
    assert caught.value.issues[0].code == "transient"
    assert len(responses.calls) == 4


@responses.activate
def test_retry_after_beyond_the_time_budget_is_not_slept(
    client: FhirClient, fake_time: FakeTime
) -> None:
    responses.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": "3600"})
    with pytest.raises(FhirTransientError) as caught:
        client.read("Patient", "p1")
    assert fake_time.sleeps == []
    assert caught.value.retry_after == 3600.0  # the caller can schedule the next cycle
    assert len(responses.calls) == 1


@responses.activate
def test_non_idempotent_create_is_not_retried(client: FhirClient, fake_time: FakeTime) -> None:
    responses.post(f"{BASE}/Patient", status=503)
    with pytest.raises(FhirTransientError):
        client.create({"resourceType": "Patient"})
    assert len(responses.calls) == 1


@responses.activate
def test_read_timeouts_are_retried_then_reported(client: FhirClient, fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.ReadTimeout("slow"))
    with pytest.raises(FhirTimeoutError, match="timed out after 4 attempt") as caught:
        client.read("Patient", "p1")
    assert caught.value.status is None
    assert len(responses.calls) == 4


@responses.activate
def test_timeout_then_success(client: FhirClient, fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.ConnectTimeout("no route"))
    responses.get(f"{BASE}/Patient/p1", json=patient())
    assert client.read("Patient", "p1")["id"] == "p1"


@responses.activate
def test_timeouts_are_passed_to_requests(fake_time: FakeTime) -> None:
    from adapter.ehr import Timeouts

    transport = Transport(timeouts=Timeouts(connect=2.5, read=9.0), sleep=fake_time.sleep)
    client = FhirClient(BASE, transport=transport)
    responses.get(f"{BASE}/Patient/p1", json=patient())
    client.read("Patient", "p1")
    assert responses.calls[0].request.req_kwargs["timeout"] == (2.5, 9.0)
    # TLS verified by default (requests may substitute REQUESTS_CA_BUNDLE for True)
    assert responses.calls[0].request.req_kwargs["verify"] not in (False, None)


@responses.activate
def test_ca_bundle_is_passed_to_requests(fake_time: FakeTime) -> None:
    client = FhirClient(BASE, transport=Transport(verify="/etc/site-ca.pem"))
    responses.get(f"{BASE}/Patient/p1", json=patient())
    client.read("Patient", "p1")
    assert responses.calls[0].request.req_kwargs["verify"] == "/etc/site-ca.pem"


# -- errors -------------------------------------------------------------------------------------


@responses.activate
def test_operation_outcome_is_carried_in_the_error(client: FhirClient) -> None:
    responses.get(
        f"{BASE}/Observation",
        status=400,
        json=outcome("not-supported", "Unknown search parameter 'foo'", ["Observation.foo"]),
    )
    with pytest.raises(FhirServerError) as caught:
        client.search("Observation", {"foo": "PHI-VALUE", "patient": "Patient/123"})
    error = caught.value
    assert error.status == 400
    assert error.method == "GET"
    assert error.url == f"{BASE}/Observation"  # no query: search values can be PHI
    (issue,) = error.issues
    assert (issue.severity, issue.code) == ("error", "not-supported")
    assert issue.diagnostics == "Unknown search parameter 'foo'"
    assert issue.expression == ("Observation.foo",)
    message = str(error)
    assert "HTTP 400" in message and "error/not-supported at Observation.foo" in message
    assert "PHI-VALUE" not in message and "123" not in message


@responses.activate
def test_status_classes_map_to_error_types(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/gone", status=410)
    responses.get(f"{BASE}/Patient/none", status=404, json=outcome("not-found", "no"))
    responses.get(f"{BASE}/Patient/forbidden", status=403)
    with pytest.raises(FhirNotFoundError):
        client.read("Patient", "gone")
    with pytest.raises(FhirNotFoundError) as caught:
        client.read("Patient", "none")
    assert caught.value.issues[0].code == "not-found"
    with pytest.raises(FhirAuthError, match="not authorised"):
        client.read("Patient", "forbidden")


@responses.activate
def test_non_json_body_is_a_response_error(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", body="<html>proxy login</html>", content_type="text/html")
    with pytest.raises(FhirResponseError, match=r"not JSON .*text/html"):
        client.read("Patient", "p1")


@responses.activate
def test_wrong_resource_type_is_a_response_error(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Observation", "id": "p1"})
    with pytest.raises(FhirResponseError, match="expected a Patient, got a Observation"):
        client.read("Patient", "p1")


def test_base_url_must_be_http() -> None:
    with pytest.raises(EhrConfigurationError, match="http"):
        FhirClient("ftp://ehr.test/fhir")


# -- search and paging --------------------------------------------------------------------------


@responses.activate
def test_paging_over_three_pages_keeps_strict_handling(client: FhirClient) -> None:
    page2 = f"{BASE}/Observation?code=751-8&_count=2&_offset=2"
    page3 = f"{BASE}/Observation?code=751-8&_count=2&_offset=4"
    strict = matchers.header_matcher({"Prefer": "handling=strict"})
    responses.get(page2, json=bundle(["o3", "o4"], page3), match=[strict])
    responses.get(page3, json=bundle(["o5"]), match=[strict])
    responses.get(
        f"{BASE}/Observation",
        json=bundle(["o1", "o2"], page2),
        match=[strict, matchers.query_param_matcher({"code": "751-8", "_count": "2"})],
    )

    result = client.search("Observation", {"code": "751-8"}, count=2)

    assert [r["id"] for r in result.matches] == ["o1", "o2", "o3", "o4", "o5"]
    assert result.pages == 3
    assert [c.request.url for c in responses.calls][1:] == [page2, page3]


@responses.activate
def test_include_entries_are_separated_from_matches(client: FhirClient) -> None:
    dispense = {"resourceType": "MedicationDispense", "id": "d1"}
    body = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {"resource": dispense, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        ],
    }
    responses.get(
        f"{BASE}/MedicationDispense",
        json=body,
        match=[matchers.query_string_matcher("status=preparation&_include=MedicationDispense%3Asubject")],
    )  # fmt: skip
    result = client.search(
        "MedicationDispense", [("status", "preparation")], include=["MedicationDispense:subject"]
    )
    assert [r["id"] for r in result.matches] == ["d1"]
    assert [r["id"] for r in result.included] == ["p1"]
    assert result.total == 1


@responses.activate
def test_unreachable_next_link_is_a_paging_error(client: FhirClient) -> None:
    page2 = f"{BASE}/Observation?_page=2"
    responses.get(page2, body=requests.ConnectionError("refused"))
    responses.get(
        f"{BASE}/Observation",
        json=bundle(["o1"], page2),
        match=[matchers.query_param_matcher({"code": "751-8"})],
    )
    with pytest.raises(FhirPagingError, match="page 2 failed") as caught:
        client.search("Observation", {"code": "751-8"})
    assert caught.value.page == 2
    assert isinstance(caught.value.__cause__, FhirTransientError)
    assert len(responses.calls) == 1 + 4  # page 1, then page 2 tried max_attempts times


@responses.activate
def test_next_link_to_a_404_is_a_paging_error(client: FhirClient) -> None:
    page2 = f"{BASE}/Observation?_getpages=expired"
    responses.get(page2, status=404, json=outcome("not-found", "paging context expired"))
    responses.get(f"{BASE}/Observation", json=bundle(["o1"], page2))
    with pytest.raises(FhirPagingError) as caught:
        client.search("Observation")
    assert caught.value.status == 404
    assert caught.value.issues[0].code == "not-found"


@pytest.mark.parametrize(
    ("next_url", "reason"),
    [
        ("https://evil.test/fhir/Observation?page=2", "leaves the FHIR base"),
        ("http://ehr.test/fhir/Observation?page=2", "leaves the FHIR base"),  # downgrade
        ("https://ehr.test/other/Observation?page=2", "leaves the FHIR base"),
        (f"{BASE}/Observation", "loop"),
    ],
)
@responses.activate
def test_foreign_or_looping_next_links_are_not_followed(
    client: FhirClient, next_url: str, reason: str
) -> None:
    responses.get(f"{BASE}/Observation", json=bundle(["o1"], next_url))
    with pytest.raises(FhirPagingError, match=reason):
        client.search("Observation")
    # the token-bearing request never went to the foreign host
    assert all(urlsplit(c.request.url).hostname == "ehr.test" for c in responses.calls)


@responses.activate
def test_page_count_is_bounded(client: FhirClient) -> None:
    for n in range(1, 5):
        responses.get(
            f"{BASE}/Observation?page={n}",
            json=bundle([f"o{n}"], f"{BASE}/Observation?page={n + 1}"),
        )
    responses.get(f"{BASE}/Observation", json=bundle(["o0"], f"{BASE}/Observation?page=1"))
    with pytest.raises(FhirPagingError, match="more than 3 pages"):
        client.search("Observation", max_pages=3)


@responses.activate
def test_search_without_strict_sends_no_prefer(fake_time: FakeTime) -> None:
    client = FhirClient(BASE, transport=make_transport(fake_time), strict_search=False)
    responses.get(f"{BASE}/Observation", json=bundle([]))
    client.search("Observation")
    assert "Prefer" not in responses.calls[0].request.headers


# -- writes -------------------------------------------------------------------------------------

ISSUE = {"resourceType": "DetectedIssue", "status": "final"}
CONDITION = [("identifier", "https://rems-adapter.github.io/fhir/sid/decision|abc")]


def if_none_exist_is(expected: str) -> Callable[..., Any]:
    return matchers.header_matcher({"If-None-Exist": expected})


@pytest.mark.parametrize(("status", "created"), [(201, True), (200, False)])
@responses.activate
def test_conditional_create_reports_created_or_existing(
    client: FhirClient, status: int, created: bool
) -> None:
    responses.post(
        f"{BASE}/DetectedIssue",
        status=status,
        json={**ISSUE, "id": "di1", "meta": {"versionId": "1"}},
        match=[
            if_none_exist_is(
                "identifier=https%3A%2F%2Frems-adapter.github.io%2Ffhir%2Fsid%2Fdecision%7Cabc"
            )
        ],
    )
    result = client.create_if_none_exist(ISSUE, CONDITION)
    assert result.created is created
    assert result.resource["id"] == "di1"
    assert json.loads(responses.calls[0].request.body) == ISSUE


@responses.activate
def test_conditional_create_without_body_reads_the_location(client: FhirClient) -> None:
    responses.post(
        f"{BASE}/DetectedIssue",
        status=201,
        headers={"Location": f"{BASE}/DetectedIssue/di9/_history/1"},
    )
    responses.get(f"{BASE}/DetectedIssue/di9", json={**ISSUE, "id": "di9"})
    assert client.create_if_none_exist(ISSUE, CONDITION).resource["id"] == "di9"


@responses.activate
def test_conditional_create_with_multiple_matches_is_a_conflict(client: FhirClient) -> None:
    responses.post(
        f"{BASE}/DetectedIssue", status=412, json=outcome("multiple-matches", "matched 2")
    )
    with pytest.raises(FhirConflictError):
        client.create_if_none_exist(ISSUE, CONDITION)


@responses.activate
def test_update_sends_if_match_from_meta_version(client: FhirClient) -> None:
    current = {**ISSUE, "id": "di1", "status": "cancelled", "meta": {"versionId": "3"}}
    responses.put(
        f"{BASE}/DetectedIssue/di1",
        json={**current, "meta": {"versionId": "4"}},
        match=[matchers.header_matcher({"If-Match": 'W/"3"'})],
    )
    assert client.update(current)["meta"]["versionId"] == "4"


@responses.activate
def test_update_version_conflict(client: FhirClient) -> None:
    responses.put(f"{BASE}/DetectedIssue/di1", status=412, json=outcome("conflict", "v5"))
    with pytest.raises(FhirConflictError) as caught:
        client.update({**ISSUE, "id": "di1"}, if_match_version="3")
    assert caught.value.status == 412
    assert responses.calls[0].request.headers["If-Match"] == 'W/"3"'


@responses.activate
def test_vread(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1/_history/2", json={**patient(), "meta": {"versionId": "2"}})
    assert client.vread("Patient", "p1", "2")["meta"]["versionId"] == "2"


def test_ids_cannot_smuggle_paths(client: FhirClient) -> None:
    with pytest.raises(ValueError, match="resource id"):
        client.read("Patient", "../metadata?x=1")
    with pytest.raises(ValueError, match="resource type"):
        client.read("patient/x", "1")


@responses.activate
def test_redirects_are_not_followed(client: FhirClient) -> None:
    responses.get(
        f"{BASE}/Patient/p1", status=302, headers={"Location": "https://elsewhere.test/x?y=1"}
    )
    with pytest.raises(FhirResponseError, match=r"redirect to https://elsewhere.test/x; not"):
        client.read("Patient", "p1")
    assert len(responses.calls) == 1


@responses.activate
def test_token_endpoint_outage_is_transient_not_an_auth_failure(
    ec_key: ec.EllipticCurvePrivateKey, fake_time: FakeTime
) -> None:
    client, _ = smart_client(ec_key, fake_time, token_endpoint=TOKEN_URL)
    responses.post(TOKEN_URL, status=503)
    with pytest.raises(FhirTransientError) as caught:
        client.read("Patient", "p1")
    assert caught.value.attempts == 4
    # every attempt signed a new assertion: a replayed jti would be refused by the server
    jtis = {
        jwt.decode(assertion_of(c), options={"verify_signature": False})["jti"]
        for c in responses.calls
    }
    assert len(jtis) == 4


@responses.activate
def test_logs_carry_no_query_values_or_bodies(
    client: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    page2 = f"{BASE}/Observation?patient=PHI-PATIENT&_offset=1"
    responses.get(page2, status=503)
    responses.get(page2, json=bundle(["o2"]))
    responses.get(
        f"{BASE}/Observation",
        json=bundle(["o1"], page2),
        match=[matchers.query_param_matcher({"patient": "PHI-PATIENT"})],
    )
    responses.post(f"{BASE}/Patient", status=503, json=outcome("transient", "PHI-DIAGNOSTICS"))
    client.search("Observation", {"patient": "PHI-PATIENT"})
    with pytest.raises(FhirTransientError):
        client.create({"resourceType": "Patient", "name": [{"family": "PHI-NAME"}]})
    assert caplog.records  # the retry was logged...
    assert "PHI" not in caplog.text  # ...without the query, the body or the diagnostics


@responses.activate
def test_tls_failures_are_not_retried(client: FhirClient) -> None:
    from adapter.ehr import FhirTlsError

    responses.get(f"{BASE}/Patient/p1", body=requests.exceptions.SSLError("self-signed"))
    with pytest.raises(FhirTlsError, match="CA bundle"):
        client.read("Patient", "p1")
    assert len(responses.calls) == 1


@responses.activate
def test_a_body_cut_off_mid_transfer_is_retried(client: FhirClient) -> None:
    responses.get(f"{BASE}/Patient/p1", body=requests.exceptions.ChunkedEncodingError("cut"))
    responses.get(f"{BASE}/Patient/p1", json=patient())
    assert client.read("Patient", "p1")["id"] == "p1"
