"""One patient's working state during a run, and helpers the desks share."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from adapter.core.evaluate import Evaluation
from adapter.core.findings import REASON_TEXT, Finding
from adapter.core.model import (
    REASON_ORDER,
    Anc,
    DispenseDecision,
    PatientInputs,
    Reason,
)
from adapter.core.protocol import Protocol
from adapter.decide.rems.settings import Directory, RemsSettings
from adapter.fhir.identity import PatientIdentity
from adapter.fhir.records import number
from adapter.rems import (
    RemsClient,
)
from adapter.rems.client import wire_instant

PSF_REJECTED = "psf-rejected"
PROJECT_REASONS: frozenset[str] = frozenset(REASON_ORDER)
#: The contract's limit on ANC results per form (psf-submission.schema.json).
MAX_ANC_RESULTS = 50


@dataclass
class Breaker:
    """Once the REMS has not answered after the client's bounded retries, the rest of the run
    does not ask it again (every later patient would wait out the same retries): forms stay
    prepared, dispenses pending, and the next run asks again."""

    down: str | None = None


@dataclass(frozen=True)
class Decided:
    decision: DispenseDecision
    finding: Finding
    authorization_number: str | None = None


@dataclass
class PatientCase:
    """Working state for one patient during a run."""

    evaluation: Evaluation
    inputs: PatientInputs
    identity: PatientIdentity | None
    rems_id: str | None
    prescriber_npi: str | None
    rems_unreachable: str | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def anc_wire(anc: Anc) -> dict[str, Any]:
    return {"valuePerUL": number(anc.value_per_ul), "collected": wire_instant(anc.collected)}


def mapped(reasons: Sequence[str]) -> tuple[Reason, ...]:
    """The service's codes that are the project's reason codes, in the project's order."""
    present = set(reasons)
    return tuple(reason for reason in REASON_ORDER if reason in present)


def why(reasons: Sequence[str]) -> str:
    words = [REASON_TEXT[r] for r in mapped(reasons)]
    others = [r for r in reasons if r not in PROJECT_REASONS]
    if others:
        words.append("REMS codes " + ", ".join(others))
    return ", ".join(words) or "no reason given"


class Desk:
    """What every part of the backend works with: the client, settings, look-ups, clock."""

    def __init__(
        self,
        client: RemsClient,
        settings: RemsSettings,
        directory: Directory,
        protocol: Protocol,
        site_tz: tzinfo,
        clock: datetime,
        breaker: Breaker | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.directory = directory
        self.protocol = protocol
        self.tz = site_tz
        self.clock = clock
        self.breaker = breaker or Breaker()

    def parts(
        self,
    ) -> tuple[RemsClient, RemsSettings, Directory, Protocol, tzinfo, datetime, Breaker]:
        """What a desk needs, the breaker shared: one run, one view of whether the REMS is up."""
        return (
            self.client,
            self.settings,
            self.directory,
            self.protocol,
            self.tz,
            self.clock,
            self.breaker,
        )
