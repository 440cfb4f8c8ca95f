"""Certification records: prescribers, designees, pharmacies (admin endpoints and seed files)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from adapter.rems import contract

from .clock import to_wire
from .config import ProgramRules
from .outcome import Outcome, rejected
from .reasons import ErrorKind, Reason

# NPI check digit: Luhn over the card-issuer prefix 80840 followed by the first nine digits.
_NPI_LUHN_PREFIX = "80840"


def npi_check_digit_ok(npi: str) -> bool:
    digits = _NPI_LUHN_PREFIX + npi[:9]
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 0:  # every second digit from the right, starting with the rightmost
            digit = digit * 2 - 9 if digit * 2 > 9 else digit * 2
        total += digit
    return (10 - total % 10) % 10 == int(npi[9])


def prescriber_certified(conn: sqlite3.Connection, npi: str) -> bool:
    row = conn.execute("SELECT 1 FROM prescribers WHERE npi = ?", (npi,)).fetchone()
    return row is not None


def is_designee_of(conn: sqlite3.Connection, designee_id: str, prescriber_npi: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM designees WHERE designee_id = ? AND prescriber_npi = ?",
        (designee_id, prescriber_npi),
    ).fetchone()
    return row is not None


def pharmacy_settings(conn: sqlite3.Connection, pharmacy_id: str) -> frozenset[str]:
    rows = conn.execute("SELECT setting FROM pharmacies WHERE pharmacy_id = ?", (pharmacy_id,))
    return frozenset(str(row["setting"]) for row in rows)


def _record(kind: str, record_id: str, recorded_at: str, new: bool, **extra: Any) -> Outcome:
    body = {"kind": kind, "id": record_id, "certified": True, "recordedAt": recorded_at, **extra}
    return Outcome(201 if new else 200, body, contract.CERTIFICATION_RESPONSE)


def certify_prescriber(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    npi = str(body["npi"])
    reasons: list[Reason] = []
    if rules.validate_npi_check_digit and not npi_check_digit_ok(npi):
        reasons.append(Reason.NPI_INVALID)
    if not body["knowledgeAssessment"]["passed"]:
        reasons.append(Reason.KNOWLEDGE_ASSESSMENT_NOT_PASSED)
    if reasons:
        return rejected(ErrorKind.CERTIFICATION_REJECTED, reasons, "prescriber not certified")
    existing = conn.execute("SELECT recorded_at FROM prescribers WHERE npi = ?", (npi,)).fetchone()
    completed_on = body["knowledgeAssessment"]["completedOn"]
    if existing is not None:
        conn.execute(
            "UPDATE prescribers SET assessment_completed_on = ? WHERE npi = ?", (completed_on, npi)
        )
        return _record("prescriber", npi, existing["recorded_at"], new=False)
    recorded_at = to_wire(now)
    conn.execute(
        "INSERT INTO prescribers (npi, assessment_completed_on, recorded_at) VALUES (?, ?, ?)",
        (npi, completed_on, recorded_at),
    )
    return _record("prescriber", npi, recorded_at, new=True)


def enroll_designee(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    designee_id, npi = str(body["designeeId"]), str(body["prescriberNpi"])
    if not prescriber_certified(conn, npi):
        return rejected(
            ErrorKind.CERTIFICATION_REJECTED,
            [Reason.PRESCRIBER_NOT_CERTIFIED],
            "only a certified prescriber can add a designee",
        )
    existing = conn.execute(
        "SELECT recorded_at FROM designees WHERE designee_id = ? AND prescriber_npi = ?",
        (designee_id, npi),
    ).fetchone()
    if existing is not None:
        return _record("designee", designee_id, existing["recorded_at"], False, prescriberNpi=npi)
    recorded_at = to_wire(now)
    conn.execute(
        "INSERT INTO designees (designee_id, prescriber_npi, recorded_at) VALUES (?, ?, ?)",
        (designee_id, npi, recorded_at),
    )
    return _record("designee", designee_id, recorded_at, True, prescriberNpi=npi)


def certify_pharmacy(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    pharmacy_id, setting = str(body["pharmacyId"]), str(body["setting"])
    existing = conn.execute(
        "SELECT recorded_at FROM pharmacies WHERE pharmacy_id = ? AND setting = ?",
        (pharmacy_id, setting),
    ).fetchone()
    recorded_at = existing["recorded_at"] if existing is not None else to_wire(now)
    if existing is None:
        conn.execute(
            "INSERT INTO pharmacies (pharmacy_id, setting, name, recorded_at) VALUES (?, ?, ?, ?)",
            (pharmacy_id, setting, body.get("name"), recorded_at),
        )
    settings = sorted(pharmacy_settings(conn, pharmacy_id))
    return _record("pharmacy", pharmacy_id, recorded_at, existing is None, settings=settings)
