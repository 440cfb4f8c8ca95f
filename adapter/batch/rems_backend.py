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

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from adapter.core.calendar import local_date
from adapter.core.dispense import EMAUTH
from adapter.core.evaluate import Evaluation, Withdrawal, withdraw
from adapter.core.findings import OUTCOME_FINDING, REASON_TEXT, Finding, cells, dispense_finding
from adapter.core.model import (
    REASON_ORDER,
    Anc,
    Citation,
    DispenseDecision,
    Mitigation,
    Outcome,
    PatientInputs,
    PendingDispense,
    PriorIssue,
    Reason,
)
from adapter.core.monitoring import first_step
from adapter.core.protocol import Protocol
from adapter.core.psf import PatientStatusForm
from adapter.fhir.identity import NPI_SYSTEM, PatientIdentity, identifier_value, patient_identity
from adapter.fhir.records import PsfState, authorization_record, instant, number, psf_record
from adapter.rems import (
    Decision,
    RemsClient,
    RemsError,
    RemsRejection,
    RemsRequestInvalid,
    RemsTransientError,
    RetryPolicy,
    Timeouts,
)
from adapter.rems.client import wire_instant

DEFAULT_REMS_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/rems-patient-id"
DEFAULT_PHARMACY_ID_SYSTEM = "https://rems-adapter.github.io/fhir/sid/rems-pharmacy-id"
DEFAULT_DESIGNEE_ID = "rems-adapter"
PSF_ACTION = "psf-prescriber-action-required"
PSF_REJECTED = "psf-rejected"
_PROJECT_REASONS: frozenset[str] = frozenset(REASON_ORDER)
#: The contract's limit on ANC results per form (psf-submission.schema.json).
_MAX_ANC_RESULTS = 50


@dataclass(frozen=True)
class RemsSettings:
    """`--rems URL` and the identifiers the forms need (README configuration table)."""

    url: str
    rems_id_system: str = DEFAULT_REMS_ID_SYSTEM
    pharmacy_id_system: str = DEFAULT_PHARMACY_ID_SYSTEM
    designee_id: str = DEFAULT_DESIGNEE_ID
    #: Used when a dispense names no pharmacy Organization with an identifier in that system.
    pharmacy_id: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


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
class RemsOutcome:
    """One patient decided by the REMS: the replacement for the evaluation's local decisions."""

    findings: tuple[Finding, ...]
    withdrawals: tuple[Withdrawal, ...]
    authorizations: tuple[dict[str, Any], ...]
    forms: tuple[dict[str, Any], ...]
    decisions: tuple[DispenseDecision, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Decided:
    decision: DispenseDecision
    finding: Finding
    authorization_number: str | None = None


@dataclass
class _Patient:
    """Working state for one patient during a run."""

    evaluation: Evaluation
    inputs: PatientInputs
    identity: PatientIdentity | None
    rems_id: str | None
    prescriber_npi: str | None
    rems_unreachable: str | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _anc_wire(anc: Anc) -> dict[str, Any]:
    return {"valuePerUL": number(anc.value_per_ul), "collected": wire_instant(anc.collected)}


def _mapped(reasons: Sequence[str]) -> tuple[Reason, ...]:
    """The service's codes that are the project's reason codes, in the project's order."""
    present = set(reasons)
    return tuple(reason for reason in REASON_ORDER if reason in present)


def _why(reasons: Sequence[str]) -> str:
    words = [REASON_TEXT[r] for r in _mapped(reasons)]
    others = [r for r in reasons if r not in _PROJECT_REASONS]
    if others:
        words.append("REMS codes " + ", ".join(others))
    return ", ".join(words) or "no reason given"


class RemsBackend:
    """Decides each patient against one REMS service, as of the batch clock."""

    def __init__(
        self,
        client: RemsClient,
        settings: RemsSettings,
        directory: Directory,
        protocol: Protocol,
        site_tz: tzinfo,
        clock: datetime,
    ) -> None:
        self.client = client
        self.settings = settings
        self.directory = directory
        self.protocol = protocol
        self.tz = site_tz
        self.clock = clock

    # ------------------------------------------------------------------ one patient

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
        work = _Patient(
            evaluation=evaluation,
            inputs=inputs,
            identity=identity,
            rems_id=identity.rems_id if identity else None,
            prescriber_npi=prescriber_npi,
        )
        forms = self._forms(work)
        decisions = [self._dispense(work, local) for local in evaluation.decisions]
        kept = [f for f in evaluation.findings if f.code not in OUTCOME_FINDING.values()]
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

    # ------------------------------------------------------------------ PSF and enrollment

    def _enrollment_form(self, work: _Patient) -> PatientStatusForm | None:
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

    def _forms(self, work: _Patient) -> list[dict[str, Any]]:
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
        state = self._submit(work, form, kind, npi, signer, rationale)
        return [psf_record(form, state)]

    def _already_on_file(self, work: _Patient, form: PatientStatusForm) -> bool:
        """The REMS already holds a form completed in this reporting period that says what this
        one says (no result collected since, same status, frequency and designations): sending
        it again on every run would only restart the PSF clock without telling the REMS more."""
        assert work.rems_id is not None
        try:
            held = self.client.patient_status(work.rems_id, self.clock)
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

    def _missing_for_forms(self, work: _Patient) -> list[str]:
        if work.identity is None:
            return [f"the {work.evaluation.patient} resource"]
        missing = list(work.identity.missing())
        if work.prescriber_npi is None:
            missing.append(f"a prescriber Practitioner.identifier ({NPI_SYSTEM})")
        return missing

    def _body(
        self,
        work: _Patient,
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
            "ancResults": [_anc_wire(anc) for anc in form.anc_results[-_MAX_ANC_RESULTS:]],
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
        work: _Patient,
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
            work.rems_unreachable = error.message
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
        return f"{form.patient}|{form.reporting_period}|{kind}|{_digest(content)}"

    def _form_evidence(self, form: PatientStatusForm) -> tuple[str, ...]:
        return tuple(
            sorted({ref for anc in form.anc_results for ref in anc.sources or (anc.observation,)})
        )

    def _action_finding(self, work: _Patient, form: PatientStatusForm, kind: str) -> Finding:
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
        work: _Patient,
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
                f"by the REMS: {_why(rejection.reasons)}."
            ),
            key=(
                f"{PSF_REJECTED}|{self._form_key(form, kind)}|{signer['role']}|"
                f"{','.join(rejection.reasons)}"
            ),
            topic=f"psf|{form.patient}|{form.reporting_period}",
            evidence=self._form_evidence(form),
            implicated=work.inputs.requests,
            reasons=_mapped(rejection.reasons),
        )

    def _prescriber_answer(self, work: _Patient, action: Finding) -> tuple[str, str] | None:
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
                if not self._is_prescriber(mitigation, work.inputs):
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

    @staticmethod
    def _is_prescriber(mitigation: Mitigation, inputs: PatientInputs) -> bool:
        if EMAUTH in mitigation.action_codes:
            return False
        if inputs.prescribers:
            return mitigation.author in inputs.prescribers
        return mitigation.author.startswith("Practitioner/")

    # ------------------------------------------------------------------ dispenses

    def _pharmacy_id(self, pending: PendingDispense) -> str | None:
        for ref in pending.performers:
            if not ref.startswith("Organization/"):
                continue
            resource = self.directory.resources.get(ref)
            if resource is not None:
                found = identifier_value(resource, self.settings.pharmacy_id_system)
                if found:
                    return found
        return self.settings.pharmacy_id

    def _dispense(self, work: _Patient, local: DispenseDecision) -> _Decided:
        pending = local.dispense
        if work.rems_unreachable is not None and work.rems_id is None:
            return self._pending(local, f"the REMS could not be reached ({work.rems_unreachable})")
        unsent = self._cannot_ask(work, pending)
        if unsent is not None:
            return unsent(local)
        assert work.rems_id is not None
        request: dict[str, Any] = {
            "pharmacyId": self._pharmacy_id(pending),
            "remsId": work.rems_id,
            "dispenseId": pending.ref.split("/", 1)[1],
            "daysSupply": pending.days_supply,
            "setting": pending.setting,
            "requestedAt": instant(self.clock),
        }
        try:
            rda = self.client.request_dispense_authorization(request, self.clock)
        except RemsError as error:
            return self._pending(local, f"the REMS gave no decision ({error.message})")
        except RemsRequestInvalid as error:
            return self._not_sent(local, f"the request breaks the REMS contract ({error})")
        if rda.granted:
            return self._granted(local, rda, None)
        override = self._override_request(work, pending)
        if override is None:
            return self._denied(local, rda, None)
        issue, mitigation = override
        citation = Citation(
            issue.ref, mitigation.author, "pharmacist", mitigation.date, mitigation.text
        )
        latest = work.evaluation.status.latest
        npi = self.directory.npi(self.directory.requesters.get(pending.prescription or "")) or (
            work.prescriber_npi
        )
        if latest is None or npi is None:
            needs = "a current ANC" if latest is None else "the prescriber's NPI"
            return self._denied(local, rda, citation, f"the override needs {needs}")
        try:
            answer = self.client.request_override(
                {
                    **request,
                    "dispenseRationale": mitigation.text.strip() or "(no text)",
                    "prescriberNpi": npi,
                    "currentAnc": _anc_wire(latest.anc),
                },
                self.clock,
            )
        except RemsError as error:
            return self._pending(local, f"the REMS gave no override decision ({error.message})")
        except RemsRequestInvalid as error:
            return self._denied(local, rda, citation, f"the override breaks the contract ({error})")
        if answer.granted:
            return self._granted(local, answer, citation, lifted=rda.reasons)
        # Every reason stands: why the RDA was denied and why the override was refused.
        both = tuple(dict.fromkeys((*rda.reasons, *answer.reasons)))
        refused = replace(answer, reasons=both)
        return self._denied(local, refused, citation, "the REMS refused the pharmacist's override")

    def _cannot_ask(
        self, work: _Patient, pending: PendingDispense
    ) -> Callable[[DispenseDecision], _Decided] | None:
        if work.rems_id is None:
            return lambda local: self._not_sent(
                local,
                "the REMS has no enrollment the adapter knows of (no REMS id on the Patient "
                f"in {self.settings.rems_id_system}, and no enrollment accepted)",
                reasons=("patient-not-enrolled",),
            )
        if self._pharmacy_id(pending) is None:
            return lambda local: self._not_sent(
                local,
                "the dispense names no pharmacy Organization with an identifier in "
                f"{self.settings.pharmacy_id_system}",
                reasons=("pharmacy-not-certified",),
            )
        if pending.days_supply is None or pending.days_supply < 1:
            return lambda local: self._not_sent(local, "the dispense has no daysSupply")
        return None

    def _override_request(
        self, work: _Patient, pending: PendingDispense
    ) -> tuple[PriorIssue, Mitigation] | None:
        """The newest pharmacist EMAUTH answer on a not-authorized issue of this dispense."""
        best: tuple[PriorIssue, Mitigation] | None = None
        for issue in work.inputs.prior_issues:
            if issue.finding != "dispense-not-authorized" or issue.status == "entered-in-error":
                continue
            if pending.ref not in issue.implicated:
                continue
            for mitigation in issue.mitigations:
                if EMAUTH not in mitigation.action_codes or mitigation.date is None:
                    continue
                if mitigation.date > self.clock:
                    continue
                held = best[1].date if best is not None else None
                if held is None or mitigation.date > held:
                    best = (issue, mitigation)
        return best

    # ------------------------------------------------------------------ outcomes as findings

    def _head(self, pending: PendingDispense) -> str:
        days = f" {pending.days_supply}-day" if pending.days_supply is not None else ""
        return f"{pending.setting.capitalize()}{days} clozapine supply ({pending.ref})"

    def _basis(self, decision: DispenseDecision) -> str:
        phrases = [
            f"ANC {cells(anc.value_per_ul)} cells/uL collected {local_date(anc.collected, self.tz)}"
            for anc in decision.evidence
        ]
        return " and ".join(phrases) or "no usable ANC on record"

    def _finding(
        self, decision: DispenseDecision, detail: str, rems: Sequence[str], number_: str | None
    ) -> Finding:
        base = dispense_finding(decision, self.tz)
        key = f"{base.key}|rems|{','.join(rems)}|{number_ or ''}"
        return replace(base, detail=detail, key=key)

    def _granted(
        self,
        local: DispenseDecision,
        answer: Decision,
        citation: Citation | None,
        lifted: Sequence[str] = (),
    ) -> _Decided:
        outcome: Outcome = "authorized" if citation is None else "authorized-override"
        decision = replace(
            local,
            outcome=outcome,
            reasons=_mapped(lifted),
            citation=citation,
            supply_limit=None,
        )
        head = self._head(local.dispense)
        if citation is None:
            detail = (
                f"{head} is authorized by the REMS (authorization {answer.authorization_number}); "
                f"latest {self._basis(local)}."
            )
        else:
            detail = (
                f"{head} is authorized by the REMS on the pharmacist's override "
                f'({citation.author}: "{citation.text.strip()}"), authorization '
                f"{answer.authorization_number}, despite: {_why(lifted)}; "
                f"latest {self._basis(local)}."
            )
        number_ = answer.authorization_number
        return _Decided(decision, self._finding(decision, detail, lifted, number_), number_)

    def _denied(
        self,
        local: DispenseDecision,
        answer: Decision,
        citation: Citation | None,
        note: str | None = None,
    ) -> _Decided:
        decision = replace(
            local,
            outcome="not-authorized",
            reasons=_mapped(answer.reasons),
            citation=None,
            supply_limit=None,
        )
        extra = f" ({note})" if note else ""
        detail = (
            f"{self._head(local.dispense)} is NOT authorized by the REMS{extra}: "
            f"{_why(answer.reasons)}; latest {self._basis(local)}."
        )
        cited = f"|{citation.issue}" if citation else ""
        finding = self._finding(decision, detail, [*answer.reasons, cited], None)
        if citation is not None:
            finding = replace(finding, evidence=(*finding.evidence, citation.issue))
        return _Decided(decision, finding)

    def _not_sent(
        self, local: DispenseDecision, why: str, reasons: tuple[Reason, ...] = ()
    ) -> _Decided:
        decision = replace(
            local, outcome="not-authorized", reasons=reasons, citation=None, supply_limit=None
        )
        detail = (
            f"{self._head(local.dispense)} is NOT authorized: no REMS Dispense Authorization "
            f"could be requested because {why}; latest {self._basis(local)}."
        )
        return _Decided(decision, self._finding(decision, detail, ["not-sent", why], None))

    def _pending(self, local: DispenseDecision, why: str) -> _Decided:
        decision = replace(local, outcome="pending", reasons=(), citation=None, supply_limit=None)
        detail = (
            f"{self._head(local.dispense)} awaits a REMS decision: {why}. Do not dispense on it "
            "yet; the adapter asks again on its next run."
        )
        return _Decided(decision, self._finding(decision, detail, ["pending"], None))
