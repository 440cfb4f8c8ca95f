"""The bundled demo data: deterministic, valid FHIR R4 (R4B models), and covering every scenario.

The expected outcomes in ``adapter/demo/expected.json`` are derived by hand; the checks at the end
only make sure those hand values agree with the data they describe (dates, units, thresholds from
``mappings/``), so a typo in either shows up here rather than as a puzzling core failure.
"""

from __future__ import annotations

import json
import tomllib
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapter.demo import generate
from adapter.demo.builders import add_months
from adapter.demo.scenarios import DEMO_AS_OF, REQUIRED_SCENARIOS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "adapter" / "demo"
DATA = DEMO / "data"
MAPPINGS = ROOT / "mappings"

ANC_LOINC = {"751-8", "753-4", "26499-4"}
CLOZAPINE = ("http://www.nlm.nih.gov/research/umls/rxnorm", "2626")
DISPENSE_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationdispense-category"
UCUM = "http://unitsofmeasure.org"
AS_OF = datetime.fromisoformat(DEMO_AS_OF.replace("Z", "+00:00"))

Resource = dict[str, Any]


# ------------------------------------------------------------------------------------ loading


def ndjson_resources() -> list[tuple[int, Resource]]:
    lines = (DATA / generate.NDJSON_NAME).read_text(encoding="utf-8").splitlines()
    return [(number, json.loads(line)) for number, line in enumerate(lines, start=1)]


def bundle() -> Resource:
    loaded: Resource = json.loads((DATA / generate.BUNDLE_NAME).read_text(encoding="utf-8"))
    return loaded


def all_resources() -> list[Resource]:
    return [r for _, r in ndjson_resources()] + [e["resource"] for e in bundle()["entry"]]


def expected() -> Resource:
    loaded: Resource = json.loads((DEMO / generate.EXPECTED_NAME).read_text(encoding="utf-8"))
    return loaded


def patient_of(resource: Resource) -> str | None:
    if resource["resourceType"] == "Patient":
        return f"Patient/{resource['id']}"
    for key in ("subject", "patient"):
        if key in resource:
            reference: str = resource[key]["reference"]
            return reference
    return None


def by_patient() -> dict[str, list[Resource]]:
    grouped: dict[str, list[Resource]] = defaultdict(list)
    for resource in all_resources():
        owner = patient_of(resource)
        if owner is not None:
            grouped[owner].append(resource)
    return grouped


def code_of(resource: Resource) -> str:
    code: str = resource["code"]["coding"][0]["code"]
    return code


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_clozapine(dispense: Resource) -> bool:
    codings = dispense["medicationCodeableConcept"]["coding"]
    return any((c.get("system"), c.get("code")) == CLOZAPINE for c in codings)


def anc_observations(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["resourceType"] == "Observation" and code_of(r) in ANC_LOINC]


def supplies(resources: list[Resource]) -> list[tuple[date, int]]:
    spans = [
        (when(r["whenHandedOver"]).date(), int(r["daysSupply"]["value"]))
        for r in resources
        if r["resourceType"] == "MedicationDispense"
        and r["status"] == "completed"
        and is_clozapine(r)
    ]
    return sorted(spans)


def supply_gaps(spans: list[tuple[date, int]]) -> list[tuple[int, date]]:
    """(days without clozapine, the handover that ended them) for every break in supply."""
    gaps: list[tuple[int, date]] = []
    covered_until: date | None = None
    for handed, days in spans:
        if covered_until is not None and handed > covered_until:
            gaps.append(((handed - covered_until).days, handed))
        end = handed + timedelta(days=days)
        covered_until = end if covered_until is None else max(covered_until, end)
    return gaps


# ------------------------------------------------------------------------------ determinism


def test_regenerating_gives_byte_identical_files(tmp_path: Path) -> None:
    for run in ("first", "second"):
        out = tmp_path / run / "data"
        assert generate.main(["--out", str(out), "--expected", str(tmp_path / run / "e.json")]) == 0
        for name in (generate.NDJSON_NAME, generate.BUNDLE_NAME):
            assert (out / name).read_bytes() == (DATA / name).read_bytes(), (
                f"{name} differs from the committed file: run python -m adapter.demo.generate"
            )
        assert (tmp_path / run / "e.json").read_bytes() == (
            DEMO / generate.EXPECTED_NAME
        ).read_bytes(), "expected.json differs: run python -m adapter.demo.generate"


def test_default_expected_file_sits_next_to_the_data_folder(tmp_path: Path) -> None:
    out = tmp_path / "pkg" / "data"
    assert generate.main(["--out", str(out)]) == 0
    assert (tmp_path / "pkg" / generate.EXPECTED_NAME).is_file()


def test_ndjson_is_one_resource_per_line_in_a_stable_order() -> None:
    text = (DATA / generate.NDJSON_NAME).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\n\n" not in text
    resources = [r for _, r in ndjson_resources()]
    assert resources[0]["resourceType"] == "Practitioner"
    keys = [(r["resourceType"], r["id"], r["meta"]["versionId"]) for r in resources]
    assert len(keys) == len(set(keys)), "a resource version appears twice"
    in_bundle = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle()["entry"]}
    assert not in_bundle & {(kind, rid) for kind, rid, _ in keys}, "a resource is in both files"


# ------------------------------------------------------------------------------ FHIR validity


def test_every_ndjson_resource_parses_with_r4b_models() -> None:
    failures = []
    for line, resource in ndjson_resources():
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except Exception as error:  # report every bad line, not only the first
            failures.append(f"demo.ndjson line {line} ({resource.get('id')}): {error}")
    assert not failures, "\n".join(failures[:10])


def test_bundle_parses_with_r4b_models() -> None:
    parsed = get_fhir_model_class("Bundle").model_validate(bundle())
    assert parsed.type == "collection"
    assert len(parsed.entry) > 10


def test_times_carry_a_zone_and_nothing_but_the_trap_is_after_the_clock() -> None:
    late: set[str] = set()
    for resource in all_resources():
        for key in ("effectiveDateTime", "whenHandedOver", "whenPrepared", "issued"):
            if key in resource:
                stamp = when(resource[key])
                assert stamp.tzinfo is not None, f"{resource['id']}.{key} has no time zone"
                if stamp > AS_OF:
                    late.add(resource["id"])
    # Exactly one result is deliberately collected after the clock (it must be ignored).
    [trap_id] = late
    trap = next(r for r in all_resources() if r["id"] == trap_id)
    assert patient_of(trap) == "Patient/demo-02"
    assert code_of(trap) in ANC_LOINC
    assert when(trap["effectiveDateTime"]) > AS_OF


# ------------------------------------------------------------------------------ coverage


def test_at_least_22_patients_each_with_an_expected_outcome() -> None:
    doc = expected()
    patients = {p["patient"] for p in doc["patients"]}
    in_data = {f"Patient/{r['id']}" for r in all_resources() if r["resourceType"] == "Patient"}
    assert len(patients) >= 22
    assert patients == in_data
    for entry in doc["patients"]:
        assert entry["why"] and "\n" not in entry["why"], entry["patient"]
        assert entry["status"]["latestAnc"] is not None, entry["patient"]


def test_every_required_scenario_is_tagged() -> None:
    tagged = {tag for p in expected()["patients"] for tag in p["scenarios"]}
    missing = set(REQUIRED_SCENARIOS) - tagged
    assert not missing, f"scenarios without a patient: {sorted(missing)}"
    unknown = tagged - set(REQUIRED_SCENARIOS)
    assert not unknown, f"tags not in REQUIRED_SCENARIOS: {sorted(unknown)}"


def patients_tagged(tag: str) -> list[str]:
    return [p["patient"] for p in expected()["patients"] if tag in p["scenarios"]]


@pytest.mark.parametrize(
    ("unit", "ucum_code"),
    [
        ("10*3/uL", "10*3/uL"),
        ("10*9/L", "10*9/L"),
        ("/uL", "/uL"),
        ("/mm3", "/mm3"),
        ("{cells}/uL", "{cells}/uL"),
        ("K/uL", None),
        ("x10^3/uL", None),
        ("10^9/L", None),
        ("cells/uL", None),
        ("cells/mm3", None),
    ],
)
def test_each_unit_variant_is_the_latest_anc_of_a_tagged_patient(
    unit: str, ucum_code: str | None
) -> None:
    grouped = by_patient()
    tagged = patients_tagged(f"unit-{unit}")
    assert tagged
    latest_refs = {
        p["status"]["latestAnc"]["observation"]
        for p in expected()["patients"]
        if p["patient"] in tagged
    }
    found = []
    for patient in tagged:
        for obs in anc_observations(grouped[patient]):
            quantity = obs["valueQuantity"]
            if f"Observation/{obs['id']}" not in latest_refs:
                continue
            if ucum_code is None:
                assert "code" not in quantity and quantity["unit"] == unit
            else:
                assert quantity["system"] == UCUM and quantity["code"] == ucum_code
            found.append(obs["id"])
    assert found, f"no latest ANC in unit {unit}"


def test_derived_anc_has_wbc_and_differential_from_one_specimen_without_direct_anc() -> None:
    [patient] = patients_tagged("derived-anc")
    entry = next(p for p in expected()["patients"] if p["patient"] == patient)
    resources = by_patient()[patient]
    collected = entry["status"]["latestAnc"]["collected"]
    same_time = [
        r
        for r in resources
        if r["resourceType"] == "Observation" and r.get("effectiveDateTime") == collected
    ]
    codes = {code_of(r) for r in same_time}
    assert {"6690-2", "770-8", "764-1"} <= codes
    assert not codes & ANC_LOINC
    assert len({r["specimen"]["reference"] for r in same_time}) == 1


def test_corrected_result_is_a_second_version_with_another_value() -> None:
    [patient] = patients_tagged("corrected-result")
    versions: dict[str, list[Resource]] = defaultdict(list)
    for obs in anc_observations(by_patient()[patient]):
        versions[obs["id"]].append(obs)
    [(first, second)] = [tuple(v) for v in versions.values() if len(v) == 2]
    assert (first["meta"]["versionId"], second["meta"]["versionId"]) == ("1", "2")
    assert (first["status"], second["status"]) == ("final", "corrected")
    assert first["valueQuantity"]["value"] != second["valueQuantity"]["value"]
    assert when(second["meta"]["lastUpdated"]) > when(first["meta"]["lastUpdated"])


def test_entered_in_error_withdraws_a_low_result() -> None:
    [patient] = patients_tagged("entered-in-error")
    statuses = [obs["status"] for obs in anc_observations(by_patient()[patient])]
    assert "entered-in-error" in statuses


def test_out_of_order_result_is_older_but_arrives_later() -> None:
    [patient] = patients_tagged("out-of-order")
    observations = anc_observations(by_patient()[patient])
    pairs = [
        (a, b)
        for a in observations
        for b in observations
        if when(a["effectiveDateTime"]) < when(b["effectiveDateTime"])
        and when(a["issued"]) > when(b["issued"])
        and when(a["meta"]["lastUpdated"]) > when(b["meta"]["lastUpdated"])
    ]
    assert pairs
    # In the NDJSON file the late result also comes after the newer one (arrival order).
    order = [r["id"] for r in all_resources()]
    late, newer = pairs[0]
    assert order.index(late["id"]) > order.index(newer["id"])


def test_unevaluable_value_is_1400_in_thousands() -> None:
    [patient] = patients_tagged("unevaluable")
    quantities = [obs["valueQuantity"] for obs in anc_observations(by_patient()[patient])]
    assert {"value": 1400, "unit": "10*3/uL", "system": UCUM, "code": "10*3/uL"} in quantities


def pending_dispenses(resources: list[Resource]) -> list[Resource]:
    return [
        r
        for r in resources
        if r["resourceType"] == "MedicationDispense" and r["status"] == "preparation"
    ]


def test_discharge_supply_exceeds_weekly_limit() -> None:
    [patient] = patients_tagged("discharge-over-limit")
    entry = next(p for p in expected()["patients"] if p["patient"] == patient)
    assert entry["status"]["monitoringFrequency"] == "weekly"
    [pending] = pending_dispenses(by_patient()[patient])
    assert pending["category"]["coding"][0] == {"system": DISPENSE_CATEGORY, "code": "discharge"}
    assert pending["daysSupply"]["value"] == 28


def requesters(resources: list[Resource]) -> set[str]:
    return {
        r["requester"]["reference"] for r in resources if r["resourceType"] == "MedicationRequest"
    }


def mitigations(resources: list[Resource]) -> list[dict[str, Any]]:
    return [
        m
        for r in resources
        if r["resourceType"] == "DetectedIssue"
        for m in r.get("mitigation", [])
    ]


def test_prescriber_rationale_is_a_mitigation_by_the_requester() -> None:
    [patient] = patients_tagged("prescriber-rationale")
    resources = by_patient()[patient]
    [mitigation] = mitigations(resources)
    assert mitigation["author"]["reference"] in requesters(resources)
    issue = next(r for r in resources if r["resourceType"] == "DetectedIssue")
    assert issue["author"]["reference"] == "Device/rems-adapter"
    evidence = issue["evidence"][0]["detail"][0]["reference"]
    low = next(r for r in resources if f"Observation/{r['id']}" == evidence)
    assert when(mitigation["date"]) > when(low["effectiveDateTime"])


def test_pharmacist_override_is_emauth_by_someone_who_is_not_the_prescriber() -> None:
    [patient] = patients_tagged("pharmacist-override")
    resources = by_patient()[patient]
    [mitigation] = mitigations(resources)
    assert mitigation["author"]["reference"] not in requesters(resources)
    codes = {(c["system"], c["code"]) for c in mitigation["action"]["coding"]}
    assert ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "EMAUTH") in codes
    issue = next(r for r in resources if r["resourceType"] == "DetectedIssue")
    [pending] = pending_dispenses(resources)
    assert issue["implicated"] == [{"reference": f"MedicationDispense/{pending['id']}"}]


def test_interruptions_one_restart_and_one_short_break_and_no_accidental_gaps() -> None:
    grouped = by_patient()
    [restart] = patients_tagged("interruption-restart")
    [short] = patients_tagged("interruption-under-30-days")
    for patient, resources in grouped.items():
        gaps = [days for days, _ in supply_gaps(supplies(resources))]
        if patient == restart:
            assert max(gaps) >= 30
        elif patient == short:
            assert 0 < max(gaps) < 30
        else:
            assert all(days < 30 for days in gaps), f"{patient} has an unplanned 30-day gap"


def test_ben_patients_have_two_baselines_before_the_first_supply() -> None:
    for entry in expected()["patients"]:
        if entry["status"]["population"] != "ben":
            continue
        resources = by_patient()[entry["patient"]]
        spans = supplies(resources)
        first = spans[0][0] if spans else AS_OF.date() + timedelta(days=1)
        baselines = [
            obs
            for obs in anc_observations(resources)
            if when(obs["effectiveDateTime"]).date() < first
        ]
        assert len(baselines) >= 2, entry["patient"]


def test_designations_are_conditions_or_flags_with_project_codes_and_no_system() -> None:
    designations = [r for r in all_resources() if r["resourceType"] in ("Condition", "Flag")]
    kinds = {(r["resourceType"], code_of(r)) for r in designations}
    assert ("Condition", "benign-ethnic-neutropenia") in kinds
    assert ("Flag", "benign-ethnic-neutropenia") in kinds
    assert ("Condition", "hospice") in kinds
    for resource in designations:
        assert "system" not in resource["code"]["coding"][0]


def test_noise_is_present() -> None:
    resources = all_resources()
    observation_codes = {code_of(r) for r in resources if r["resourceType"] == "Observation"}
    assert {"8867-4", "2345-7", "768-2"} <= observation_codes
    other = [r for r in pending_dispenses(resources) if not is_clozapine(r)]
    assert [f"MedicationDispense/{r['id']}" for r in other] == expected()["ignoredDispenses"]
    assert "preliminary" in {r["status"] for r in anc_observations(resources)}


def test_practitioners_have_npis_and_every_request_names_one() -> None:
    resources = all_resources()
    practitioners = {
        f"Practitioner/{r['id']}": r for r in resources if r["resourceType"] == "Practitioner"
    }
    for practitioner in practitioners.values():
        [npi] = practitioner["identifier"]
        assert npi["system"] == "http://hl7.org/fhir/sid/us-npi"
        assert len(npi["value"]) == 10 and npi["value"].isdigit()
    requests = [r for r in resources if r["resourceType"] == "MedicationRequest"]
    assert requests
    for request in requests:
        assert request["requester"]["reference"] in practitioners


def test_every_pending_clozapine_dispense_has_an_expected_decision() -> None:
    pending = {
        f"MedicationDispense/{r['id']}"
        for r in pending_dispenses(all_resources())
        if is_clozapine(r)
    }
    decided = {d["dispense"] for p in expected()["patients"] for d in p["dispenses"]}
    assert pending == decided


# ------------------------------------------------------- hand-derived values agree with the data


def unit_factors() -> dict[str, Decimal]:
    units = tomllib.loads((MAPPINGS / "units.toml").read_text(encoding="utf-8"))
    factors = {code: Decimal(value) for code, value in units["ucum"].items()}
    factors.update({alias.lower(): Decimal(value) for alias, value in units["alias"].items()})
    return factors


def per_ul(quantity: dict[str, Any]) -> Decimal:
    factors = unit_factors()
    factor = factors.get(quantity.get("code", "")) or factors[quantity["unit"].lower()]
    return Decimal(str(quantity["value"])) * factor


def band_category(population: str, value: Decimal) -> str:
    protocol = tomllib.loads((MAPPINGS / "protocol.toml").read_text(encoding="utf-8"))
    for band in protocol["population"][population]["band"]:
        if value >= band["min"]:
            category: str = band["category"]
            return category
    raise AssertionError("bands do not cover 0")


INTERVALS = {
    "daily": (1, 0),
    "three-times-weekly": (3, 0),
    "weekly": (7, 0),
    "every-2-weeks": (14, 0),
    "monthly": (0, 1),
    "every-6-months": (0, 6),
}


@pytest.mark.parametrize("entry", expected()["patients"], ids=lambda e: e["patient"])
def test_hand_derived_status_agrees_with_the_data(entry: dict[str, Any]) -> None:
    status = entry["status"]
    resources = {f"{r['resourceType']}/{r['id']}": r for r in by_patient()[entry["patient"]]}
    latest = status["latestAnc"]
    source = resources[latest["observation"]]
    assert source["effectiveDateTime"] == latest["collected"]
    collected = when(latest["collected"])
    if code_of(source) in ANC_LOINC:
        assert per_ul(source["valueQuantity"]) == latest["valuePerUL"]
    else:  # derived: WBC x (neutrophil % + band %) / 100 from the same specimen
        panel = [
            r
            for r in resources.values()
            if r["resourceType"] == "Observation" and r.get("specimen") == source["specimen"]
        ]
        pct = sum(
            Decimal(str(r["valueQuantity"]["value"])) for r in panel if code_of(r) != "6690-2"
        )
        assert per_ul(source["valueQuantity"]) * pct / 100 == latest["valuePerUL"]
    assert band_category(status["population"], Decimal(latest["valuePerUL"])) == status["category"]
    days, months = INTERVALS[status["monitoringFrequency"]]
    due = add_months(collected.date(), months) + timedelta(days=days)
    assert status["nextAncDue"] == due.isoformat()
    assert status["overdue"] == (AS_OF.date() > due + timedelta(days=2))
    if status["repeatAncBy"] is not None:
        assert when(status["repeatAncBy"]) == collected + timedelta(hours=24)
    spans = supplies(list(resources.values()))
    if status["therapyStart"] is None:
        assert not spans
    else:
        restarts = [handed for days_without, handed in supply_gaps(spans) if days_without >= 30]
        start = restarts[-1] if restarts else spans[0][0]
        assert status["therapyStart"] == start.isoformat()
    for decided in entry["dispenses"]:
        dispense = resources[decided["dispense"]]
        assert dispense["status"] == "preparation"
        assert decided["daysSupply"] == dispense["daysSupply"]["value"]
        category = dispense.get("category", {}).get("coding", [{}])[0].get("code", "outpatient")
        assert decided["setting"] == category
        # Reasons are listed for a refusal only (an override's are in its DetectedIssue).
        assert (decided["outcome"] == "not-authorized") == bool(decided["reasons"])
