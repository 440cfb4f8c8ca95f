"""Lab pushes against stock sekmet-fhir: 202 after the durable write, one DetectedIssue each."""

from __future__ import annotations

import pytest
import requests

from tests.serve.kit import codes, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration


def test_a_pushed_low_result_is_decided_and_written_back_once(serve_factory, stock_server):
    ids = seed(stock_server.base_url, [recent_history([2100, 2000, 1900])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    serve = serve_factory()
    result = lab_result(patient, 1200)
    answer = serve.push(result)
    assert answer.status_code == 202, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    serve.settle()
    written = issues(stock_server.base_url, patient)
    assert codes(written) == ["anc-mild-neutropenia"]
    # the same result pushed again answers as the first time and has no second effect
    again = serve.push(result)
    assert again.status_code == 202
    assert again.content == answer.content  # the very same answer
    serve.settle()
    assert codes(issues(stock_server.base_url, patient)) == ["anc-mild-neutropenia"]
    # the evidence it cites resolves on the EHR (the result was forwarded)
    [issue] = written
    for detail in issue["evidence"][0]["detail"]:
        kind, rid = detail["reference"].split("/")
        assert requests.get(f"{stock_server.base_url}/{kind}/{rid}", timeout=10).status_code == 200


def _post(serve, path: str, body, **headers: str) -> requests.Response:
    import json

    return requests.post(
        f"{serve.url}{path}",
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Content-Type": "application/fhir+json", **headers},
        timeout=30,
    )


def test_a_bundle_keeps_good_entries_and_names_bad_ones_by_index_and_path(
    serve_factory, stock_server
):
    ids = seed(stock_server.base_url, [recent_history([2100, 2000]), recent_history([2200])])
    first, second = [v for v in ids.values() if v.startswith("Patient/")]
    serve = serve_factory()
    bad_value = lab_result(first, 900)
    bad_value["valueQuantity"]["value"] = "lots"
    no_subject = lab_result(first, 900)
    del no_subject["subject"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": lab_result(first, 1200)},
            {"resource": bad_value},
            {"resource": lab_result(second, 1300)},
            {"resource": no_subject},
            {"resource": {"resourceType": "Medication"}},
        ],
    }
    answer = _post(serve, "/fhir", bundle)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0] == statuses[2] == "202 Accepted"
    assert statuses[1].startswith("422") and statuses[3].startswith("422")
    assert statuses[4].startswith("422")
    expressions = [e["response"]["outcome"]["issue"][0].get("expression") for e in body["entry"]]
    assert expressions[1] == ["Bundle.entry[1].resource.valueQuantity.value"]
    assert expressions[3] == ["Bundle.entry[3].resource.subject"]
    assert expressions[4] == ["Bundle.entry[4].resource.resourceType"]
    serve.settle()
    assert codes(issues(stock_server.base_url, first)) == ["anc-mild-neutropenia"]
    assert codes(issues(stock_server.base_url, second)) == ["anc-mild-neutropenia"]


def test_every_error_is_an_operation_outcome(serve_factory):
    serve = serve_factory()
    cases = [
        (_post(serve, "/fhir/Observation", b"{not json"), 400, "structure"),
        (_post(serve, "/fhir/Observation", b""), 400, "structure"),
        (_post(serve, "/fhir/Observation", {"resourceType": "Patient"}), 422, "processing"),
        (
            _post(serve, "/fhir", {"resourceType": "Bundle", "type": "collection"}),
            422,
            "processing",
        ),
        (requests.get(f"{serve.url}/nowhere", timeout=10), 404, "not-found"),
        (requests.get(f"{serve.url}/fhir/Observation", timeout=10), 405, "not-supported"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code
    assert "POST" in cases[-1][0].headers["Allow"]
    lacking = _post(serve, "/fhir/Observation", {"resourceType": "Observation", "status": "final"})
    assert lacking.json()["issue"][0]["expression"] == ["Observation.code"]


def test_an_observation_status_outside_r4_is_refused_by_its_path(serve_factory):
    """R4B's model takes any status string; R4 binds ObservationStatus (required), and what is
    pushed goes on to the EHR: refused with 422 naming the path, nothing kept."""
    serve = serve_factory()
    bogus = {**lab_result("Patient/p1", 1.2), "status": "bogus"}
    response = _post(serve, "/fhir/Observation", bogus)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Observation.status"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": lab_result("Patient/p1", 1.2),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"resource": bogus, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    body = _post(serve, "/fhir", bundle).json()
    expressions = [e["response"]["outcome"]["issue"][0].get("expression") for e in body["entry"]]
    assert expressions[1] == ["Bundle.entry[1].resource.status"]


@pytest.mark.parametrize(
    "content_type", ["application/fhir+xml", "application/xml", "text/xml; charset=utf-8"]
)
def test_a_body_in_fhir_xml_gets_415(serve_factory, content_type):
    serve = serve_factory()
    response = _post(
        serve, "/fhir/Observation", b"<Observation/>", **{"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-supported"


def test_health_and_metrics_answer(serve_factory):
    serve = serve_factory()
    assert requests.get(f"{serve.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{serve.url}/readyz", timeout=10).status_code == 200
    metrics = requests.get(f"{serve.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    for name in (
        'rems_adapter_results_received_total{source="push"}',
        "rems_adapter_inbox_depth",
        "rems_adapter_outbox_depth",
        "rems_adapter_dead_letters",
        'rems_adapter_upstream_errors_total{system="ehr"}',
        "rems_adapter_end_to_end_seconds_bucket",
    ):
        assert name in metrics.text
