"""Bad input through batch mode: every resource is decided or reported (file and line, FHIR
path), one bad resource costs one finding, and nothing crashes (issue: bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter.batch import sources
from adapter.cli import main
from tests.test_batch_inputs import _anc, _dispense

AS_OF = "2026-02-10T12:00:00Z"


def _good(patient: str = "good") -> list[dict]:
    ref = f"Patient/{patient}"
    return [
        _anc(f"{patient}-anc", ref, "2026-02-09T08:00:00Z", 1.2),
        _dispense(f"{patient}-d1", ref, "completed", "2026-01-05T10:00:00Z", days=35),
        _dispense(f"{patient}-d2", ref, "preparation", "2026-02-10T09:00:00Z"),
    ]


def _run(tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    out = tmp_path / "out"
    code = main(["run", "--source", str(source), "--out", str(out), "--as-of", AS_OF])
    assert code == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    files = {
        name: [json.loads(line) for line in (out / name).read_text().splitlines()]
        for name in ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson")
    }
    return files, err


def _ndjson(path: Path, resources: list[object], raw: list[bytes] = ()) -> Path:
    lines = [json.dumps(r).encode() for r in resources] + list(raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _codes(files: dict, patient: str) -> list[str]:
    return sorted(
        i["code"]["coding"][-1]["code"]
        for i in files["DetectedIssue.ndjson"]
        if i["patient"]["reference"] == f"Patient/{patient}"
    )


def _baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    files, _ = _run(tmp_path / "base", _ndjson(tmp_path / "base.ndjson", _good()), capsys)
    return _codes(files, "good")


BAD_DISPENSES = [
    ({"value": 1e9}, "MedicationDispense.daysSupply.value: must be at most 366"),
    ({"value": "1e999999"}, "MedicationDispense.daysSupply.value: out of range"),
    ({"value": 10**30}, "MedicationDispense.daysSupply.value: out of range"),
    ({"value": -1}, "MedicationDispense.daysSupply.value: must be at least 0"),
    ({"value": [7]}, "MedicationDispense.daysSupply.value: expected a number, got a list"),
    ("7", "MedicationDispense.daysSupply: expected a Quantity"),
]


@pytest.mark.parametrize(("days", "message"), BAD_DISPENSES)
def test_absurd_days_supply_is_reported_and_the_rest_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: object, message: str
) -> None:
    expected = _baseline(tmp_path, capsys)
    bad = _dispense("bad-d", "Patient/bad", "completed", "2026-01-05T10:00:00Z")
    bad["daysSupply"] = days
    source = _ndjson(tmp_path / "in.ndjson", [*_good(), bad])
    files, err = _run(tmp_path, source, capsys)
    assert f"in.ndjson:4: MedicationDispense: {message}" in err
    assert _codes(files, "good") == expected


@pytest.mark.parametrize("version", ["9" * 5000, "\u00b2", "\u0663", "-1", " 2", ""])
def test_a_version_id_that_is_not_a_count_is_opaque(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    # Found by the 100,000-case fuzz run: a 5,000-digit versionId was an internal error (exit 1).
    expected = _baseline(tmp_path, capsys)
    resources = _good()
    for resource in resources:
        resource["meta"] = {"versionId": version, "lastUpdated": "2026-02-09T09:00:00Z"}
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", resources), capsys)
    assert "internal error" not in err
    assert _codes(files, "good") == expected


def test_a_deeply_nested_meta_value_is_no_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by the fuzz run: str() of a versionId nested 1,000 deep was a RecursionError (exit 1).
    expected = _baseline(tmp_path, capsys)
    bad = _dispense("bad-d", "Patient/bad", "completed", "2026-01-05T10:00:00Z")
    bad["meta"] = {"versionId": "DEEP"}
    line = json.dumps(bad).replace('"DEEP"', "[" * 1000 + "1" + "]" * 1000).encode()
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", _good(), [line]), capsys)
    assert "internal error" not in err
    assert _codes(files, "good") == expected


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "2016-12-31T23:59:60Z",
        "2026-02-30",
        "2026-02",
        {"start": "2026"},
        ["2026-02-09"],
    ],
)
def test_an_anc_that_cannot_be_read_is_reported_and_unevaluable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], when: object
) -> None:
    expected = _baseline(tmp_path, capsys)
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 1.0)
    bad["effectiveDateTime"] = when
    source = _ndjson(tmp_path / "in.ndjson", [*_good(), bad])
    files, err = _run(tmp_path, source, capsys)
    assert "in.ndjson:4: Observation: Observation.effectiveDateTime:" in err
    assert _codes(files, "bad") == ["anc-unevaluable"]
    assert _codes(files, "good") == expected


@pytest.mark.parametrize(
    ("element", "value", "path"),
    [
        ("identifier", "abc", "Observation.identifier: expected a list"),
        ("extension", {"url": 1}, "Observation.extension: expected a list"),
        ("valueQuantity", {"value": "1e999999", "code": "10*3/uL"}, "valueQuantity.value"),
        ("valueQuantity", {"value": float("inf")}, "valueQuantity.value"),
        ("valueQuantity", "1.2", "Observation.valueQuantity: expected a Quantity"),
        ("status", {"code": "final"}, "Observation.status: expected a code"),
        ("meta", {"versionId": [1]}, "Observation.meta.versionId: expected a string"),
    ],
)
def test_wrong_types_in_an_anc_are_reported_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], element: str, value: object, path: str
) -> None:
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 1.0)
    bad[element] = value
    text = json.dumps(bad, allow_nan=True).replace("Infinity", "1e999")
    source = _ndjson(tmp_path / "in.ndjson", _good(), [text.encode()])
    files, err = _run(tmp_path, source, capsys)
    assert "in.ndjson:4" in err
    if "1e999" not in text:  # orjson itself refuses an infinite number: not valid JSON
        assert path in err
        assert _codes(files, "bad") == ["anc-unevaluable"]
    assert _codes(files, "good")


def test_a_code_that_is_not_a_string_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 1.0)
    bad["code"]["coding"].insert(0, {"system": "http://loinc.org", "code": {"x": 1}})
    source = _ndjson(tmp_path / "in.ndjson", [*_good(), bad])
    _, err = _run(tmp_path, source, capsys)
    assert "in.ndjson:4: Observation: Observation.code.coding[0].code: expected a string" in err


@pytest.mark.parametrize(("rid", "message"), [(7, "expected a string, got a int"), ("", "missing")])
def test_an_id_that_is_not_a_string_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rid: object, message: str
) -> None:
    # Found by the bad-input audit: a number was reported as a "missing" id.
    bad = _dispense("x", "Patient/bad", "preparation", "2026-02-10T09:00:00Z")
    bad["id"] = rid
    _, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), bad]), capsys)
    assert f"in.ndjson:4: MedicationDispense: MedicationDispense.id: {message}" in err


def test_deep_nesting_at_the_parser_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _baseline(tmp_path, capsys)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}},
            *[{"resource": r} for r in _good()],
            {"resource": {**_anc("deep", "Patient/deep", "2026-02-09T08:00:00Z", 1), "note": 0}},
        ],
    }
    # 1024 levels in all: the deepest the JSON parser accepts (written by hand: the standard
    # library's encoder would itself run out of stack).
    text = json.dumps(bundle).replace(
        '"note": 0', '"note": ' + "[" * 1016 + '{"reference": "urn:uuid:p"}' + "]" * 1016
    )
    source = tmp_path / "in.json"
    source.write_text(text)
    files, _ = _run(tmp_path, source, capsys)
    assert _codes(files, "good") == expected


def test_a_bundle_inside_a_bundle_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _baseline(tmp_path, capsys)
    inner = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in _good()],
    }
    outer = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": inner}]}
    source = tmp_path / "in.json"
    source.write_text(json.dumps(outer))
    files, _ = _run(tmp_path, source, capsys)
    assert _codes(files, "good") == expected


def test_bundles_nested_too_deep_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node: dict = {"resourceType": "Bundle", "entry": [{"resource": r} for r in _good()]}
    for _ in range(5):
        node = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": node}]}
    source = tmp_path / "in.json"
    source.write_text(json.dumps(node))
    _, err = _run(tmp_path, source, capsys)
    assert "a Bundle nested deeper than 4 levels" in err
    assert "#Bundle.entry[0].resource.entry[0].resource.entry[0].resource.entry[0]" in err


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("suffix", [".ndjson", ".json"])
def test_byte_order_marks_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], codec: str, suffix: str
) -> None:
    expected = _baseline(tmp_path, capsys)
    if suffix == ".ndjson":
        text = "\n".join(json.dumps(r) for r in _good()) + "\n"
    else:
        text = json.dumps({"resourceType": "Bundle", "entry": [{"resource": r} for r in _good()]})
    source = tmp_path / f"in{suffix}"
    source.write_bytes(text.encode(codec))
    files, err = _run(tmp_path, source, capsys)
    assert "input problem" not in err
    assert _codes(files, "good") == expected


@pytest.mark.parametrize("mark", [b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"])
@pytest.mark.parametrize("suffix", [".ndjson", ".json"])
def test_a_stray_wide_mark_on_a_utf8_file_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mark: bytes, suffix: str
) -> None:
    # Found by the fuzz run: a UTF-16 mark in front of a UTF-8 file made the whole file unreadable.
    expected = _baseline(tmp_path, capsys)
    if suffix == ".ndjson":
        text = "\n".join(json.dumps(r) for r in _good()) + "\n"
    else:
        text = json.dumps({"resourceType": "Bundle", "entry": [{"resource": r} for r in _good()]})
    source = tmp_path / f"in{suffix}"
    source.write_bytes(mark + text.encode())
    files, err = _run(tmp_path, source, capsys)
    assert f"in{suffix}:1: a UTF-16/32" in err
    assert "byte order mark on a UTF-8 file: read as UTF-8" in err
    assert _codes(files, "good") == expected


def test_invalid_utf8_and_truncation_cost_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _baseline(tmp_path, capsys)
    bad = json.dumps(_anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 1.0)).encode()
    source = _ndjson(
        tmp_path / "in.ndjson", _good(), [bad[:40] + b"\xff\xfe" + bad[40:], bad[: len(bad) // 2]]
    )
    files, err = _run(tmp_path, source, capsys)
    assert "in.ndjson:4: not valid JSON" in err
    assert "in.ndjson:5: not valid JSON" in err
    assert _codes(files, "good") == expected


def test_one_of_our_issues_nested_too_deep_is_reported_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _run(tmp_path / "first", _ndjson(tmp_path / "a.ndjson", _good()), capsys)
    issue = first["DetectedIssue.ndjson"][0]
    text = json.dumps({**issue, "note": 0}).replace(
        '"note": 0', '"note": ' + "[" * 1000 + "1" + "]" * 1000
    )
    withdrawn = [r for r in _good() if r["resourceType"] != "Observation"]  # the ANC is gone
    source = _ndjson(tmp_path / "b.ndjson", withdrawn, [text.encode()])
    _, err = _run(tmp_path, source, capsys)
    assert "b.ndjson:3: DetectedIssue: DetectedIssue.*: nested deeper than 64 levels" in err


@pytest.mark.parametrize("suffix", [".ndjson", ".json", "streamed.json"])
@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("0.99999999999999999999", "anc-moderate-neutropenia"),  # a float would say 1.0: mild
        ("1.49999999999999999999", "anc-mild-neutropenia"),  # a float would say 1.5: normal
        ("0.999", "anc-moderate-neutropenia"),
        ("1.0000000000000000000000", "anc-mild-neutropenia"),  # many digits, the same value
    ],
)
def test_long_decimals_are_categorised_unrounded(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    written: str,
    expected: str,
    suffix: str,
) -> None:
    # clinical-rules s.1: no value is rounded before it is categorised; JSON floats hold only
    # 15-17 significant digits, so such numbers are read exactly.
    resources = _good()
    resources[0]["valueQuantity"]["value"] = "VALUE"
    texts = [json.dumps(r).replace('"VALUE"', written) for r in resources]
    if suffix == ".ndjson":
        data = "\n".join(texts) + "\n"
    else:
        data = (
            '{"resourceType":"Bundle","type":"collection","entry":['
            + ",".join('{"resource":' + text + "}" for text in texts)
            + "]}"
        )
    source = tmp_path / f"in{suffix}"
    source.write_text(data)
    if suffix.startswith("streamed"):  # as a Bundle too large to load whole is read
        monkeypatch.setattr(sources, "STREAM_BYTES", 0)
        assert sources.streamed(source)
    files, _ = _run(tmp_path, source, capsys)
    codes = _codes(files, "good")
    assert expected in codes
    assert [c for c in codes if c.startswith("anc-") and c != expected] == []


@pytest.mark.parametrize(
    ("element", "value", "reason"),
    [
        ("status", 3, "Observation.status: expected a code"),
        ("valueQuantity", "1.0", "Observation.valueQuantity: expected a Quantity"),
        ("effectiveDateTime", "2026-13-45", "Observation.effectiveDateTime: not a FHIR dateTime"),
    ],
)
def test_an_unreadable_anc_says_why_in_its_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], element: str, value: object, reason: str
) -> None:
    # Found by the bad-input audit: the finding said "no collection time" whatever was wrong.
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 1.0)
    bad[element] = value
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), bad]), capsys)
    assert f"in.ndjson:4: Observation: {reason}" in err
    (issue,) = [
        i for i in files["DetectedIssue.ndjson"] if i["patient"]["reference"] == "Patient/bad"
    ]
    assert issue["code"]["coding"][-1]["code"] == "anc-unevaluable"
    assert reason in issue["detail"]
    assert "no collection time" not in issue["detail"]
    assert _codes(files, "good")


def test_an_unreadable_anc_collected_after_the_clock_is_reported_not_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # interfaces.md s.3: resources collected after --as-of are ignored, readable or not.
    bad = _anc("bad-anc", "Patient/bad", "2026-03-09T08:00:00Z", 1.0)
    bad["status"] = 3
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), bad]), capsys)
    assert "in.ndjson:4: Observation: Observation.status: expected a code" in err
    assert _codes(files, "bad") == []


@pytest.mark.parametrize("name", ["Observation.ndjson.gz", "in.json.gz", "in.jsonl.gz"])
def test_compressed_files_are_reported_never_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    # Found by the bad-input audit: a folder of .ndjson.gz files was read as empty (exit 0,
    # nothing said), and one named directly was "not valid JSON".
    import gzip

    expected = _baseline(tmp_path, capsys)
    folder = tmp_path / "export"
    folder.mkdir()
    _ndjson(folder / "good.ndjson", _good())
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 0.2)
    (folder / name).write_bytes(gzip.compress(json.dumps(bad).encode() + b"\n"))
    for source in (folder, folder / name):
        files, err = _run(tmp_path, source, capsys)
        assert f"{folder / name}:1: compressed (gzip): not read; decompress it" in err
        assert "not valid JSON" not in err
    files, _ = _run(tmp_path, folder, capsys)
    assert _codes(files, "good") == expected


def test_a_folder_that_cannot_be_listed_is_unreadable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the bad-input audit: a sub-folder without read permission was passed over, and
    # the run reported itself complete. (Simulated: permissions do not bind root.)
    import os

    folder = tmp_path / "export"
    (folder / "locked").mkdir(parents=True)
    _ndjson(folder / "good.ndjson", _good())
    _ndjson(folder / "locked" / "more.ndjson", _good("more"))
    real = os.scandir

    def scandir(path: object = ".") -> object:
        if str(path) == str(folder / "locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    code = main(["run", "--source", str(folder), "--out", str(tmp_path / "o"), "--as-of", AS_OF])
    err = capsys.readouterr().err
    assert code == 4
    assert f"cannot read input: {folder / 'locked'}: Permission denied" in err
    assert "Traceback" not in err


def test_a_source_that_is_not_a_regular_file_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    fifo = tmp_path / "in.ndjson"
    os.mkfifo(fifo)
    code = main(["run", "--source", str(fifo), "--out", str(tmp_path / "o"), "--as-of", AS_OF])
    assert code == 4
    assert f"{fifo}: not a regular file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", "streamed.json"])
@pytest.mark.parametrize(("nested", "valid"), [(1020, True), (1021, False)])
def test_a_bundle_nested_deeper_than_json_allows_is_refused_whole_and_in_bounded_memory(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    nested: int,
    valid: bool,
) -> None:
    # Found by the bad-input audit: 70 MB of "[" in a streamed Bundle grew ijson's prefixes to
    # 24 GB. Beyond 1024 levels (the Bundle, entry, the entry and resource: 4 before the note)
    # the file is not valid JSON however it is read, loaded whole or streamed.
    resources = _good()
    resources[0]["note"] = "NOTE"
    texts = [json.dumps(r).replace('"NOTE"', "[" * nested + "]" * nested) for r in resources]
    source = tmp_path / f"in{suffix}"
    source.write_text(
        '{"resourceType":"Bundle","type":"collection","entry":['
        + ",".join('{"resource":' + text + "}" for text in texts)
        + "]}"
    )
    if suffix.startswith("streamed"):
        monkeypatch.setattr(sources, "STREAM_BYTES", 0)
        assert sources.streamed(source)
    files, err = _run(tmp_path, source, capsys)
    assert ("not valid JSON" in err) is not valid
    assert bool(_codes(files, "good")) is valid


_DEEP_IN_A_CAGE = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression fails, not the machine
from adapter.batch.sources import _streamed
problems = []
list(_streamed(Path(sys.argv[1]), problems, 0))
print([p.message for p in problems])
"""


def test_a_streamed_bundle_of_brackets_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # The audit's case: a Bundle whose entry is megabytes of "[" took 24 GB (ijson built a
    # whole buffer of events, prefixes growing with the depth, before the first was checked).
    import subprocess
    import sys

    source = tmp_path / "deep.json"
    source.write_text('{"resourceType":"Bundle","entry":[' + "[" * 2_000_000)
    done = subprocess.run(
        [sys.executable, "-c", _DEEP_IN_A_CAGE, str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "['not valid JSON']"


DISPENSE = "http://terminology.hl7.org/fhir/CodeSystem/medicationdispense-category"


def _decided(files: dict, dispense: str) -> tuple[dict, str]:
    """The authorization of a dispense and its DetectedIssue's detail."""
    (authorization,) = (a for a in files["authorizations.ndjson"] if a["dispense"] == dispense)
    (detail,) = (
        i["detail"]
        for i in files["DetectedIssue.ndjson"]
        if any(r.get("reference") == dispense for r in i.get("implicated", []))
    )
    return authorization, detail


@pytest.mark.parametrize(
    ("value", "reported", "path"),
    [
        (
            "inpatient",
            "MedicationDispense.category: expected a CodeableConcept",
            "MedicationDispense.category",
        ),
        (
            {"coding": {"code": "inpatient"}},
            "MedicationDispense.category.coding: expected a list",
            "MedicationDispense.category.coding",
        ),
    ],
)
def test_a_pending_dispense_with_an_unreadable_category_is_decided_at_the_strictest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object, reported: str, path: str
) -> None:
    # Found by the bad-input audit: read as no coding, the category passed for the default
    # (outpatient: no supply limit) in silence; dropped instead, the dispense would await a
    # decision nobody is told of. It is held to the inpatient limit, reported, and says so.
    bad = _good("bad")
    bad[2]["category"] = value
    bad[2]["daysSupply"] = {"value": 30}  # allowed inpatient, too long for an outpatient
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), *bad]), capsys)
    assert f"in.ndjson:6: MedicationDispense: {reported}" in err
    authorization, detail = _decided(files, "MedicationDispense/bad-d2")
    assert (authorization["outcome"], authorization["reasons"]) == (
        "not-authorized",
        ["supply-exceeds-limit"],
    )
    assert detail.startswith("A 30-day clozapine supply of unknown setting")
    assert "(at most 7 days under" in detail
    assert detail.endswith(f"Not readable in the dispense, so taken at the strictest: {path}.")
    assert _codes(files, "good") == _baseline(tmp_path, capsys)


@pytest.mark.parametrize(
    ("element", "value", "path"),
    [
        ("daysSupply", {"value": "seven"}, "MedicationDispense.daysSupply.value"),
        ("daysSupply", "7", "MedicationDispense.daysSupply"),
        ("whenPrepared", "yesterday", "MedicationDispense.whenPrepared"),
        ("performer", {"actor": {"reference": "Organization/p"}}, "MedicationDispense.performer"),
        (
            "authorizingPrescription",
            "MedicationRequest/1",
            "MedicationDispense.authorizingPrescription",
        ),
        ("meta", {"versionId": 3}, "MedicationDispense.meta.versionId"),
    ],
)
def test_a_pending_dispense_with_an_unreadable_element_is_still_decided_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], element: str, value: object, path: str
) -> None:
    bad = _good("bad")
    bad[2][element] = value
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), *bad]), capsys)
    assert f"in.ndjson:6: MedicationDispense: {path}" in err
    authorization, detail = _decided(files, "MedicationDispense/bad-d2")
    assert detail.endswith(f"taken at the strictest: {path}.")
    # Each reads as absent: an outpatient supply of unknown length has no limit to break.
    assert (authorization["outcome"], authorization["reasons"]) == ("authorized", [])


def test_an_inpatient_dispense_of_unreadable_length_is_not_authorized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _good("bad")
    bad[2]["category"] = {"coding": [{"system": DISPENSE, "code": "inpatient"}]}
    bad[2]["daysSupply"] = {"value": "seven"}
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), *bad]), capsys)
    assert "in.ndjson:6: MedicationDispense: MedicationDispense.daysSupply.value" in err
    authorization, detail = _decided(files, "MedicationDispense/bad-d2")
    assert (authorization["outcome"], authorization["reasons"]) == (
        "not-authorized",
        ["supply-exceeds-limit"],
    )
    assert detail.startswith("Inpatient clozapine supply (MedicationDispense/bad-d2) is NOT")


def test_a_dispense_whose_medication_cannot_be_read_is_reported_not_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Read as no coding, a clozapine dispense passed for another drug, unreported. Whether it
    # is clozapine at all is unknown: reported with its path, no decision made up.
    bad = _good("bad")
    bad[2]["medicationCodeableConcept"] = "clozapine"
    files, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), *bad]), capsys)
    reported = "MedicationDispense.medicationCodeableConcept: expected a CodeableConcept"
    assert f"in.ndjson:6: MedicationDispense: {reported}" in err
    assert [a for a in files["authorizations.ndjson"] if a["patient"] == "Patient/bad"] == []
    assert _codes(files, "good") == _baseline(tmp_path, capsys)


def test_a_category_given_as_a_list_of_concepts_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # R5's shape (0..* CodeableConcept) for R4's one: read, never taken as "no category".
    resources = _good()
    resources[2]["daysSupply"] = {"value": 30}
    resources[2]["category"] = [{"coding": [{"system": DISPENSE, "code": "discharge"}]}]
    files, _ = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", resources), capsys)
    (decision,) = files["authorizations.ndjson"]
    assert decision["setting"] == "discharge"
    assert "supply-exceeds-limit" in decision["reasons"]


def test_an_anc_code_whose_coding_is_not_a_list_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _anc("bad-anc", "Patient/bad", "2026-02-09T08:00:00Z", 0.3)
    bad["code"] = {"coding": {"system": "http://loinc.org", "code": "751-8"}}
    _, err = _run(tmp_path, _ndjson(tmp_path / "in.ndjson", [*_good(), bad]), capsys)
    assert "in.ndjson:4: Observation: Observation.code.coding: expected a list" in err
