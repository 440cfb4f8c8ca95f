"""PSF and enrollment: routine forms signed by the designee, the others routed to the
prescriber and signed by them once they answer; the adapter never invents a rationale."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapter.core.calendar import local_date
from adapter.core.dispense import by_prescriber
from adapter.core.findings import PSF_ACTION, Finding, cells
from adapter.core.model import (
    Mitigation,
)
from adapter.core.monitoring import first_step
from adapter.core.psf import PatientStatusForm
from adapter.decide.rems.case import (
    MAX_ANC_RESULTS,
    PSF_REJECTED,
    Desk,
    PatientCase,
    anc_wire,
    digest,
    mapped,
    why,
)
from adapter.fhir.identity import NPI_SYSTEM
from adapter.fhir.records import PsfState, psf_record
from adapter.rems import (
    RemsError,
    RemsRejection,
    RemsRequestInvalid,
    RemsTransientError,
)


class FormDesk(Desk):
    """The month's PSF, or the enrollment form of a patient the REMS does not know yet."""

    def _enrollment_form(self, work: PatientCase) -> PatientStatusForm | None:
        """The first PSF of a patient the REMS does not know: the latest ANC is the baseline."""
        status = work.evaluation.status
        if status.latest is None:
            return None
        rules = self.protocol.rules(status.population)
        below = status.latest.anc.value_per_ul < Decimal(rules.psf_rationale_below)
        ben = status.population == "ben"
        return PatientStatusForm(
            patient=work.evaluation.patient,
            reporting_period=local_date(self.clock, self.tz).strftime("%Y-%m"),
            anc_results=(status.latest.anc,),
            monitoring_frequency=self.protocol.psf_frequency[first_step(self.protocol)],
            treatment_status="continue",
            ben=ben,
            hospice=status.hospice,
            rationale_required=below,
            labs_missed=False,
            signer_role="prescriber" if below or ben or status.hospice else "designee",
        )

    def forms(self, work: PatientCase) -> list[dict[str, Any]]:
        enrolling = work.rems_id is None
        form = work.evaluation.psf
        if form is None and enrolling:
            form = self._enrollment_form(work)
        if form is None:
            return []
        kind = "enrollment" if enrolling else "psf"
        missing = self._missing_for_forms(work)
        if missing:
            work.notes.append(
                f"{work.evaluation.patient}: no REMS {kind} sent: missing {', '.join(missing)}"
            )
            return [psf_record(form, "prepared")]
        assert work.identity is not None and work.prescriber_npi is not None
        if kind == "psf" and self._already_on_file(work, form):
            return [psf_record(form, "accepted")]
        action = self._action_finding(work, form, kind)
        signer: dict[str, str] = {"role": "designee", "id": self.settings.designee_id}
        npi, rationale = work.prescriber_npi, None
        if form.signer_role == "prescriber":
            answer = self._prescriber_answer(work, action)
            if answer is None:
                work.findings.append(action)
                return [psf_record(form, "awaiting-prescriber")]
            npi, rationale = answer
            signer = {"role": "prescriber", "id": npi}
        if self.breaker.down is not None:
            work.rems_unreachable = self.breaker.down
            return [psf_record(form, "prepared")]  # not sent: the REMS is down this run
        state = self._submit(work, form, kind, npi, signer, rationale)
        return [psf_record(form, state)]

    def _already_on_file(self, work: PatientCase, form: PatientStatusForm) -> bool:
        """The REMS already holds a form completed in this reporting period that says what this
        one says (no result collected since, same status, frequency and designations): sending
        it again on every run would only restart the PSF clock without telling the REMS more."""
        assert work.rems_id is not None
        if self.breaker.down is not None:
            return False
        try:
            held = self.client.patient_status(work.rems_id, self.clock)
        except RemsTransientError as error:
            self.breaker.down = error.message
            return False
        except (RemsError, RemsRequestInvalid):
            return False  # the submission itself will meet (and report) the problem
        if held is None:
            return False
        completed = datetime.fromisoformat(str(held["lastPsfCompletedAt"]))
        if local_date(completed, self.tz).strftime("%Y-%m") != form.reporting_period:
            return False
        if any(anc.collected > completed for anc in form.anc_results):
            return False
        said = (held["treatmentStatus"], held["monitoringFrequency"], held["designations"])
        return bool(
            said
            == (
                form.treatment_status,
                form.monitoring_frequency,
                {"ben": form.ben, "hospice": form.hospice},
            )
        )

    def _missing_for_forms(self, work: PatientCase) -> list[str]:
        if work.identity is None:
            return [f"the {work.evaluation.patient} resource"]
        missing = list(work.identity.missing())
        if work.prescriber_npi is None:
            missing.append(f"a prescriber Practitioner.identifier ({NPI_SYSTEM})")
        return missing

    def _body(
        self,
        work: PatientCase,
        form: PatientStatusForm,
        kind: str,
        npi: str,
        signer: Mapping[str, str],
        rationale: str | None,
    ) -> dict[str, Any]:
        identity = work.identity
        assert identity is not None
        patient: dict[str, Any] = {
            "name": {"family": identity.family, "given": identity.given},
            "birthDate": identity.birth_date,
            "sex": identity.sex,
            "postalCode": identity.postal_code,
        }
        body: dict[str, Any] = {
            "patient": patient,
            "prescriberNpi": npi,
            "signer": dict(signer),
            "ancResults": [anc_wire(anc) for anc in form.anc_results[-MAX_ANC_RESULTS:]],
            "monitoringFrequency": form.monitoring_frequency,
            "designations": {"ben": form.ben, "hospice": form.hospice},
        }
        if kind == "psf":
            if work.rems_id is not None:
                patient["remsId"] = work.rems_id
            body["reportingPeriod"] = form.reporting_period
            body["treatmentStatus"] = form.treatment_status
            body["labsMissed"] = form.labs_missed
        if rationale is not None:
            body["treatmentRationale"] = rationale
        return body

    def _submit(
        self,
        work: PatientCase,
        form: PatientStatusForm,
        kind: str,
        npi: str,
        signer: Mapping[str, str],
        rationale: str | None,
    ) -> PsfState:
        try:
            if kind == "enrollment":
                try:
                    enrolled = self.client.enroll_patient(
                        self._body(work, form, kind, npi, signer, rationale), self.clock
                    )
                    work.rems_id = enrolled.rems_id
                    return "accepted"
                except RemsRejection as rejection:
                    if "patient-already-enrolled" not in rejection.reasons:
                        raise
                    if work.evaluation.psf is None:
                        work.notes.append(
                            f"{work.evaluation.patient}: the REMS already has this patient; "
                            "record their REMS id on the Patient to request authorizations"
                        )
                        return "rejected"
                    kind = "psf"  # known to the REMS by identity: send the monthly form
            accepted = self.client.submit_psf(
                self._body(work, form, kind, npi, signer, rationale), self.clock
            )
            work.rems_id = accepted.rems_id
            return "accepted"
        except RemsRejection as rejection:
            work.findings.append(self._rejected_finding(work, form, kind, signer, rejection))
            return "rejected"
        except RemsTransientError as error:
            work.rems_unreachable = self.breaker.down = error.message
            work.notes.append(f"{work.evaluation.patient}: REMS {kind} not answered: {error}")
            return "submitted"
        except RemsRequestInvalid as error:
            work.notes.append(f"{work.evaluation.patient}: REMS {kind} not sent: {error}")
            return "prepared"
        except RemsError as error:
            work.rems_unreachable = error.message
            work.notes.append(f"{work.evaluation.patient}: REMS {kind} failed: {error}")
            return "submitted"

    def _form_subject(self, form: PatientStatusForm, kind: str) -> str:
        what = "REMS enrollment form" if kind == "enrollment" else "Patient Status Form"
        return f"The {what} for {form.reporting_period}"

    def _form_key(self, form: PatientStatusForm, kind: str) -> str:
        content = {
            "kind": kind,
            "period": form.reporting_period,
            "anc": [[anc.key, str(anc.value_per_ul)] for anc in form.anc_results],
            "frequency": form.monitoring_frequency,
            "status": form.treatment_status,
            "ben": form.ben,
            "hospice": form.hospice,
            "labsMissed": form.labs_missed,
        }
        return f"{form.patient}|{form.reporting_period}|{kind}|{digest(content)}"

    def _form_evidence(self, form: PatientStatusForm) -> tuple[str, ...]:
        return tuple(
            sorted({ref for anc in form.anc_results for ref in anc.sources or (anc.observation,)})
        )

    def _action_finding(self, work: PatientCase, form: PatientStatusForm, kind: str) -> Finding:
        latest = max(form.anc_results, key=lambda anc: anc.collected)
        needs = []
        if form.rationale_required:
            needs.append(
                "a treatment rationale (labs were missed for the period)"
                if form.labs_missed
                else f"a treatment rationale (ANC {cells(latest.value_per_ul)} cells/uL "
                f"collected {local_date(latest.collected, self.tz)})"
            )
        if form.ben:
            needs.append("the benign ethnic neutropenia designation")
        if form.hospice:
            needs.append("the hospice designation")
        return Finding(
            code=PSF_ACTION,
            patient=form.patient,
            detail=(
                f"{self._form_subject(form, kind)} needs the prescriber's signature for "
                f"{' and '.join(needs)}: answer this issue with a mitigation giving the treatment "
                "rationale and the adapter submits the form signed by the prescriber."
            ),
            key=f"{PSF_ACTION}|{self._form_key(form, kind)}",
            topic=f"psf|{form.patient}|{form.reporting_period}",
            evidence=self._form_evidence(form),
            implicated=work.inputs.requests,
        )

    def _rejected_finding(
        self,
        work: PatientCase,
        form: PatientStatusForm,
        kind: str,
        signer: Mapping[str, str],
        rejection: RemsRejection,
    ) -> Finding:
        return Finding(
            code=PSF_REJECTED,
            patient=form.patient,
            detail=(
                f"{self._form_subject(form, kind)}, signed by the {signer['role']}, was rejected "
                f"by the REMS: {why(rejection.reasons)}."
            ),
            key=(
                f"{PSF_REJECTED}|{self._form_key(form, kind)}|{signer['role']}|"
                f"{','.join(rejection.reasons)}"
            ),
            topic=f"psf|{form.patient}|{form.reporting_period}",
            evidence=self._form_evidence(form),
            implicated=work.inputs.requests,
            reasons=mapped(rejection.reasons),
        )

    def _prescriber_answer(self, work: PatientCase, action: Finding) -> tuple[str, str] | None:
        """(prescriber NPI, rationale) from the newest prescriber mitigation on this very
        routing issue; None until the prescriber has answered it."""
        best: tuple[datetime, str, Mitigation] | None = None
        for issue in work.inputs.prior_issues:
            if issue.finding != PSF_ACTION or issue.identifier != action.identifier:
                continue
            if issue.status == "entered-in-error":
                continue
            for mitigation in issue.mitigations:
                when = mitigation.date
                if when is None or when > self.clock or not mitigation.text.strip():
                    continue
                if not by_prescriber(mitigation, work.inputs):
                    continue
                if best is None or (when, mitigation.author) > best[:2]:
                    best = (when, mitigation.author, mitigation)
        if best is None:
            return None
        npi = self.directory.npi(best[1])
        if npi is None:
            work.notes.append(
                f"{work.evaluation.patient}: the prescriber's answer to the PSF cannot be signed: "
                f"{best[1]} has no identifier in {NPI_SYSTEM}"
            )
            return None
        return npi, best[2].text.strip()
