"""The batch reader's fast paths keep the documented behaviour: which lab role a coded
Observation gets, and where input problems are reported."""

from __future__ import annotations

import json
from collections import UserDict
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.batch import sources
from adapter.batch.sources import InputProblem, read_sources
from adapter.fhir.read import FhirInputError, Reader
from adapter.mappings_loader import load_reference_data

LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader(load_reference_data(), UTC)


def _code(*codings: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "code": {"coding": list(codings)}}


@pytest.mark.parametrize(
    ("codings", "role"),
    [
        ([{"system": LOINC, "code": "751-8"}], "anc"),
        ([{"system": LOINC, "code": "6690-2"}, {"system": LOINC, "code": "751-8"}], "anc"),
        (
            [{"system": LOINC, "code": "770-8"}, {"system": LOINC, "code": "6690-2"}],
            "neutrophil-pct",
        ),
        ([{"system": "urn:other", "code": "751-8"}, {"code": "770-8"}], "neutrophil-pct"),
        (["junk", {"system": LOINC, "code": "30451-9"}, {"system": LOINC, "code": "751-8"}], "anc"),
        (
            ["junk", {"system": LOINC, "code": "30451-9"}, {"system": LOINC, "code": "6690-2"}],
            "not-anc",
        ),
        ([{"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "764-1"}], "band-pct"),
        ([{"system": LOINC, "code": "769-0"}], "segs-pct"),
        ([{"system": LOINC, "code": "8867-4"}], None),
        ([{"system": "urn:other", "code": "751-8"}], None),
        ([], None),
    ],
)
def test_lab_role_prefers_a_direct_anc_then_the_first_listed_code(
    reader: Reader, codings: list[Any], role: str | None
) -> None:
    assert reader.lab_role(_code(*codings)) == role


@pytest.mark.parametrize("concept", [{"text": "Absolute neutrophil count"}, None])
def test_lab_role_of_a_code_without_codings_is_none(reader: Reader, concept: Any) -> None:
    assert reader.lab_role({"resourceType": "Observation", "code": concept}) is None


@pytest.mark.parametrize(
    ("concept", "path"),
    [
        ("751-8", "Observation.code"),
        ({"coding": {"system": LOINC, "code": "751-8"}}, "Observation.code.coding"),
    ],
)
def test_lab_role_of_a_code_of_the_wrong_shape_is_reported_with_its_path(
    reader: Reader, concept: Any, path: str
) -> None:
    # Read as "no code", an ANC of the wrong shape would pass for another result unnoticed.
    with pytest.raises(FhirInputError) as raised:
        reader.lab_role({"resourceType": "Observation", "code": concept})
    assert raised.value.path == path


def test_lab_role_reads_any_mapping_not_only_dicts(reader: Reader) -> None:
    concept = UserDict({"coding": [UserDict({"system": LOINC, "code": "751-8"})]})
    assert reader.lab_role({"resourceType": "Observation", "code": concept}) == "anc"


def test_ndjson_problems_name_file_and_line_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    observation = {"resourceType": "Observation", "id": "o1"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Observation", "id": "o2"}}, {"resource": [1]}],
    }
    lines = [json.dumps(observation), "", "  \t", "{not json", "[1]", json.dumps(bundle)]
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    problems: list[InputProblem] = []

    read = list(read_sources([str(tmp_path)], problems))

    assert [(item.location, item.resource["id"]) for item in read] == [
        (f"{path}:1", "o1"),
        (f"{path}:6#Bundle.entry[0]", "o2"),
    ]
    assert [str(problem) for problem in problems] == [
        f"{path}:4: not valid JSON",
        f"{path}:5: not a FHIR resource (no resourceType)",
        f"{path}:6#Bundle.entry[1]: Bundle.entry.resource is not a FHIR resource",
    ]


# ------------------------------------------------------------------ long numbers


@pytest.mark.parametrize(
    ("text", "long"),
    [
        (b'{"value":0.99999999999999999999}', True),
        (b'{"value":0.99999999999999999999,"unit":"x"}', True),
        (b"[1.49999999999999999999 ]", True),
        (b"[1.49999999999999999999\n]", True),
        (b'{"v":-12345678901234567890}', True),
        (b'{"v":1.2345678901234567e-5}', True),
        (b'{"v":1.2345678901234567E+05,"w":1}', True),
        (b"1.000000000000000000", True),  # the end of the input
        (b"1.000000000000000000\n", True),
        (b'{"system":"urn:oid:2.16.840.1.113883.3.72.5.20"}', False),  # an OID: a string
        (b'{"v":1.5,"id":"12345678901234567890"}', False),
        (b'{"v":123456789012345}', False),  # 15 digits: a float holds them
        (b'{"v":1.5}', False),
    ],
)
def test_which_lines_are_read_again_for_exact_numbers(text: bytes, long: bool) -> None:
    # A line is read again exactly when it may hold a number with more significant digits than
    # a float (clinical-rules s.1: nothing rounded before it is categorised).
    assert sources._may_hold_long_number(text) is long
    assert (sources._LONG_NUMBER.search(text) is not None) is long


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80) | st.text('0123456789.,:]}" eE+-a\n', max_size=60).map(str.encode))
def test_the_cheap_long_number_test_never_misses_one(data: bytes) -> None:
    # The translated-bytes test is only a shortcut: whatever the exact pattern finds, it lets
    # through (it may let through more).
    if sources._LONG_NUMBER.search(data):
        assert sources._may_hold_long_number(data)
