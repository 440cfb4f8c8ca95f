"""REMS Dispense Authorizations (RDA) and pharmacist overrides, with authorization numbers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapter.rems import contract

from . import registry
from .clock import local_date, parse_instant, to_wire
from .config import ProgramRules
from .outcome import Outcome
from .patients import limited_overrides, state_as_of
from .reasons import Reason
from .rules import (
    Anc,
    DispenseRequest,
    OverrideFacts,
    override_counts_toward_limit,
    override_reasons,
    overrides_in_window,
    rda_reasons,
)

_NUMBER_PREFIX = {"rda": "RDA", "override": "OVR"}


def _dispense_request(conn: sqlite3.Connection, body: dict[str, Any]) -> DispenseRequest:
    return DispenseRequest(
        pharmacy_settings=registry.pharmacy_settings(conn, str(body["pharmacyId"])),
        days_supply=int(body["daysSupply"]),
        setting=str(body["setting"]),
    )


def _record_decision(
    conn: sqlite3.Connection,
    kind: str,
    body: dict[str, Any],
    reasons: Sequence[Reason],
    counts_toward_limit: bool,
    now: datetime,
    rules: ProgramRules,
) -> Outcome:
    granted = not reasons
    decided_at = to_wire(now)
    cursor = conn.execute(
        "INSERT INTO decisions (kind, pharmacy_id, rems_id, dispense_id, days_supply, setting,"
        " requested_at, decided_at, granted, counts_toward_limit, reasons)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            kind,
            body["pharmacyId"],
            body["remsId"],
            body["dispenseId"],
            body["daysSupply"],
            body["setting"],
            body["requestedAt"],
            decided_at,
            int(granted),
            int(granted and counts_toward_limit),
            json.dumps([str(reason) for reason in reasons]),
        ),
    )
    number = None
    if granted:
        day = local_date(now, rules.time_zone).strftime("%Y%m%d")
        number = f"{_NUMBER_PREFIX[kind]}-{day}-{cursor.lastrowid:06d}"
    response = {
        "dispenseId": body["dispenseId"],
        "remsId": body["remsId"],
        "pharmacyId": body["pharmacyId"],
        "granted": granted,
        "authorizationNumber": number,
        "reasons": [str(reason) for reason in reasons],
        "override": kind == "override",
        "decidedAt": decided_at,
    }
    conn.execute(
        "UPDATE decisions SET authorization_number = ?, response = ? WHERE id = ?",
        (number, json.dumps(response), cursor.lastrowid),
    )
    return Outcome(200, response, contract.DISPENSE_AUTHORIZATION_RESPONSE)


def request_rda(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    patient = state_as_of(conn, str(body["remsId"]), now)
    reasons = rda_reasons(_dispense_request(conn, body), patient, now, rules)
    return _record_decision(conn, "rda", body, reasons, False, now, rules)


def _earlier_override_grant(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime
) -> Outcome | None:
    """A dispense is overridden at most once: asking again (even with a new Idempotency-Key)
    returns the first grant and does not count toward the limit again."""
    row = conn.execute(
        "SELECT response FROM decisions WHERE kind = 'override' AND granted = 1"
        " AND pharmacy_id = ? AND dispense_id = ? AND rems_id = ? AND decided_at <= ?"
        " ORDER BY id LIMIT 1",
        (body["pharmacyId"], body["dispenseId"], body["remsId"], to_wire(now)),
    ).fetchone()
    if row is None:
        return None
    return Outcome(200, json.loads(row["response"]), contract.DISPENSE_AUTHORIZATION_RESPONSE)


def request_override(
    conn: sqlite3.Connection, body: dict[str, Any], now: datetime, rules: ProgramRules
) -> Outcome:
    earlier = _earlier_override_grant(conn, body, now)
    if earlier is not None:
        return earlier
    rems_id = str(body["remsId"])
    request = _dispense_request(conn, body)
    anc = body["currentAnc"]
    facts = OverrideFacts(
        request=request,
        prescriber_certified=registry.prescriber_certified(conn, str(body["prescriberNpi"])),
        dispense_rationale=str(body["dispenseRationale"]),
        current_anc=Anc(float(anc["valuePerUL"]), parse_instant(anc["collected"])),
        limited_overrides_in_window=overrides_in_window(
            limited_overrides(conn, rems_id, now), now, rules
        ),
    )
    patient = state_as_of(conn, rems_id, now)
    reasons = override_reasons(facts, patient, now, rules)
    counts = override_counts_toward_limit(request.pharmacy_settings, rules)
    return _record_decision(conn, "override", body, reasons, counts, now, rules)
