"""Builders for FHIR R4 test inputs and a black-box runner for `rems-adapter run`.

Everything here is written from the specification (shared/spec/clinical-rules.md and
interfaces.md), not from the implementation: the scenario suite is an independent reading of
the spec. Resources are plain dicts in FHIR JSON (camelCase) so that the tests exercise the
adapter's own parsing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---- Fixed project constants (BRIEF.md) ------------------------------------------------------
FINDING_SYSTEM = "https://rems-adapter.github.io/fhir/CodeSystem/finding"
DECISION_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/decision"
V3_ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
AUTHOR_DEVICE = "Device/rems-adapter"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CLOZAPINE_RXCUI = "2626"
DISPENSE_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/medicationdispense-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

BEN = "benign-ethnic-neutropenia"
HOSPICE = "hospice"

PRESCRIBER = "prescriber-1"
PHARMACIST = "pharmacist-1"

Resource = dict[str, Any]

# Severity of each finding code, interfaces.md section 2 (table).
FINDING_SEVERITY = {
    "anc-mild-neutropenia": "moderate",
    "anc-moderate-neutropenia": "high",
    "anc-ben-neutropenia": "moderate",
    "anc-severe-neutropenia": "high",
    "anc-monitoring-overdue": "moderate",
    "anc-unevaluable": "moderate",
    "dispense-authorized": "low",
    "dispense-authorized-override": "low",
    "dispense-not-authorized": "high",
    "dispense-authorization-pending": "moderate",
    "psf-prescriber-action-required": "moderate",
    "psf-rejected": "moderate",
}
ANC_FINDINGS = {c for c in FINDING_SEVERITY if c.startswith("anc-")}
DISPENSE_FINDINGS = {c for c in FINDING_SEVERITY if c.startswith("dispense-")}
OUTPUT_FILES = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")


# ---- Time helpers ------------------------------------------------------------------------------
def when(value: str, default_time: str = "08:00:00") -> str:
    """'2026-02-10' -> '2026-02-10T08:00:00Z'; a full dateTime is returned unchanged."""
    return value if "T" in value else f"{value}T{default_time}Z"


def as_of(value: str) -> str:
    """The evaluation clock for a day: 20:00 UTC that day (after the 08:00 collections)."""
    return when(value, "20:00:00")


def parse_instant(value: str) -> dt.datetime:
    """Parse a FHIR dateTime with an offset (Z or +hh:mm) into an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"expected a dateTime with an offset, got {value!r}"
    return parsed


def day(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def add_days(value: str, days: int) -> str:
    return (day(value[:10]) + dt.timedelta(days=days)).isoformat()


def add_months(value: str, months: int) -> str:
    """Calendar months, clamped to the end of a shorter month (Jan 31 + 1 month = Feb 28)."""
    d = day(value[:10])
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (following - dt.timedelta(days=1)).day
    return dt.date(year, month, min(d.day, last_day)).isoformat()


# ---- Resource builders -------------------------------------------------------------------------
def patient(pid: str) -> Resource:
    return {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
        "name": [{"family": f"Test-{pid}", "given": ["Scenario"]}],
        "gender": "unknown",
        "birthDate": "1980-01-01",
    }


def practitioner(prid: str = PRESCRIBER) -> Resource:
    return {"resourceType": "Practitioner", "id": prid, "name": [{"family": prid}]}


def quantity(
    value: float | int | str,
    code: str | None = "/uL",
    unit: str | None = None,
    system: str | None = UCUM,
) -> dict[str, Any]:
    """A valueQuantity. With `code`, the UCUM system and code are set (unit text defaults to the
    code); with code=None only the free-text `unit` is sent, as many real feeds do."""
    q: dict[str, Any] = {"value": value}
    if unit is not None or code is not None:
        q["unit"] = unit if unit is not None else code
    if code is not None:
        if system is not None:
            q["system"] = system
        q["code"] = code
    return q


def observation(
    pid: str,
    oid: str,
    loinc: str,
    collected: str | None,
    value_quantity: dict[str, Any] | None,
    *,
    status: str = "final",
    version: str = "1",
    issued: str | None = None,
    last_updated: str | None = None,
    specimen: str | None = None,
    period: bool = False,
    extra: dict[str, Any] | None = None,
) -> Resource:
    obs: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "meta": {
            "versionId": version,
            "lastUpdated": last_updated or when(collected or "2024-01-01", "12:00:00"),
        },
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if collected is not None:
        if period:
            obs["effectivePeriod"] = {"start": when(collected), "end": when(collected, "08:05:00")}
        else:
            obs["effectiveDateTime"] = when(collected)
    obs["issued"] = issued or when(collected or "2024-01-01", "12:00:00")
    if value_quantity is not None:
        obs["valueQuantity"] = value_quantity
    if specimen is not None:
        obs["specimen"] = {"reference": f"Specimen/{specimen}"}
    if extra:
        obs.update(extra)
    return obs


def anc(
    pid: str,
    collected: str,
    value: float | int | str,
    *,
    oid: str | None = None,
    code: str | None = "/uL",
    unit: str | None = None,
    loinc: str = "751-8",
    **kwargs: Any,
) -> Resource:
    """An ANC Observation (default LOINC 751-8, cells/uL as UCUM '/uL')."""
    oid = oid or f"{pid}-anc-{collected[:10]}"
    return observation(pid, oid, loinc, collected, quantity(value, code, unit), **kwargs)


def wbc(
    pid: str,
    collected: str,
    value_thousands: float,
    *,
    oid: str | None = None,
    loinc: str = "6690-2",
    **kwargs: Any,
) -> Resource:
    oid = oid or f"{pid}-wbc-{collected[:10]}"
    return observation(pid, oid, loinc, collected, quantity(value_thousands, "10*3/uL"), **kwargs)


def percent(
    pid: str, collected: str, value: float, *, loinc: str, oid: str | None = None, **kwargs: Any
) -> Resource:
    """A neutrophil % (770-8 ...) or band % (764-1 ...) observation."""
    oid = oid or f"{pid}-pct-{loinc}-{collected[:10]}"
    return observation(pid, oid, loinc, collected, quantity(value, "%"), **kwargs)


def _clozapine() -> dict[str, Any]:
    return {
        "coding": [{"system": RXNORM, "code": CLOZAPINE_RXCUI, "display": "clozapine"}],
        "text": "clozapine",
    }


def _category(category: str | None, system: str) -> list[dict[str, Any]] | None:
    if category is None:
        return None
    return [{"coding": [{"system": system, "code": category}]}]


def completed_dispense(
    pid: str,
    handed_over: str,
    days_supply: int = 28,
    *,
    did: str | None = None,
    category: str | None = None,
    category_system: str = DISPENSE_CATEGORY_SYSTEM,
) -> Resource:
    did = did or f"{pid}-disp-{handed_over[:10]}"
    res: Resource = {
        "resourceType": "MedicationDispense",
        "id": did,
        "meta": {"versionId": "1", "lastUpdated": when(handed_over, "10:00:00")},
        "status": "completed",
        "medicationCodeableConcept": _clozapine(),
        "subject": {"reference": f"Patient/{pid}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{pid}-rx"}],
        "quantity": {"value": days_supply * 4, "unit": "tablet"},
        "daysSupply": {"value": days_supply, "unit": "d", "system": UCUM, "code": "d"},
        "whenPrepared": when(handed_over, "09:00:00"),
        "whenHandedOver": when(handed_over, "10:00:00"),
    }
    cat = _category(category, category_system)
    if cat:
        res["category"] = cat[0]
    return res


def pending_dispense(
    pid: str,
    prepared: str,
    days_supply: int = 28,
    *,
    did: str | None = None,
    status: str = "preparation",
    category: str | None = None,
    category_system: str = DISPENSE_CATEGORY_SYSTEM,
) -> Resource:
    """A clozapine dispense awaiting a decision (status preparation / in-progress)."""
    did = did or f"{pid}-pend-{prepared[:10]}"
    res: Resource = {
        "resourceType": "MedicationDispense",
        "id": did,
        "meta": {"versionId": "1", "lastUpdated": when(prepared, "09:00:00")},
        "status": status,
        "medicationCodeableConcept": _clozapine(),
        "subject": {"reference": f"Patient/{pid}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{pid}-rx"}],
        "quantity": {"value": days_supply * 4, "unit": "tablet"},
        "daysSupply": {"value": days_supply, "unit": "d", "system": UCUM, "code": "d"},
        "whenPrepared": when(prepared, "09:00:00"),
    }
    cat = _category(category, category_system)
    if cat:
        res["category"] = cat[0]
    return res


def medication_request(
    pid: str, authored: str, *, rid: str | None = None, prescriber: str = PRESCRIBER
) -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": rid or f"{pid}-rx",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": _clozapine(),
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": when(authored, "07:00:00"),
        "requester": {"reference": f"Practitioner/{prescriber}"},
    }


def designation(
    pid: str,
    code: str,
    *,
    kind: str = "Condition",
    active: bool = True,
    system: str | None = None,
    recorded: str = "2024-01-01",
) -> Resource:
    """A BEN / hospice designation as a Condition (clinicalStatus) or Flag (status)."""
    coding: dict[str, Any] = {"code": code}
    if system is not None:
        coding["system"] = system
    rid = f"{pid}-{kind.lower()}-{code}"
    if kind == "Condition":
        return {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": {
                "coding": [
                    {"system": CONDITION_CLINICAL, "code": "active" if active else "resolved"}
                ]
            },
            "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": when(recorded),
            "recorder": {"reference": f"Practitioner/{PRESCRIBER}"},
        }
    assert kind == "Flag", kind
    return {
        "resourceType": "Flag",
        "id": rid,
        "status": "active" if active else "inactive",
        "code": {"coding": [coding]},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": when(recorded)},
        "author": {"reference": f"Practitioner/{PRESCRIBER}"},
    }


def supplies(
    pid: str, start: str, until: str, every_days: int = 28, days_supply: int = 28, **kwargs: Any
) -> list[Resource]:
    """Completed clozapine supplies from `start` every `every_days` days while <= `until`:
    continuous coverage when every_days <= days_supply."""
    out = []
    d = day(start)
    while d <= day(until[:10]):
        out.append(completed_dispense(pid, d.isoformat(), days_supply, **kwargs))
        d += dt.timedelta(days=every_days)
    return out


def on_clozapine(
    pid: str,
    start: str,
    until: str,
    *,
    baseline: float | None = 2000,
    designations: Sequence[str] = (),
) -> list[Resource]:
    """A patient on clozapine since `start` with continuous supply up to `until`, a prescriber,
    a MedicationRequest and (by default) a normal baseline ANC two days before start."""
    res: list[Resource] = [
        patient(pid),
        practitioner(PRESCRIBER),
        medication_request(pid, add_days(start, -3)),
    ]
    res += [designation(pid, code) for code in designations]
    if baseline is not None:
        res.append(anc(pid, add_days(start, -2), baseline))
    res += supplies(pid, start, until)
    return res


# ---- Mitigations (clinical-rules section 4) ----------------------------------------------------
def with_mitigation(
    issue: Resource,
    date: str,
    *,
    author: str,
    action: dict[str, Any],
    note: str = "Documented decision",
) -> Resource:
    """A copy of a DetectedIssue (normally one the adapter wrote) with a mitigation appended."""
    copy = json.loads(json.dumps(issue))
    copy.setdefault("mitigation", []).append(
        {"action": action, "date": when(date, "14:00:00"), "author": {"reference": author}}
    )
    copy.setdefault("meta", {})["versionId"] = "2"
    copy["meta"]["lastUpdated"] = when(date, "14:00:00")
    copy["detail"] = copy.get("detail", "") + f" Mitigation: {note}"
    return copy


def prescriber_rationale(issue: Resource, date: str, prescriber: str = PRESCRIBER) -> Resource:
    """Prescriber's rationale / rechallenge decision: a mitigation authored by the prescriber."""
    return with_mitigation(
        issue,
        date,
        author=f"Practitioner/{prescriber}",
        action={"text": "Prescriber: benefit outweighs risk, continue / rechallenge clozapine"},
        note="prescriber rationale",
    )


def pharmacist_override(issue: Resource, date: str, pharmacist: str = PHARMACIST) -> Resource:
    """Pharmacist's override: a mitigation with v3-ActCode EMAUTH."""
    return with_mitigation(
        issue,
        date,
        author=f"Practitioner/{pharmacist}",
        action={
            "coding": [
                {
                    "system": V3_ACTCODE,
                    "code": "EMAUTH",
                    "display": "emergency authorization override",
                }
            ]
        },
        note="pharmacist override",
    )


def prior_issue(
    pid: str,
    finding: str,
    evidence_obs: Iterable[str],
    identified: str,
    *,
    value: str = "prior-decision",
    implicated: Iterable[str] = (),
) -> Resource:
    """A hand-built DetectedIssue in the adapter's shape, for when a two-pass run is not used."""
    v3 = "NAT" if finding.startswith("dispense-") else "LAB"
    return {
        "resourceType": "DetectedIssue",
        "id": f"di-{value}",
        "meta": {"versionId": "1", "lastUpdated": when(identified, "12:00:00")},
        "identifier": [{"system": DECISION_ID_SYSTEM, "value": value}],
        "status": "final",
        "code": {
            "coding": [
                {"system": V3_ACTCODE, "code": v3},
                {"system": FINDING_SYSTEM, "code": finding},
            ]
        },
        "severity": FINDING_SEVERITY[finding],
        "patient": {"reference": f"Patient/{pid}"},
        "identifiedDateTime": when(identified, "12:00:00"),
        "author": {"reference": AUTHOR_DEVICE},
        "implicated": [{"reference": r} for r in implicated],
        "evidence": [{"detail": [{"reference": f"Observation/{o}"} for o in evidence_obs]}],
        "detail": f"prior {finding}",
    }


# ---- Reading outputs ---------------------------------------------------------------------------
def finding_code(issue: Resource) -> str | None:
    codes = [
        c.get("code")
        for c in issue.get("code", {}).get("coding", [])
        if c.get("system") == FINDING_SYSTEM
    ]
    assert len(codes) <= 1, f"DetectedIssue {issue.get('id')} has several finding codes {codes}"
    return codes[0] if codes else None


def refs(items: Iterable[dict[str, Any]] | None) -> list[str]:
    return [i.get("reference", "") for i in items or []]


def same_ref(ref: str, target: str) -> bool:
    """'Observation/x' matches 'Observation/x' and 'Observation/x/_history/2' (and full URLs)."""
    if ref == target or ref.endswith("/" + target):
        return True
    base = ref.split("/_history/")[0]
    return base == target or base.endswith("/" + target)


def evidence_refs(issue: Resource) -> list[str]:
    out: list[str] = []
    for ev in issue.get("evidence", []) or []:
        out += refs(ev.get("detail"))
    return out


def evidence_codes(issue: Resource) -> set[str]:
    out: set[str] = set()
    for ev in issue.get("evidence", []) or []:
        for cc in ev.get("code", []) or []:
            out |= {c["code"] for c in cc.get("coding", []) if c.get("system") == FINDING_SYSTEM}
    return out


def cites_rationale(decision: Resource, answered: Resource) -> bool:
    """CR 2.3 "the rationale is cited": the decision refers to the answered DetectedIssue (id or
    decision identifier), or names the mitigation's author and quotes its text. The spec does not
    fix the form, so either is accepted (SCENARIOS.md A15)."""
    text = json.dumps(decision)
    ids = [answered.get("id", "")] + [i.get("value", "") for i in answered.get("identifier", [])]
    if any(i and i in text for i in ids):
        return True
    last = answered["mitigation"][-1]
    said = last["action"].get("text") or ""
    return last["author"]["reference"] in text and bool(said) and said in decision.get("detail", "")


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    assert path.is_file(), f"expected output file {path}"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Result:
    exit_code: int
    out_dir: Path
    source: Path
    issues: list[Resource]
    status: list[dict[str, Any]]
    authorizations: list[dict[str, Any]]
    psf: list[dict[str, Any]]
    messages: str = ""
    raw: dict[str, bytes] = field(default_factory=dict)

    # -- status
    def status_for(self, pid: str) -> dict[str, Any]:
        rows = [s for s in self.status if s.get("patient") == f"Patient/{pid}"]
        assert len(rows) == 1, (
            f"expected exactly one status row for Patient/{pid}, got {len(rows)}; "
            f"patients with status: {[s.get('patient') for s in self.status]}"
        )
        return rows[0]

    def has_status(self, pid: str) -> bool:
        return any(s.get("patient") == f"Patient/{pid}" for s in self.status)

    # -- authorizations
    def authorization_for(self, did: str) -> dict[str, Any]:
        rows = [a for a in self.authorizations if a.get("dispense") == f"MedicationDispense/{did}"]
        assert len(rows) == 1, (
            f"expected exactly one authorization for MedicationDispense/{did}, got {len(rows)}: "
            f"{[a.get('dispense') for a in self.authorizations]}"
        )
        return rows[0]

    # -- DetectedIssues
    def issues_where(
        self,
        *,
        code: str | None = None,
        patient: str | None = None,
        status: str | None = "final",
        observation: str | None = None,
        dispense: str | None = None,
    ) -> list[Resource]:
        out = []
        for i in self.issues:
            if code is not None and finding_code(i) != code:
                continue
            if status is not None and i.get("status") != status:
                continue
            if patient is not None and not same_ref(
                i.get("patient", {}).get("reference", ""), f"Patient/{patient}"
            ):
                continue
            if observation is not None and not any(
                same_ref(r, f"Observation/{observation}") for r in evidence_refs(i)
            ):
                continue
            if dispense is not None and not any(
                same_ref(r, f"MedicationDispense/{dispense}") for r in refs(i.get("implicated"))
            ):
                continue
            out.append(i)
        return out

    def anc_findings(self, patient: str, status: str | None = "final") -> list[str]:
        """Finding codes of the ANC findings (anc-*) written for a patient, sorted."""
        return sorted(
            c
            for i in self.issues_where(patient=patient, status=status)
            if (c := finding_code(i)) in ANC_FINDINGS
        )

    def dispense_issue(self, did: str) -> Resource:
        rows = [i for i in self.issues_where(dispense=did) if finding_code(i) in DISPENSE_FINDINGS]
        assert len(rows) == 1, (
            f"expected one final dispense DetectedIssue implicating MedicationDispense/{did}, "
            f"got {[finding_code(i) for i in rows]}"
        )
        return rows[0]

    def identifier(self, issue: Resource) -> str:
        ids = [
            i["value"] for i in issue.get("identifier", []) if i.get("system") == DECISION_ID_SYSTEM
        ]
        assert len(ids) == 1, f"DetectedIssue without one decision identifier: {issue}"
        return ids[0]


_run_counter = itertools.count()


def write_source(directory: Path, resources: Sequence[Resource], fmt: str) -> Path:
    """Write resources as `ndjson` (one file), `bundle` (collection Bundle JSON), `folder`
    (one NDJSON file per resource type in a folder) or `shuffled` (ndjson, lines shuffled)."""
    directory.mkdir(parents=True, exist_ok=True)
    if fmt in ("ndjson", "shuffled"):
        items = list(resources)
        if fmt == "shuffled":
            random.Random(20260221).shuffle(items)
        path = directory / "input.ndjson"
        path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
        return path
    if fmt == "bundle":
        path = directory / "bundle.json"
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:uuid:{r['resourceType']}-{r.get('id', n)}", "resource": r}
                for n, r in enumerate(resources)
            ],
        }
        path.write_text(json.dumps(bundle, indent=1), encoding="utf-8")
        return path
    if fmt == "folder":
        folder = directory / "export"
        folder.mkdir()
        by_type: dict[str, list[Resource]] = {}
        for r in resources:
            by_type.setdefault(r["resourceType"], []).append(r)
        for rtype, items in by_type.items():
            (folder / f"{rtype}.ndjson").write_text(
                "".join(json.dumps(r) + "\n" for r in items), encoding="utf-8"
            )
        return folder
    raise ValueError(f"unknown source format {fmt!r}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def invoke(argv: list[str]) -> tuple[int, str]:
    """Call adapter.cli.main in-process; return (exit code, everything it printed or logged)."""
    from adapter.cli import main  # imported late: the suite is written before the CLI exists

    out, err, handler = io.StringIO(), io.StringIO(), _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse reports usage errors this way
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        root.removeHandler(handler)
    text = out.getvalue() + "\n" + err.getvalue() + "\n" + "\n".join(handler.lines)
    return (0 if code is None else int(code)), text


def run_batch(
    tmp_path: Path,
    resources: Sequence[Resource],
    as_of_time: str,
    *,
    fmt: str = "ndjson",
    out_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    expect_exit: int | None = 0,
) -> Result:
    """Write `resources`, run `rems-adapter run` on them as of `as_of_time`, load the outputs."""
    n = next(_run_counter)
    work = tmp_path / f"run-{n}"
    source = write_source(work / "in", resources, fmt)
    out = out_dir or (work / "out")
    argv = ["run", "--source", str(source), "--out", str(out), "--as-of", as_of_time, *extra_args]
    code, messages = invoke(argv)
    if expect_exit is not None:
        assert code == expect_exit, (
            f"exit code {code} (expected {expect_exit}); output:\n{messages}"
        )
    return load_outputs(out, code, source, messages)


def load_outputs(out: Path, code: int, source: Path, messages: str = "") -> Result:
    raw = {name: (out / name).read_bytes() for name in OUTPUT_FILES if (out / name).is_file()}
    missing = [name for name in OUTPUT_FILES if name not in raw]
    assert not missing, f"missing output files {missing} in {out}; output:\n{messages}"
    return Result(
        exit_code=code,
        out_dir=out,
        source=source,
        issues=read_ndjson(out / "DetectedIssue.ndjson"),
        status=read_ndjson(out / "status.ndjson"),
        authorizations=read_ndjson(out / "authorizations.ndjson"),
        psf=read_ndjson(out / "psf.ndjson"),
        messages=messages,
        raw=raw,
    )
