"""ORU^R01 -> FHIR Observation: the mapping read back by the adapter's own FHIR reader and core.

Table-driven at the boundaries (units, SN values, statuses, timestamps), properties for numbers,
and the vendored public samples (tests/data/hl7v2/README.md)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.core.labs import assess_labs, count_factor, is_percent
from adapter.core.model import LabObservation
from adapter.hl7v2.message import parse
from adapter.hl7v2.oru import OruMessage, header, translate
from adapter.mappings_loader import MappingError, load_hl7v2_tables
from tests.hl7v2.kit import (
    AUTHORITY,
    REFERENCE,
    SYSTEM,
    TABLES,
    obr,
    obx,
    options,
    oru,
    reader,
    receiver,
    sample,
)

WBC, ANC, NEUT = "6690-2^WBC^LN", "751-8^ANC^LN", "770-8^Neutrophils %^LN"


def mapped(raw: bytes, **changes: object) -> OruMessage:
    stored: list[OruMessage] = []
    reply = receiver(stored.append, **changes)(raw)
    assert reply.outcome == "AA", reply.reason
    assert len(stored) == 1
    return stored[0]


def refused(raw: bytes, **changes: object) -> tuple[str, str]:
    """(MSA-1 outcome, reason) of a message the receiver does not store."""
    stored: list[OruMessage] = []
    reply = receiver(stored.append, **changes)(raw)
    assert reply.outcome != "AA"
    assert stored == []
    assert reply.reason is not None
    return reply.outcome, reply.reason


def labs(message: OruMessage) -> list[LabObservation]:
    """Each mapped Observation as the adapter's FHIR reader reads it (subject matched)."""
    out = []
    for index, result in enumerate(message.results):
        resource = copy.deepcopy(result.observation)
        resource["subject"]["reference"] = "Patient/p1"
        lab = reader().observation(resource, index)
        assert lab is not None
        out.append(lab)
    return out


def only(message: OruMessage) -> dict[str, Any]:
    assert len(message.results) == 1
    return message.results[0].observation


# ------------------------------------------------------------------ public samples


def test_nist_cbc_maps_the_three_results_the_anc_rules_read():
    message = mapped(sample("nist-lri-gu-002-cbc.hl7"))
    codes = [result.observation["code"]["coding"][0]["code"] for result in message.results]
    assert codes == ["26464-8", "26499-4", "26511-6"]  # WBC, ANC, neutrophil %
    assert message.ignored == 25  # RBC, Hb, ... morphology: not read by the ANC rules
    assert {result.patient.value for result in message.results} == {"PATID1234"}
    assert message.results[0].patient.system == SYSTEM
    anc = message.results[1].observation
    assert anc["valueQuantity"] == {
        "value": 58,
        "unit": "thousand per microliter",
        "system": "http://unitsofmeasure.org",
        "code": "10*3/uL",
    }
    assert anc["effectiveDateTime"] == "2011-01-03T14:34:28-08:00"
    assert anc["issued"] == "2011-01-04T17:00:28-08:00"  # OBR-22
    read = labs(message)
    assert read[1].role == "anc" and read[1].value == Decimal(58)
    assert count_factor(read[1], REFERENCE.units) == 1000
    assert is_percent(read[2], REFERENCE.units)
    for result in message.results:  # valid R4 (R4B models are field-for-field R4 here)
        Observation.model_validate(result.observation)


def test_nist_esr_with_a_truncation_character_is_taken_and_maps_nothing():
    # MSH-2 "^~\&#" (v2.7 truncation character), NTE and TQ1 segments; an ESR is not read
    message = mapped(sample("nist-lri-gu-001-esr-final.hl7"))
    assert message.results == () and message.ignored == 1
    assert message.header.key.endswith("|NIST-LRI-GU-001.00")


def test_nist_sample_is_a_training_message_refused_unless_the_site_accepts_t():
    outcome, reason = refused(sample("nist-lri-gu-002-cbc.hl7"), processing_ids=frozenset({"P"}))
    assert outcome == "AR" and "MSH-11" in reason


def test_python_hl7_sample_names_no_patient_under_the_authority():
    outcome, reason = refused(sample("python-hl7-glucose.hl7"))
    assert outcome == "AE" and reason.startswith("PID[1]-3")


def test_python_hl7_sample_pid3_without_authority_matches_no_setting():
    # PID-3 has no assigning authority at all: not even an empty setting makes it a match
    outcome, _ = refused(sample("python-hl7-glucose.hl7"), assigning_authority="")
    assert outcome == "AE"


def test_hl7apy_adt_sample_is_refused_as_an_unsupported_message_type():
    outcome, reason = refused(sample("hl7apy-adt-a01.hl7"))
    assert outcome == "AR" and "MSH-9" in reason


# ------------------------------------------------------------------ codes


@pytest.mark.parametrize(
    ("code", "loinc"),
    [
        ("751-8^Neutrophils^LN", "751-8"),
        ("ANC^Abs neutrophils^L^751-8^Neutrophils^LN", "751-8"),  # LOINC in the alternate
        ("753-4^Neutrophils manual^LN^ANC^Abs neutrophils^L", "753-4"),
        ("26499-4^^LOINC", "26499-4"),
    ],
)
def test_loinc_in_the_first_or_the_alternate_triplet(code, loinc):
    resource = only(mapped(oru(obr(), obx(1, code, "2.1"))))
    assert (
        resource["code"]["coding"][0]
        == {
            "system": "http://loinc.org",
            "code": loinc,
            **({"display": "Neutrophils"} if "Neutrophils^LN" in code else {}),
        }
        or resource["code"]["coding"][0]["code"] == loinc
    )
    assert resource["code"]["coding"][0]["system"] == "http://loinc.org"
    assert resource["code"]["coding"][0]["code"] == loinc
    # every other coding names a system: never a bare code the reader could take for LOINC
    assert all(coding["system"] for coding in resource["code"]["coding"])


def test_a_local_code_alone_is_not_read_without_a_site_map():
    message = mapped(oru(obr(), obx(1, "ANC^Abs neutrophils^L", "2.1")))
    assert message.results == () and message.ignored == 1


def _site_tables(tmp_path: Path, rows: str):
    folder = tmp_path / "site"
    folder.mkdir()
    bundled = (Path(__file__).resolve().parents[2] / "mappings" / "hl7v2.toml").read_text()
    (folder / "hl7v2.toml").write_text(bundled + rows)
    return load_hl7v2_tables(folder)


def test_a_local_code_through_the_site_map(tmp_path):
    tables = _site_tables(
        tmp_path,
        '\n[[local_code]]\ncode = "ANC"\nsystem = "L"\nloinc = "751-8"\n'
        '\n[[local_code]]\ncode = "WBC"\nsender = "OTHERLAB"\nloinc = "6690-2"\n',
    )
    stored: list[OruMessage] = []
    message = oru(obr(), obx(1, "ANC^Abs neutrophils^L", "2.1"), obx(2, "WBC^^L", "4.0"))
    assert receiver(stored.append, tables=tables)(message).outcome == "AA"
    (result,) = stored[0].results  # WBC maps only for OTHERLAB, not NORTHLAB
    codings = result.observation["code"]["coding"]
    assert codings[0] == {"system": "http://loinc.org", "code": "751-8"}
    assert codings[1]["code"] == "ANC"


@pytest.mark.parametrize(
    ("triplets", "row", "expected"),
    [
        # the lab's own LOINC says segmented neutrophils: not an ANC, whatever the site row says
        ("ANC^abs^L^30451-9^Segs^LN", ("ANC", "751-8"), None),
        # the lab's own LOINC says ANC: kept, though the site maps the local code elsewhere
        ("SEG^segs^L^751-8^ANC^LN", ("SEG", "30451-9"), "751-8"),
        # no LOINC sent: the site's row names it
        ("ANC^abs^L", ("ANC", "751-8"), "751-8"),
    ],
    ids=["segs-stay-segs", "anc-stays-anc", "local-only"],
)
def test_a_site_row_never_overrides_the_lab_s_own_loinc(tmp_path, triplets, row, expected):
    code, loinc = row
    tables = _site_tables(
        tmp_path, f'\n[[local_code]]\ncode = "{code}"\nsystem = "L"\nloinc = "{loinc}"\n'
    )
    stored: list[OruMessage] = []
    message = oru(obr(), obx(1, triplets, "1.2", unit="10*3/uL"))
    assert receiver(stored.append, tables=tables)(message).outcome == "AA"
    results = stored[0].results
    if expected is None:
        assert results == ()
    else:
        (result,) = results
        loincs = [c["code"] for c in result.observation["code"]["coding"] if "loinc" in c["system"]]
        assert loincs == [expected]


@pytest.mark.parametrize(
    "rows",
    [
        '\n[[local_code]]\ncode = "ANC"\n',  # no loinc
        '\n[[local_code]]\ncode = "ANC"\nloinc = "751-8"\ncolour = "red"\n',
        '\n[status]\nZZ = "final"\n',
    ],
)
def test_a_bad_site_map_is_refused_naming_the_entry(tmp_path, rows):
    with pytest.raises(MappingError) as caught:
        _site_tables(tmp_path, rows)
    assert "hl7v2.toml" in str(caught.value)


def test_the_bundled_tables_name_source_and_effective_date():
    assert TABLES.status_of("F") == "final"
    assert TABLES.system_uri("LN") == "http://loinc.org"


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("10*3/uL^thousand per microliter^UCUM", 1000),
        ("10*9/L^^UCUM", 1000),
        ("K/uL", 1000),
        ("x10\\S\\3/uL", 1000),  # x10^3/uL, the caret escaped
        ("10\\S\\9/L", 1000),  # 10^9/L (clinical-rules section 1)
        ("10E3/uL", 1000),
        ("Thousand/uL", 1000),
        ("K/uL^thousand/uL^L^10*3/uL^^UCUM", 1000),  # UCUM in the alternate triplet
        ("cells/uL", 1),
        ("/mm3^^UCUM", 1),
        ("{cells}/uL^cells per microliter^UCUM", 1),
    ],
)
def test_units_in_several_spellings_normalise_through_the_same_aliases(unit, factor):
    (lab,) = labs(mapped(oru(obr(), obx(1, ANC, "1.2", unit=unit))))
    assert count_factor(lab, REFERENCE.units) == factor


@pytest.mark.parametrize("unit", ["%^percent^UCUM", "mg/dL", "furlongs"])
def test_a_count_in_a_unit_of_another_kind_is_unevaluable(unit):
    message = mapped(oru(obr(), obx(1, ANC, "1.2", unit=unit)))
    outcome = assess_labs(labs(message), REFERENCE.units, REFERENCE.protocol.sanity, _CLOCK)
    assert outcome.usable == () and len(outcome.unevaluable) == 1


def test_escapes_are_decoded_after_the_split():
    resource = only(
        mapped(oru(obr(), obx(1, "751-8^Neutrophils \\T\\ bands^LN", "1.2", unit="10\\S\\9/L")))
    )
    assert resource["valueQuantity"]["unit"] == "10^9/L"
    assert resource["code"]["coding"][0]["display"] == "Neutrophils & bands"


# ------------------------------------------------------------------ values

_CLOCK = datetime(2026, 3, 31, tzinfo=UTC)


def _within(expected: object, actual: object) -> bool:
    """Every key of `expected` is in `actual` with the same value (recursively)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _within(value, actual[key]) for key, value in expected.items()
        )
    return expected == actual and type(expected) is type(actual)


@pytest.mark.parametrize(
    ("kind", "value", "expected", "usable"),
    [
        ("SN", "^1.5", {"valueQuantity": {"value": 1.5}}, True),
        ("SN", "=^1.5", {"valueQuantity": {"value": 1.5}}, True),
        ("SN", "<^0.1", {"valueQuantity": {"comparator": "<", "value": 0.1}}, False),
        ("SN", ">=^100", {"valueQuantity": {"comparator": ">=", "value": 100}}, False),
        ("SN", "^1^-^5", {"valueRange": {"low": {"value": 1}, "high": {"value": 5}}}, False),
        ("SN", "^1^:^2", {"valueRatio": {"numerator": {"value": 1}}}, False),
        ("SN", "<>^5", {"valueString": "<>5"}, False),
        ("NM", "2.1", {"valueQuantity": {"value": 2.1}}, True),
        ("NM", "+2.10", {"valueQuantity": {"value": 2.1}}, True),
        ("NM", ".5", {"valueQuantity": {"value": 0.5}}, True),
        ("ST", "clumped", {"valueString": "clumped"}, False),
    ],
)
def test_nm_and_sn_values(kind, value, expected, usable):
    resource = only(mapped(oru(obr(), obx(1, ANC, value, kind=kind))))
    assert _within(expected, resource)
    outcome = assess_labs(
        labs(mapped(oru(obr(), obx(1, ANC, value, kind=kind)))),
        REFERENCE.units,
        REFERENCE.protocol.sanity,
        _CLOCK,
    )
    assert bool(outcome.usable) is usable
    if not usable:
        assert len(outcome.unevaluable) == 1


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("NM", "1,5", "OBX[1]-5"),
        ("NM", "1.5e3", "OBX[1]-5"),
        ("NM", "one", "OBX[1]-5"),
        ("SN", "<^x", "OBX[1]-5.2"),
        ("SN", "^1^-^y", "OBX[1]-5.4"),
        ("", "1.5", "OBX[1]-2"),
        ("NM", "1~2", "OBX[1]-5"),
    ],
)
def test_a_malformed_number_is_refused_naming_the_field(kind, value, field):
    outcome, reason = refused(oru(obr(), obx(1, ANC, value, kind=kind)))
    assert outcome == "AE" and reason.startswith(field)


def test_a_malformed_value_on_a_result_the_rules_do_not_read_is_not_our_business():
    message = mapped(oru(obr(), obx(1, "2093-3^Cholesterol^LN", "lots"), obx(2, ANC, "2")))
    assert len(message.results) == 1 and message.ignored == 1


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("0"), max_value=Decimal("100000"), places=3, allow_nan=False))
def test_property_an_nm_value_reads_back_exactly(number):
    text = format(number, "f")
    (lab,) = labs(mapped(oru(obr(), obx(1, ANC, text, unit="/uL"))))
    assert lab.value == Decimal(text)


# ------------------------------------------------------------------ statuses


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("F", "final"),
        ("C", "corrected"),
        ("A", "amended"),
        ("P", "preliminary"),
        ("D", "entered-in-error"),
        ("W", "entered-in-error"),
        ("X", "cancelled"),
        ("N", "cancelled"),
        ("R", "preliminary"),
        ("I", "registered"),
        ("f", "final"),
    ],
)
def test_obx_11_status(code, status):
    assert only(mapped(oru(obr(), obx(1, ANC, "2", status=code))))["status"] == status


@pytest.mark.parametrize(("code", "error"), [("Z", "OBX[1]-11"), ("", "OBX[1]-11")])
def test_an_unknown_or_missing_status_is_refused(code, error):
    outcome, reason = refused(oru(obr(), obx(1, ANC, "2", status=code)))
    assert outcome == "AE" and reason.startswith(error)


def _decide(*messages: bytes) -> Any:
    results: list[LabObservation] = []
    for message in messages:
        for lab in labs(mapped(message)):
            results.append(lab.__class__(**{**lab.__dict__, "arrival": len(results)}))
    return assess_labs(results, REFERENCE.units, REFERENCE.protocol.sanity, _CLOCK)


def test_a_correction_replaces_the_result_and_changes_the_decision():
    first = oru(obr(), obx(1, ANC, "0.4"), control="M1")
    corrected = oru(obr(), obx(1, ANC, "1.8", status="C"), control="M2")
    (low,) = _decide(first).usable
    assert low.value_per_ul == 400
    (after,) = _decide(first, corrected).usable
    assert after.value_per_ul == 1800  # the same Observation id: the correction stands
    assert after.observation == low.observation


@pytest.mark.parametrize("code", ["D", "W", "X"])
def test_a_withdrawal_removes_the_result_from_the_decisions(code):
    first = oru(obr(), obx(1, ANC, "0.4"), control="M1")
    withdrawn = oru(obr(), obx(1, ANC, "", status=code), control="M2")
    outcome = _decide(first, withdrawn)
    assert outcome.usable == ()
    assert len(outcome.withdrawn) == 1
    assert bool(outcome.entered_in_error) is (code in "DW")


def test_a_preliminary_result_is_not_decided_on():
    assert _decide(oru(obr(), obx(1, ANC, "0.4", status="P"))).usable == ()


# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    ("obx14", "obr7", "expected"),
    [
        ("20260301083000-0500", "20260301070000-0800", "2026-03-01T08:30:00-05:00"),
        ("", "20260301070000-0800", "2026-03-01T07:00:00-08:00"),
        ("202603010830", "", "2026-03-01T08:30:00-08:00"),  # no offset: the site zone (PST)
        ("20260701083000", "", "2026-07-01T08:30:00-07:00"),  # the site zone in summer (PDT)
        ("2026030108", "", "2026-03-01T08:00:00-08:00"),
        ("20260301083000.1234-0800", "", "2026-03-01T08:30:00.1234-08:00"),
        ("20260301", "", "2026-03-01"),  # a date stays a date
        ("202603", "", "2026-03"),  # kept; the reader finds it not precise to the day
    ],
)
def test_collection_time_obx14_else_obr7_with_v2_precision_and_offset(obx14, obr7, expected):
    resource = only(mapped(oru(obr(collected=obr7), obx(1, ANC, "2", collected=obx14))))
    assert resource["effectiveDateTime"] == expected


def test_collection_time_from_the_specimen_when_obx_and_obr_have_none():
    spm = "SPM|1|S1^LAB||119297000^BLD^SCT|||||||||||||20260301081500-0800"
    resource = only(mapped(oru(obr(collected=""), obx(1, ANC, "2"), spm)))
    assert resource["effectiveDateTime"] == "2026-03-01T08:15:00-08:00"


def test_no_collection_time_at_all_is_unevaluable_not_dated_by_the_report():
    message = mapped(oru(obr(collected=""), obx(1, ANC, "2")))
    assert "effectiveDateTime" not in only(message)
    outcome = assess_labs(labs(message), REFERENCE.units, REFERENCE.protocol.sanity, _CLOCK)
    assert outcome.usable == () and len(outcome.unevaluable) == 1


@pytest.mark.parametrize("bad", ["20261301", "2026-03-01", "20260230", "20260301083000+2500"])
def test_a_malformed_time_is_refused_naming_the_field(bad):
    outcome, reason = refused(oru(obr(), obx(1, ANC, "2", collected=bad)))
    assert outcome == "AE" and reason.startswith("OBX[1]-14")


# ------------------------------------------------------------------ grouping and identity


def test_wbc_and_neutrophil_percent_of_one_order_derive_an_anc():
    message = oru(obr(), obx(1, WBC, "4.5"), obx(2, NEUT, "30", unit="%^^UCUM"))
    (anc,) = _decide(message).usable
    assert anc.derived and anc.value_per_ul == Decimal("1350")


def test_two_orders_at_the_same_time_are_two_specimens_and_derive_nothing():
    message = oru(
        obr(1, "F1"), obx(1, WBC, "4.5"), obr(2, "F2"), obx(1, NEUT, "30", unit="%^^UCUM")
    )
    assert _decide(message).usable == ()


def test_two_orders_under_one_accession_derive_an_anc():
    # a CBC and its differential as two OBRs with one filler number, no SPM (v2.3 feeds)
    second = "OBR|2|PF1^LAB|F1^LAB|57782-5^Differential^LN|||20260301083000-0800"
    message = oru(obr(1, "F1"), obx(1, WBC, "4.5"), second, obx(1, NEUT, "30", unit="%"))
    (anc,) = _decide(message).usable
    assert anc.derived and anc.value_per_ul == Decimal("1350")
    ids = [r.observation["id"] for r in mapped(message).results]
    assert len(set(ids)) == 2


def test_two_orders_on_one_named_specimen_derive_an_anc():
    spm = "SPM|1|TUBE7^LAB||119297000^BLD^SCT"
    message = oru(
        obr(1, "F1"), obx(1, WBC, "4.5"), spm, obr(2, "F2"), obx(1, NEUT, "30", unit="%^^UCUM"), spm
    )
    (anc,) = _decide(message).usable
    assert anc.derived and anc.value_per_ul == Decimal("1350")


def test_a_resend_maps_identically_and_distinct_results_get_distinct_ids():
    raw = oru(obr(1, "F1"), obx(1, ANC, "2"), obx(2, ANC, "3"), obr(2, "F2"), obx(1, ANC, "4"))
    first, again = mapped(raw), mapped(raw)
    assert [r.observation for r in first.results] == [r.observation for r in again.results]
    ids = [r.observation["id"] for r in first.results]
    assert len(set(ids)) == 3
    identifiers = {r.observation["identifier"][0]["value"] for r in first.results}
    assert len(identifiers) == 3


def test_several_patients_in_one_message():
    from tests.hl7v2.kit import PID

    raw = oru(obr(1, "F1"), obx(1, ANC, "2"), PID.format(mrn="2"), obr(1, "F9"), obx(1, ANC, "3"))
    message = mapped(raw)
    assert [r.patient.value for r in message.results] == ["MRN1", "MRN2"]
    assert [r.observation["subject"]["identifier"]["value"] for r in message.results] == [
        "MRN1",
        "MRN2",
    ]


# ------------------------------------------------------------------ patient


def test_pid3_is_taken_only_from_the_configured_authority():
    pid = f"PID|1||999^^^OTHER^MR~MRN5^^^NORTH&{AUTHORITY}&ISO^MR||Doe^Jane"
    raw = (
        f"MSH|^~\\&|LAB|NORTHLAB|||20260301||ORU^R01|C1|P|2.5.1\r{pid}\r{obr()}\r"
        f"{obx(1, ANC, '2')}\r"
    ).encode()
    (result,) = mapped(raw).results
    assert (result.patient.system, result.patient.value) == (SYSTEM, "MRN5")
    (result,) = mapped(raw, assigning_authority="NORTH", identifier_system="urn:x").results
    assert (result.patient.system, result.patient.value) == ("urn:x", "MRN5")


@pytest.mark.parametrize(
    ("pid", "reason"),
    [
        ("PID|1||999^^^OTHER^MR", "PID[1]-3"),
        (f"PID|1||A1^^^&{AUTHORITY}&ISO~A2^^^&{AUTHORITY}&ISO", "PID[1]-3"),  # two: no guess
    ],
)
def test_a_patient_that_cannot_be_named_without_guessing_is_refused(pid, reason):
    raw = (
        f"MSH|^~\\&|LAB|NORTHLAB|||20260301||ORU^R01|C1|P|2.5.1\r{pid}\r{obr()}\r{obx(1, ANC, '2')}"
    )
    outcome, text = refused(raw.encode())
    assert outcome == "AE" and text.startswith(reason)


def test_an_authority_without_an_oid_needs_the_identifier_system_setting():
    head = "MSH|^~\\&|LAB|NORTHLAB|||20260301||ORU^R01|C1|P|2.5.1"
    raw = f"{head}\rPID|1||M1^^^NORTH\r{obr()}\r{obx(1, ANC, '2')}"
    outcome, text = refused(raw.encode(), assigning_authority="NORTH")
    assert outcome == "AE" and "patient_identifier_system" in text


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize(
    ("raw", "outcome", "start"),
    [
        (b"hello", "AR", "MSH[1]"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01||P|2.5.1\r", "AR", "MSH[1]-10"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R03|C1|P|2.5.1\r", "AR", "MSH[1]-9.2"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|P|2.1\r", "AR", "MSH[1]-12"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|D|2.5.1\r", "AR", "MSH[1]-11"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|P|2.5.1\rOBR|1\r", "AE", "OBR[1]"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|P|2.5.1\rPID|1||1^^^X\rob|x\r", "AE", "#3"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|P|2.5.1\rPIDX|1\r", "AE", "PID"),
        (b"MSH|^~\\&|LAB|NORTH|||2026||ORU^R01|C1|P|2.5.1\r\xff\xfe", "AE", "MSH[1]-18"),
    ],
)
def test_malformed_messages_are_refused_naming_the_place(raw, outcome, start):
    got, reason = refused(raw, processing_ids=frozenset({"P"}))
    assert got == outcome
    assert reason.startswith(start), reason


def test_an_obx_before_its_order_is_a_segment_sequence_error():
    outcome, reason = refused(oru(obx(1, ANC, "2")))
    assert outcome == "AE" and reason.startswith("OBX[1]")


def test_header_is_read_for_the_ack_even_from_a_message_that_fails_later():
    message = parse(oru(obr(), obx(1, ANC, "1,5")).decode())
    head = header(message)
    assert head.key == "LAB|NORTHLAB|MSG0001"
    with pytest.raises(Exception, match="OBX"):
        translate(message, head, TABLES, options())


@pytest.mark.parametrize("system", ["LN", "ln", "Ln", " LN"])
def test_the_coding_system_name_is_matched_whatever_its_case(system):
    stored: list[OruMessage] = []
    message = oru(obr(), obx(1, f"751-8^ANC^{system}", "1.2", unit="10*3/uL"))
    assert receiver(stored.append)(message).outcome == "AA"
    (result,) = stored[0].results
    assert result.observation["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "751-8",
        "display": "ANC",
    }


def test_a_repeating_msh_18_is_read_by_its_first_repetition():
    stored: list[OruMessage] = []
    message = oru(obr(), obx(1, ANC, "1.2", unit="10*3/uL"), tail="||||||8859/1~UNICODE UTF-8")
    assert receiver(stored.append)(message).outcome == "AA"
    assert len(stored[0].results) == 1
