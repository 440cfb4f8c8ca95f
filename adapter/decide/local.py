"""The `local` backend: the core decides (clinical-rules section 2)."""

from __future__ import annotations

from datetime import datetime

from adapter.core.evaluate import Evaluation
from adapter.core.model import PatientInputs
from adapter.decide.base import Backend, Directory, Outcome
from adapter.fhir.records import authorization_record, psf_record


def local_outcome(evaluation: Evaluation) -> Outcome:
    """The evaluation as it stands: its findings, withdrawals, decisions and prepared form (a
    form the prescriber must sign and has not is `awaiting-prescriber`)."""
    psf = evaluation.psf
    forms = (
        (
            psf_record(
                psf,
                "awaiting-prescriber"
                if psf.signer_role == "prescriber" and not evaluation.psf_signed
                else "prepared",
            ),
        )
        if psf is not None
        else ()
    )
    return Outcome(
        backend="local",
        findings=tuple(evaluation.findings),
        withdrawals=tuple(evaluation.withdrawals),
        authorizations=tuple(authorization_record(d, "local") for d in evaluation.decisions),
        forms=forms,
        decisions=tuple(evaluation.decisions),
    )


class LocalBackend(Backend):
    name = "local"

    def decide(
        self,
        evaluation: Evaluation,
        inputs: PatientInputs,
        directory: Directory,
        clock: datetime,
    ) -> Outcome:
        return local_outcome(evaluation)
