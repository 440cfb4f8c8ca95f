"""The `rems` decision backend (clinical-rules section 3): a REMS service decides the dispenses.

Per patient on clozapine, after the core has evaluated them:
- the Patient Status Form the core prepared (or, for a patient the REMS does not know yet, the
  enrollment form built from the baseline ANC) is submitted as the designee when it is routine;
  a form needing a rationale, a BEN or a hospice designation goes to the prescriber as a
  `psf-prescriber-action-required` DetectedIssue and is submitted, signed by the prescriber with
  their mitigation text as the rationale, once they have answered that very issue;
- each dispense awaiting a decision gets a REMS Dispense Authorization; a pharmacist's EMAUTH
  mitigation on the dispense's not-authorized issue becomes an override request; an unreachable
  REMS leaves the dispense `pending` with a DetectedIssue, decided by a later run.
The adapter never invents a rationale and never passes a dispense it could not ask about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapter.core.evaluate import Evaluation, Withdrawal, withdraw
from adapter.core.findings import HANDED_OVER_TOPIC, OUTCOME_FINDING, PSF_ACTION, Finding
from adapter.core.model import (
    DispenseDecision,
    PatientInputs,
)
from adapter.decide.rems.case import (
    Desk,
    PatientCase,
)
from adapter.decide.rems.dispensing import DispenseDesk
from adapter.decide.rems.forms import FormDesk
from adapter.fhir.identity import patient_identity
from adapter.fhir.records import authorization_record


@dataclass(frozen=True)
class RemsOutcome:
    """One patient decided by the REMS: the replacement for the evaluation's local decisions."""

    findings: tuple[Finding, ...]
    withdrawals: tuple[Withdrawal, ...]
    authorizations: tuple[dict[str, Any], ...]
    forms: tuple[dict[str, Any], ...]
    decisions: tuple[DispenseDecision, ...]
    notes: tuple[str, ...] = ()


class RemsBackend(Desk):
    """Decides each patient against one REMS service, as of the batch clock."""

    def decide(self, evaluation: Evaluation, inputs: PatientInputs) -> RemsOutcome:
        patient_resource = self.directory.resources.get(evaluation.patient)
        identity = (
            patient_identity(patient_resource, self.settings.rems_id_system)
            if patient_resource is not None
            else None
        )
        prescriber_npi = next(
            (npi for ref in sorted(inputs.prescribers) if (npi := self.directory.npi(ref))),
            None,
        )
        work = PatientCase(
            evaluation=evaluation,
            inputs=inputs,
            identity=identity,
            rems_id=identity.rems_id if identity else None,
            prescriber_npi=prescriber_npi,
        )
        forms = FormDesk(*self.parts()).forms(work)
        desk = DispenseDesk(*self.parts())
        decisions = [desk.dispense(work, local) for local in evaluation.decisions]
        # The REMS decides the pending dispenses; a completed one handed over although the
        # label did not allow it stays surfaced as the core found it.
        # The REMS forms are routed by the form desk (its own psf findings).
        kept = [
            f
            for f in evaluation.findings
            if (f.code not in OUTCOME_FINDING.values() or f.topic.startswith(HANDED_OVER_TOPIC))
            and f.code != PSF_ACTION
        ]
        findings = sorted(
            [*kept, *work.findings, *(item.finding for item in decisions)],
            key=lambda f: (f.topic, f.code, f.key),
        )
        withdrawals = withdraw(inputs, evaluation.labs, findings, self.clock)
        return RemsOutcome(
            findings=tuple(findings),
            withdrawals=withdrawals,
            authorizations=tuple(
                authorization_record(item.decision, "rems", item.authorization_number)
                for item in decisions
            ),
            forms=tuple(forms),
            decisions=tuple(item.decision for item in decisions),
            notes=tuple(work.notes),
        )
