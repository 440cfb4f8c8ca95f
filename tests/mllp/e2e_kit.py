"""Helpers of the MLLP end-to-end tests: patients with an MRN on the EHR, timely messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from tests.hl7v2.kit import AUTHORITY, SYSTEM
from tests.serve.kit import recent_history, seed


def patient_with_mrn(base_url: str, mrn: str, anc: list[float]) -> str:
    ids = seed(base_url, [recent_history(anc)])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    give_mrn(base_url, patient, mrn)
    return patient


def give_mrn(base_url: str, patient: str, mrn: str) -> None:
    resource = requests.get(f"{base_url}/{patient}", timeout=30).json()
    resource["identifier"] = [{"system": SYSTEM, "value": mrn}]
    answer = requests.put(f"{base_url}/{patient}", json=resource, timeout=30)
    assert answer.status_code in (200, 201), answer.text[:300]


def when(hours: int = 2) -> str:
    moment = datetime.now(UTC) - timedelta(hours=hours)
    return moment.strftime("%Y%m%d%H%M%S+0000")


def oru_now(mrn: str, control: str, value: str, status: str = "F", filler: str = "ACC1") -> bytes:
    collected = when()
    lines = [
        f"MSH|^~\\&|LAB|NORTHLAB|REMS|PHARM|{when(1)}||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{mrn}^^^NORTH&{AUTHORITY}&ISO^MR||Doe^Jane||19800101|F",
        f"OBR|1|P{filler}^LAB|{filler}^LAB|57021-8^CBC^LN|||{collected}",
        f"OBX|1|NM|751-8^Neutrophils^LN||{value}|10\\S\\9/L|||||{status}|||{collected}",
        f"SPM|1|{filler}-T1^LAB||119297000^BLD^SCT|||||||||||||{collected}",
    ]
    return ("\r".join(lines) + "\r").encode()
