"""Dispense authorization: an RDA per dispense awaiting a decision; a pharmacist's EMAUTH
answer becomes an override request; no answer from the REMS leaves the dispense pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from adapter.core.calendar import local_date
from adapter.core.dispense import by_pharmacist
from adapter.core.findings import Finding, cells, dispense_finding
from adapter.core.model import (
    Citation,
    DispenseDecision,
    Mitigation,
    Outcome,
    PendingDispense,
    PriorIssue,
    Reason,
)
from adapter.decide.rems.case import (
    Decided,
    Desk,
    PatientCase,
    anc_wire,
    mapped,
    why,
)
from adapter.fhir.identity import identifier_value
from adapter.fhir.records import instant
from adapter.rems import (
    Decision,
    RemsError,
    RemsRequestInvalid,
    RemsTransientError,
)

#: Local rule 2 (clinical-rules 2.3): the ANC history itself says no supply now.
CLINICAL_BLOCKS: frozenset[Reason] = frozenset(
    {"treatment-interrupted", "rechallenge-requires-prescriber"}
)


class DispenseDesk(Desk):
    """One decision per dispense awaiting one, from the REMS's answer, and never a supply the
    patient's own ANC history forbids: a REMS grant is necessary, not sufficient."""

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

    def dispense(self, work: PatientCase, local: DispenseDecision) -> Decided:
        pending = local.dispense
        if self.breaker.down is not None:
            return self._unreachable(local, self.breaker.down)
        if work.rems_unreachable is not None and work.rems_id is None:
            return self._unreachable(local, work.rems_unreachable)
        unsent = self._cannot_ask(work, local)
        if unsent is not None:
            return unsent
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
        except RemsTransientError as error:
            return self._unreachable(local, error)
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
        rationale = mitigation.text.strip()
        lacking = [
            what
            for what, missing in (
                ("a current ANC", latest is None),
                ("the prescriber's NPI", npi is None),
                ("a dispense rationale (the mitigation's action.text)", not rationale),
            )
            if missing
        ]
        if lacking or latest is None or npi is None:
            # The adapter never makes up what the pharmacist or the record did not give.
            note = f"the override cannot be requested without {' and '.join(lacking)}"
            return self._denied(local, rda, citation, note)
        try:
            answer = self.client.request_override(
                {
                    **request,
                    "dispenseRationale": rationale,
                    "prescriberNpi": npi,
                    "currentAnc": anc_wire(latest.anc),
                },
                self.clock,
            )
        except RemsTransientError as error:
            return self._unreachable(local, error)
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

    def _cannot_ask(self, work: PatientCase, local: DispenseDecision) -> Decided | None:
        """A decision without asking, when the REMS request cannot be formed."""
        pending = local.dispense
        if pending.unreadable:
            # A request formed from a partly read dispense (the default pharmacy, no setting)
            # could be granted for a supply it does not describe.
            return self._not_sent(
                local,
                f"the dispense could not be read whole ({', '.join(pending.unreadable)})",
                reasons=local.reasons,  # what the label says of it all the same
            )
        if work.rems_id is None:
            return self._not_sent(
                local,
                "the REMS has no enrollment the adapter knows of (no REMS id on the Patient "
                f"in {self.settings.rems_id_system}, and no enrollment accepted)",
                reasons=("patient-not-enrolled",),
            )
        if self._pharmacy_id(pending) is None:
            return self._not_sent(
                local,
                "the dispense names no pharmacy Organization with an identifier in "
                f"{self.settings.pharmacy_id_system}",
                reasons=("pharmacy-not-certified",),
            )
        if pending.days_supply is None or pending.days_supply < 1:
            return self._not_sent(local, "the dispense has no daysSupply")
        return None

    def _override_request(
        self, work: PatientCase, pending: PendingDispense
    ) -> tuple[PriorIssue, Mitigation] | None:
        """The newest pharmacist EMAUTH answer on a not-authorized issue of this dispense."""
        best: tuple[PriorIssue, Mitigation] | None = None
        for issue in work.inputs.prior_issues:
            if issue.finding != "dispense-not-authorized" or issue.status == "entered-in-error":
                continue
            if pending.ref not in issue.implicated:
                continue
            for mitigation in issue.mitigations:
                if not by_pharmacist(mitigation, work.inputs) or mitigation.date is None:
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
    ) -> Decided:
        blocked = self._clinically_blocked(local)
        if blocked:
            return self._held_back(local, answer, blocked)
        outcome: Outcome = "authorized" if citation is None else "authorized-override"
        decision = replace(
            local,
            outcome=outcome,
            reasons=mapped(lifted),
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
                f"{answer.authorization_number}, despite: {why(lifted)}; "
                f"latest {self._basis(local)}."
            )
        number_ = answer.authorization_number
        return Decided(decision, self._finding(decision, detail, lifted, number_), number_)

    @staticmethod
    def _clinically_blocked(local: DispenseDecision) -> tuple[Reason, ...]:
        """The local rule-2 reasons, unless the prescriber's rationale already answered them."""
        if local.citation is not None and local.citation.role == "prescriber":
            return ()
        return tuple(reason for reason in local.reasons if reason in CLINICAL_BLOCKS)

    def _held_back(
        self, local: DispenseDecision, answer: Decision, blocked: tuple[Reason, ...]
    ) -> Decided:
        """The REMS granted, but the ANC history requires an interruption or a prescriber's
        rechallenge decision first: not authorized, the grant named so nothing is hidden."""
        decision = replace(
            local, outcome="not-authorized", reasons=blocked, citation=None, supply_limit=None
        )
        detail = (
            f"{self._head(local.dispense)} is NOT authorized: the REMS granted authorization "
            f"{answer.authorization_number}, but the patient's ANC history says "
            f"{why(blocked)}; latest {self._basis(local)}."
        )
        number_ = answer.authorization_number
        finding = self._finding(decision, detail, [*blocked, "held-back"], number_)
        return Decided(decision, finding)

    def _denied(
        self,
        local: DispenseDecision,
        answer: Decision,
        citation: Citation | None,
        note: str | None = None,
    ) -> Decided:
        decision = replace(
            local,
            outcome="not-authorized",
            reasons=mapped(answer.reasons),
            citation=None,
            supply_limit=None,
        )
        extra = f" ({note})" if note else ""
        detail = (
            f"{self._head(local.dispense)} is NOT authorized by the REMS{extra}: "
            f"{why(answer.reasons)}; latest {self._basis(local)}."
        )
        cited = f"|{citation.issue}" if citation else ""
        finding = self._finding(decision, detail, [*answer.reasons, cited], None)
        if citation is not None:
            finding = replace(finding, evidence=(*finding.evidence, citation.issue))
        return Decided(decision, finding)

    def _not_sent(
        self, local: DispenseDecision, why: str, reasons: tuple[Reason, ...] = ()
    ) -> Decided:
        decision = replace(
            local, outcome="not-authorized", reasons=reasons, citation=None, supply_limit=None
        )
        detail = (
            f"{self._head(local.dispense)} is NOT authorized: no REMS Dispense Authorization "
            f"could be requested because {why}; latest {self._basis(local)}."
        )
        return Decided(decision, self._finding(decision, detail, ["not-sent", why], None))

    def _unreachable(self, local: DispenseDecision, cause: RemsTransientError | str) -> Decided:
        """Pending because the REMS did not answer: now (`cause` is the error, and the rest of
        the run stops asking) or earlier in this run (`cause` is what was said then)."""
        why = cause.message if isinstance(cause, RemsTransientError) else cause
        if isinstance(cause, RemsTransientError):
            self.breaker.down = why
        return self._pending(local, f"the REMS could not be reached ({why})")

    def _pending(self, local: DispenseDecision, why: str) -> Decided:
        decision = replace(local, outcome="pending", reasons=(), citation=None, supply_limit=None)
        detail = (
            f"{self._head(local.dispense)} awaits a REMS decision: {why}. Do not dispense on it "
            "yet; the adapter asks again on its next run."
        )
        return Decided(decision, self._finding(decision, detail, ["pending"], None))
