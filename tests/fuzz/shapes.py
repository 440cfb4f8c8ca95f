"""Hypothesis strategies for FHIR-shaped JSON: resources of the types the adapter reads, with
plausible elements holding plausible, absurd and wrong-typed values."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzz.mutate import DATES, NUMBER_STRINGS, NUMBERS, STRINGS

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PATIENTS = ("Patient/fz-1", "Patient/fz-2")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(DATES),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBER_STRINGS[:-1]),
    st.sampled_from(STRINGS[:-1]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, value, value, json_values)


codes = st.sampled_from(["751-8", "753-4", "26499-4", "6690-2", "770-8", "764-1", "30451-9", "x"])
coding = st.fixed_dictionaries(
    {"system": _maybe(st.sampled_from([LOINC, RXNORM, "urn:x"])), "code": _maybe(codes)}
)
concept = st.fixed_dictionaries({"coding": _maybe(st.lists(coding, min_size=1, max_size=3))})
reference = st.fixed_dictionaries({"reference": _maybe(st.sampled_from(PATIENTS))})
when = _maybe(st.sampled_from((*DATES, "2026-02-09T08:00:00Z", "2026-02-09")))
quantity = st.fixed_dictionaries(
    {"value": _maybe(st.sampled_from(NUMBERS + NUMBER_STRINGS[:-1]))},
    optional={
        "code": _maybe(st.sampled_from(["10*3/uL", "/uL", "%", "x"])),
        "comparator": st.sampled_from(["<", ">"]),
    },
)
ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=10).map(lambda t: f"fz-{t}")


def resource(kind: str, elements: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    required = {"resourceType": st.just(kind), "id": _maybe(ids)}
    return st.fixed_dictionaries(required, optional={k: _maybe(v) for k, v in elements.items()})


observation = resource(
    "Observation",
    {
        "status": st.sampled_from(["final", "amended", "preliminary", "entered-in-error"]),
        "code": concept,
        "subject": reference,
        "effectiveDateTime": when,
        "effectivePeriod": st.fixed_dictionaries({"start": when}),
        "issued": when,
        "valueQuantity": quantity,
        "identifier": st.lists(st.fixed_dictionaries({"system": st.just("urn:x"), "value": ids})),
        "extension": json_values,
        "meta": st.fixed_dictionaries(
            {"versionId": st.sampled_from(["1", "2"]), "lastUpdated": when}
        ),
        "specimen": reference,
    },
)
medication_concept = st.fixed_dictionaries(
    {
        "coding": st.lists(
            st.fixed_dictionaries({"system": st.just(RXNORM), "code": st.just("2626")}),
            min_size=1,
            max_size=1,
        )
    }
)
dispense = resource(
    "MedicationDispense",
    {
        "status": st.sampled_from(["completed", "preparation", "in-progress", "x"]),
        "medicationCodeableConcept": medication_concept,
        "subject": reference,
        "whenHandedOver": when,
        "whenPrepared": when,
        "daysSupply": quantity,
        "category": concept,
        "performer": json_values,
        "authorizingPrescription": st.lists(reference, max_size=2),
    },
)
request = resource(
    "MedicationRequest",
    {
        "status": st.sampled_from(["active", "stopped"]),
        "medicationCodeableConcept": medication_concept,
        "subject": reference,
        "requester": reference,
    },
)
condition = resource(
    "Condition",
    {
        "code": st.fixed_dictionaries({"coding": st.just([{"code": "benign-ethnic-neutropenia"}])}),
        "subject": reference,
        "onsetDateTime": when,
        "abatementDateTime": when,
        "clinicalStatus": concept,
    },
)
flag = resource(
    "Flag",
    {
        "status": st.sampled_from(["active", "inactive"]),
        "code": st.fixed_dictionaries({"coding": st.just([{"code": "hospice"}])}),
        "subject": reference,
        "period": st.fixed_dictionaries({"start": when, "end": when}),
    },
)
issue = resource(
    "DetectedIssue",
    {
        "identifier": st.just(
            [{"system": "https://rems-adapter.github.io/fhir/sid/decision", "value": "fz"}]
        ),
        "status": st.sampled_from(["final", "cancelled"]),
        "code": concept,
        "patient": reference,
        "identifiedDateTime": when,
        "evidence": json_values,
        "implicated": json_values,
        "mitigation": st.lists(
            st.fixed_dictionaries({"author": reference, "date": when, "action": concept}),
            max_size=2,
        ),
    },
)
resources = st.one_of(observation, dispense, request, condition, flag, issue)
bundles = st.fixed_dictionaries(
    {
        "resourceType": st.just("Bundle"),
        "type": st.sampled_from(["collection", "transaction", "batch"]),
        "entry": st.lists(
            st.fixed_dictionaries(
                {"resource": _maybe(resources)},
                optional={"fullUrl": st.sampled_from(["urn:uuid:a", "urn:uuid:b"])},
            ),
            max_size=4,
        ),
    }
)
anything = st.one_of(resources, resources, bundles, json_values)
