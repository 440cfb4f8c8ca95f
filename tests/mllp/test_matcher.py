"""The patient matcher (unit test of its EHR client use, with `responses`): exactly one Patient
that carries the identifier, or no match; a server that ignored the search parameter (and
answered with its only Patient) is never taken for a match."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from adapter.ehr import FhirClient
from adapter.hl7v2.oru import PatientKey
from adapter.pipeline.mllp_source import PatientMatcher

BASE = "http://ehr.test/fhir"
KEY = PatientKey("urn:oid:1.2.3", "MRN7")


def _bundle(*patients: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": p, "search": {"mode": "match"}} for p in patients],
    }


def _patient(pid: str, *identifiers: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
    }


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_bundle(_patient("p1", ("urn:oid:1.2.3", "MRN7"))), "Patient/p1"),
        (_bundle(), None),
        (_bundle(_patient("p9", ("urn:oid:9.9", "X"))), None),  # the parameter was ignored
        (
            _bundle(
                _patient("p1", ("urn:oid:1.2.3", "MRN7")),
                _patient("p2", ("urn:oid:1.2.3", "MRN7")),
            ),
            None,  # two Patients with one identifier: never a guess
        ),
    ],
)
@responses.activate
def test_exactly_one_patient_carrying_the_identifier(answer, expected):
    responses.get(f"{BASE}/Patient", json=answer)
    matcher = PatientMatcher(lambda: FhirClient(BASE))
    try:
        assert matcher.lookup(KEY) == expected
        call = responses.calls[0].request
        assert "identifier=urn%3Aoid%3A1.2.3%7CMRN7" in (call.url or "")
        if expected is not None:  # remembered: no second request, and known on the ACK path
            assert matcher.known(KEY) == expected
            assert matcher.lookup(KEY) == expected
            assert len(responses.calls) == 1
        else:
            assert matcher.known(KEY) is None
    finally:
        matcher.close()
