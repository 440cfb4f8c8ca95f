"""Helpers of the service tests: seeding the EHR, lab results to push, reading what was written."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from tests.watch.seeding import LOINC, History, bundle, created_ids

FINDING_SYSTEM = "https://rems-adapter.github.io/fhir/CodeSystem/finding"


#: What identifies the people seeded here (made up): the log scan looks for every one of them.
SEEDED_PHI: list[str] = []


def _person(n: int) -> dict[str, Any]:
    """A made-up person: a distinctive name, a birth date and an MRN (tokens a log must never
    contain)."""
    tag = uuid.uuid4().hex[:8]
    family, given = f"Quorvath{tag}", f"Elsbeth{tag[::-1]}"
    birth = f"19{40 + n % 50:02d}-{1 + n % 12:02d}-{1 + n % 27:02d}"
    mrn = f"MRN{tag.upper()}{n:04d}"
    SEEDED_PHI.extend([family, given, mrn, f"{given} {family}"])
    folder = os.environ.get("REMS_ADAPTER_TEST_LOG_DIR")
    if folder:
        with open(os.path.join(folder, "seeded-phi.txt"), "a", encoding="utf-8") as out:
            out.write("\n".join([family, given, mrn, birth]) + "\n")
    return {
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.999.2", "value": mrn}],
        "name": [{"family": family, "given": [given], "text": f"{given} {family}"}],
        "birthDate": birth,
    }


def seed(base_url: str, histories: list[History]) -> dict[str, str]:
    request = bundle(histories)
    people = 0
    for entry in request["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"].update(_person(people))
            people += 1
    response = requests.post(base_url, json=request, timeout=60)
    assert response.status_code == 200, response.text[:500]
    return created_ids(response.json(), request)


def recent_history(anc: list[float], weeks_ago: int | None = None) -> History:
    """Weekly results ending last week (the service decides as of now)."""
    start = date.today() - timedelta(weeks=weeks_ago if weeks_ago is not None else len(anc))
    return History(anc=anc, start=start)


def lab_result(
    patient: str, value: float, *, when: datetime | None = None, accession: str | None = None
) -> dict[str, Any]:
    """An ANC result a lab pushes (no id: the lab's own identifier instead)."""
    when = when or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return {
        "resourceType": "Observation",
        "identifier": [
            {"system": "urn:oid:2.16.840.1.113883.3.999.1", "value": accession or uuid.uuid4().hex}
        ],
        "status": "final",
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
        "code": {"coding": [{"system": LOINC, "code": "751-8"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "valueQuantity": {
            "value": value,
            "unit": "/uL",
            "system": "http://unitsofmeasure.org",
            "code": "/uL",
        },
    }


def all_of(base_url: str, kind: str, **params: str) -> list[dict[str, Any]]:
    """Every resource of `kind` on the server (paged, bounded)."""
    out: list[dict[str, Any]] = []
    url: str | None = f"{base_url}/{kind}"
    query: dict[str, str] | None = {"_count": "500", **params}
    for _ in range(100):
        if url is None:
            break
        page = requests.get(url, params=query, timeout=60).json()
        out += [e["resource"] for e in page.get("entry", []) if "resource" in e]
        url = next(
            (link["url"] for link in page.get("link", []) if link["relation"] == "next"), None
        )
        query = None
    return out


def issues(base_url: str, patient: str | None = None) -> list[dict[str, Any]]:
    found = all_of(base_url, "DetectedIssue")
    if patient is not None:
        found = [i for i in found if i["patient"]["reference"] == patient]
    return found


def codes(found: list[dict[str, Any]]) -> list[str]:
    return sorted(
        next(c["code"] for c in i["code"]["coding"] if c.get("system") == FINDING_SYSTEM)
        for i in found
    )


def queue_depths(url: str) -> tuple[float, float] | None:
    """(inbox, outbox) depth from serve's /metrics at `url`, or None when it does not answer."""
    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    values = {}
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head in ("rems_adapter_inbox_depth", "rems_adapter_outbox_depth"):
            values[head] = float(value)
    if len(values) != 2:
        return None
    return values["rems_adapter_inbox_depth"], values["rems_adapter_outbox_depth"]
