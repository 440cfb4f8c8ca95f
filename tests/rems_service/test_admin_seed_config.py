"""Certification through the admin endpoints and seed files; windows come from the program file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.rems_service import BackgroundServer, make_app
from adapter.rems_service.config import ConfigError, load_rules
from adapter.rems_service.registry import npi_check_digit_ok
from adapter.rems_service.seed import SeedError

from .conftest import FakeClock, RemsClient, enrollment_body, seed_document

PROGRAM_FILE = Path(__file__).parents[2] / "mappings" / "rems-program.toml"
ASSESSMENT = {"passed": True, "completedOn": "2021-11-01"}


def test_packaged_program_file_holds_the_2021_values() -> None:
    rules = load_rules()

    assert rules.baseline_window_days == 30
    assert rules.psf_window_days == 37
    assert rules.override_limit == 3
    assert rules.override_window_days == 365
    assert rules.discharge_limit_days == 7
    assert (rules.rationale_anc_below_general, rules.rationale_anc_below_ben) == (1000, 500)
    assert str(rules.effective) == "2021-11-15"


def test_a_window_changed_in_the_program_file_changes_the_decision(
    tmp_path: Path, db_path: Path, seed_path: Path
) -> None:
    program = tmp_path / "program.toml"
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    program.write_text(text.replace("psf_window_days = 37", "psf_window_days = 10"), "utf-8")
    clock = FakeClock()
    with BackgroundServer(
        make_app(db_path, seed_path, clock=clock, rules=program, insecure_admin=True)
    ) as url:
        rems = RemsClient(url, clock)
        rems_id = rems.enroll()
        clock.advance(days=11)

        assert rems.rda(rems_id)["reasons"] == ["psf-overdue"]


def test_a_broken_program_file_names_the_key(tmp_path: Path) -> None:
    program = tmp_path / "program.toml"
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    program.write_text(text.replace("override_limit = 3", 'override_limit = "three"'), "utf-8")

    with pytest.raises(ConfigError, match=r"program\.toml: \[override\.override_limit\]"):
        load_rules(program)


def test_npi_check_digit() -> None:
    assert npi_check_digit_ok("1234567893")
    assert not npi_check_digit_ok("1234567890")


def test_admin_endpoints_certify(rems: RemsClient) -> None:
    npi = "1003000126"
    created = rems.post("/admin/prescribers", {"npi": npi, "knowledgeAssessment": ASSESSMENT})
    again = rems.post("/admin/prescribers", {"npi": npi, "knowledgeAssessment": ASSESSMENT})
    designee = rems.post("/admin/designees", {"designeeId": "d-9", "prescriberNpi": npi})
    inpatient = rems.post("/admin/pharmacies", {"pharmacyId": "h-1", "setting": "inpatient"})
    both = rems.post("/admin/pharmacies", {"pharmacyId": "h-1", "setting": "outpatient"})

    assert (created.status_code, again.status_code) == (201, 200)
    assert again.json()["recordedAt"] == created.json()["recordedAt"]
    assert designee.status_code == 201
    assert inpatient.json()["settings"] == ["inpatient"]
    assert both.json()["settings"] == ["inpatient", "outpatient"]


def test_certification_refusals(rems: RemsClient) -> None:
    failed = {"passed": False, "completedOn": "2021-11-01"}
    bad_npi = rems.post("/admin/prescribers", {"npi": "1234567890", "knowledgeAssessment": failed})
    orphan = rems.post("/admin/designees", {"designeeId": "d-9", "prescriberNpi": "1003000126"})

    assert bad_npi.status_code == 422
    assert bad_npi.json()["reasons"] == ["npi-invalid", "knowledge-assessment-not-passed"]
    assert orphan.json()["reasons"] == ["prescriber-not-certified"]


def test_admin_token_guards_admin_endpoints_only(db_path: Path) -> None:
    clock = FakeClock()
    with BackgroundServer(make_app(db_path, clock=clock, admin_token="s3cret")) as url:
        rems = RemsClient(url, clock)
        body = {"pharmacyId": "p", "setting": "outpatient"}
        refused = rems.post("/admin/pharmacies", body)
        rems.session.headers["Authorization"] = "Bearer s3cret"
        accepted = rems.post("/admin/pharmacies", body)

        assert refused.status_code == 401
        assert refused.json()["reasons"] == ["admin-token-required"]
        assert accepted.status_code == 201
        assert rems.get("/health").status_code == 200


def test_an_unseeded_service_answers_not_certified(db_path: Path) -> None:
    clock = FakeClock()
    with BackgroundServer(make_app(db_path, clock=clock)) as url:
        rems = RemsClient(url, clock)
        response = rems.post("/patients/enrollments", _enrollment(clock))

        assert response.json()["reasons"] == ["prescriber-not-certified"]


def _enrollment(clock: FakeClock) -> dict[str, object]:
    return enrollment_body(clock.now)


def test_toml_seed_is_accepted(tmp_path: Path, db_path: Path) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(
        '[[prescribers]]\nnpi = "1234567893"\n'
        'knowledgeAssessment = { passed = true, completedOn = "2021-11-01" }\n'
        '[[pharmacies]]\npharmacyId = "p-1"\nsetting = "outpatient"\n',
        encoding="utf-8",
    )
    clock = FakeClock()
    with BackgroundServer(make_app(db_path, seed, clock=clock)) as url:
        rems = RemsClient(url, clock)
        rems_id = rems.enroll()

        assert rems.rda(rems_id, pharmacyId="p-1")["granted"] is True


def test_a_refused_seed_entry_names_file_and_entry_and_leaves_nothing(
    tmp_path: Path, db_path: Path
) -> None:
    document = seed_document()
    document["prescribers"][1]["npi"] = "1234567890"
    seed = tmp_path / "bad-seed.json"
    seed.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(SeedError, match=r"bad-seed\.json: prescribers\[1\] refused: npi-invalid"):
        make_app(db_path, seed, clock=FakeClock())

    clock = FakeClock()
    with BackgroundServer(make_app(db_path, clock=clock)) as url:
        response = RemsClient(url, clock).post("/patients/enrollments", _enrollment(clock))
        assert response.json()["reasons"] == ["prescriber-not-certified"]


def test_a_seed_that_breaks_the_schema_is_refused(tmp_path: Path, db_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"pharmacies": [{"pharmacyId": "p"}]}), encoding="utf-8")

    with pytest.raises(SeedError, match=r"seed\.json: does not match seed\.schema\.json"):
        make_app(db_path, seed, clock=FakeClock())


def test_the_shipped_example_seed_loads(db_path: Path) -> None:
    example = Path(__file__).parents[2] / "profiles" / "rems" / "seed.example.json"
    clock = FakeClock()
    with BackgroundServer(make_app(db_path, example, clock=clock)) as url:
        rems = RemsClient(url, clock)
        rems_id = rems.enroll()

        dual = rems.rda(rems_id, pharmacyId="hospital-1", setting="discharge", daysSupply=28)
        assert dual["granted"] is True
