"""The backend interface and what one decision produces."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapter.core.evaluate import Evaluation, Withdrawal
from adapter.core.findings import Finding
from adapter.core.model import DispenseDecision, PatientInputs
from adapter.fhir.identity import NPI_SYSTEM, identifier_value


@dataclass(frozen=True)
class Directory:
    """What the backend looks up: Patient, Practitioner and Organization resources by reference,
    and the requester of each clozapine MedicationRequest."""

    resources: Mapping[str, Mapping[str, Any]]
    requesters: Mapping[str, str | None]

    def npi(self, practitioner: str | None) -> str | None:
        resource = self.resources.get(practitioner or "")
        return identifier_value(resource, NPI_SYSTEM) if resource else None


@dataclass(frozen=True)
class Outcome:
    """One patient decided: what to write back (findings, withdrawals) and the records of
    batch mode's outputs (authorizations, forms), the dispense decisions, and notes for the
    operator (no patient data beyond references)."""

    backend: str
    findings: tuple[Finding, ...]
    withdrawals: tuple[Withdrawal, ...]
    authorizations: tuple[dict[str, Any], ...]
    forms: tuple[dict[str, Any], ...]
    decisions: tuple[DispenseDecision, ...]
    notes: tuple[str, ...] = ()


class Backend(abc.ABC):
    #: "local" or "rems": the `backend` of authorization records and the audit
    name: str

    @abc.abstractmethod
    def decide(
        self,
        evaluation: Evaluation,
        inputs: PatientInputs,
        directory: Directory,
        clock: datetime,
    ) -> Outcome:
        """Decide one evaluated patient."""

    def start_run(self) -> None:  # noqa: B027 - optional hook
        """A new run (batch) or a new patient (service) begins: forget what an earlier one
        learnt about the backend being down."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
