"""Write the bundled demo data: ``python -m adapter.demo.generate [--out DIR] [--expected FILE]``.

Outputs (byte-identical on every run; no clock, no random source):
- ``data/demo.ndjson``: FHIR Bulk Data style, one R4 resource a line (staff first, then each
  patient's resources grouped and sorted by type, lastUpdated, id and version);
- ``data/demo-bundle.json``: one patient as a FHIR ``collection`` Bundle, to show that input form;
- ``expected.json``: the hand-derived outcome for every patient at :data:`DEMO_AS_OF`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapter.demo.builders import Resource
from adapter.demo.scenarios import (
    BUNDLE_PATIENTS,
    CONVENTIONS,
    DEMO_AS_OF,
    REQUIRED_SCENARIOS,
    SCENARIOS,
    build_patient,
    staff,
)

__all__ = ["DEMO_AS_OF", "build", "main"]

NDJSON_NAME = "demo.ndjson"
BUNDLE_NAME = "demo-bundle.json"
EXPECTED_NAME = "expected.json"
BUNDLE_BASE = "https://fhir.demo.invalid"


def _order(resource: Resource) -> tuple[str, str, str, int]:
    meta = resource.get("meta", {})
    return (
        resource["resourceType"],
        meta.get("lastUpdated", ""),
        resource["id"],
        int(meta.get("versionId", "1")),
    )


def _line(resource: Resource) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def build() -> tuple[list[Resource], list[Resource], dict[str, Any]]:
    """Every resource for the NDJSON file, the Bundle's resources, and the expected outcomes."""
    ndjson: list[Resource] = sorted(staff(), key=_order)
    bundled: list[Resource] = []
    patients: list[dict[str, Any]] = []
    for number in sorted(SCENARIOS):
        patient, expected = build_patient(number)
        resources = sorted(patient.resources, key=_order)
        (bundled if number in BUNDLE_PATIENTS else ndjson).extend(resources)
        patients.append({"patient": patient.ref, **expected})
    ignored = [
        f"MedicationDispense/{r['id']}"
        for r in ndjson + bundled
        if r["resourceType"] == "MedicationDispense" and "-olanzapine-" in r["id"]
    ]
    expected_doc = {
        "asOf": DEMO_AS_OF,
        "siteTimeZone": "UTC",
        "conventions": list(CONVENTIONS),
        "requiredScenarios": list(REQUIRED_SCENARIOS),
        "ignoredDispenses": ignored,
        "patients": patients,
    }
    return ndjson, bundled, expected_doc


def bundle_of(resources: list[Resource]) -> Resource:
    return {
        "resourceType": "Bundle",
        "id": "demo-bundle",
        "meta": {"lastUpdated": DEMO_AS_OF},
        "type": "collection",
        "timestamp": DEMO_AS_OF,
        "entry": [
            {
                "fullUrl": f"{BUNDLE_BASE}/{r['resourceType']}/{r['id']}",
                "resource": r,
            }
            for r in resources
        ],
    }


def write(out_dir: Path, expected_file: Path) -> list[Path]:
    ndjson, bundled, expected = build()
    out_dir.mkdir(parents=True, exist_ok=True)
    expected_file.parent.mkdir(parents=True, exist_ok=True)
    files = {
        out_dir / NDJSON_NAME: "".join(_line(r) + "\n" for r in ndjson),
        out_dir / BUNDLE_NAME: json.dumps(bundle_of(bundled), ensure_ascii=False, indent=1) + "\n",
        expected_file: json.dumps(expected, ensure_ascii=False, indent=2) + "\n",
    }
    for path, text in files.items():
        path.write_text(text, encoding="utf-8", newline="\n")
    return list(files)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(
        prog="python -m adapter.demo.generate",
        description="Write the bundled synthetic FHIR R4 demo data and its expected outcomes.",
    )
    parser.add_argument("--out", type=Path, default=here / "data", help="data folder")
    parser.add_argument(
        "--expected",
        type=Path,
        default=None,
        help="expected-outcome file (default: expected.json next to the data folder)",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    expected_file: Path = args.expected or out_dir.resolve().parent / EXPECTED_NAME
    for path in write(out_dir, expected_file):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
