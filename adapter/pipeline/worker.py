"""The worker: claim a patient, gather what the rules need, decide, enqueue the effects.

One pass over one claimed patient:

1. gather (outside any transaction; EHR requests): pushed results are written to the EHR
   first (conditional create on their identifier), so the decision cites the EHR's own
   resource and its evidence resolves; a patient never seen is hydrated from the EHR (bounded
   searches, `adapter.pipeline.history`); Medications referenced and not held are read;
2. keep (one transaction): the gathered resources go into the store (`Keeper`);
3. decide (no transaction): the core evaluates the patient, the backend decides;
4. commit (one transaction): the effects (new DetectedIssues, withdrawals), the audit record,
   the patient's state and recheck date; the claimed items are marked done; the lease ends.

A failure of the EHR or the REMS while gathering or deciding leaves the items pending and keeps
the patient leased for a backoff delay: it is tried again then (by any worker). A crash at any
point leaves the items pending; the lease expires and the patient is decided again: replays
enqueue nothing new (effect keys), and the sinks' writes are idempotent.

Logging: counts, types and places only; never a patient reference, a value or a body.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from importlib import resources as package_files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from adapter import __version__
from adapter.core.evaluate import Context, Evaluation, evaluate_patient
from adapter.core.labs import keeps_release
from adapter.core.monitoring import Schedule
from adapter.core.reference import ReferenceData
from adapter.decide import Backend, Directory, Outcome
from adapter.ehr import FhirClient, FhirError, FhirNotFoundError, FhirServerError
from adapter.errors import AdapterError, UpstreamError
from adapter.fhir.collect import Collector, Located
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM, Reader, reference
from adapter.fhir.records import status_record
from adapter.fhir.values import read_instant_or_none
from adapter.fhir.write import AUTHOR_DEVICE, detected_issue, withdrawn_issue
from adapter.pipeline.effects import dispense_link, issue_create, issue_update
from adapter.pipeline.gather import Keeper, subject_of
from adapter.pipeline.history import HistoryLimits, patient_history
from adapter.pipeline.intake import open_envelope
from adapter.pipeline.metrics import Metrics
from adapter.store import AuditRecord, Claim, NewEffect, NewItem, Store
from adapter.store.sql import version_of

log = logging.getLogger(__name__)

#: Resources about a patient through `subject` (a source may file one under its patient).
SUBJECT_KINDS = frozenset(
    {
        "Observation",
        "DiagnosticReport",
        "Specimen",
        "MedicationDispense",
        "MedicationRequest",
        "Condition",
        "Flag",
    }
)

#: The identifier system given to a pushed result that has none (so that forwarding it to the
#: EHR is a conditional create, never a duplicate).
PUSHED_IDENTIFIER_SYSTEM = "https://rems-adapter.github.io/fhir/sid/pushed-result"


def where(error: BaseException) -> str:
    """An unexpected error as its type and innermost place: never its message, which may quote
    a value from a resource."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {frames[-1].name} ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})"
    return type(error).__name__ + (place if frames else "")


def mappings_version(folder: str | None) -> str:
    """A digest of the mappings in force (bundled files, overlaid by the site's folder)."""
    digest = hashlib.sha256()
    bundled = package_files.files("adapter.mappings")
    files = {
        entry.name: entry.read_bytes()
        for entry in bundled.iterdir()
        if entry.name.endswith(".toml")
    }
    if folder:
        for path in sorted(Path(folder).glob("*.toml")):
            files[path.name] = path.read_bytes()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class WorkerSettings:
    site_tz: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    derive_anc: bool = True
    #: a fixed evaluation clock (tests, replays); None: now at each decision
    as_of: datetime | None = None
    #: how long a claim lasts (a worker that dies is replaced after it)
    lease_seconds: float = 60.0
    #: read the history of a patient first seen (push, notify, mllp)
    hydrate: bool = True
    history: HistoryLimits = field(default_factory=HistoryLimits)
    #: write pushed results to the EHR before deciding
    forward: bool = True
    #: first backoff after an upstream failure, doubled each time up to `retry_max_seconds`
    retry_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    #: the Device our DetectedIssues name as author (`ensure_author_device`'s answer)
    author: str = AUTHOR_DEVICE
    #: point each new decision's MedicationDispense at it (`watch.link_dispense`)
    link_dispense: bool = False
    #: recorded in the audit with each decision
    mappings_version: str = field(default_factory=lambda: mappings_version(None))


class Worker:
    def __init__(
        self,
        store: Store,
        data: ReferenceData,
        backend: Backend,
        settings: WorkerSettings,
        *,
        ehr: FhirClient | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
        backend_lock: threading.Lock | None = None,
        effects_ready: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.data = data
        self.backend = backend
        self.settings = settings
        self.ehr = ehr
        self.metrics = metrics
        self.clock = clock
        self.holder = holder or f"worker-{uuid.uuid4().hex[:12]}"
        self.reader = Reader(data, settings.site_tz)
        self.keeper = Keeper(store, self.reader, self._read_medication)
        self._failures: dict[str, int] = {}
        # the backend is used by one thread at a time (workers of a process share the lock)
        self._lock = backend_lock or threading.Lock()
        self.effects_ready = effects_ready or threading.Event()

    # ------------------------------------------------------------------ the loop

    def run_once(self) -> bool:
        """Decide one patient if one is waiting; whether one was."""
        claim = self.store.claim_patient(self.holder, self.clock(), self.settings.lease_seconds)
        if claim is None:
            return False
        self.process(claim)
        return True

    def drain(self, limit: int = 100_000) -> int:
        """Decide waiting patients until none is left (or `limit`); how many were decided."""
        done = 0
        while done < limit and self.run_once():
            done += 1
        return done

    def process(self, claim: Claim) -> None:
        try:
            self._process(claim)
        except UpstreamError as error:
            system = "rems" if _is_rems(error) else "ehr"
            if self.metrics is not None:
                self.metrics.upstream_error(system)
            delay = self._backoff(claim.patient)
            log.warning(
                "%s unavailable while deciding a patient (%s); retrying in %.1f s",
                system.upper(),
                _brief(error),
                delay,
            )
            self.store.acquire_lease(claim.lease, self.holder, self.clock(), delay)
        except AdapterError as error:
            delay = self._backoff(claim.patient)
            log.error("deciding a patient failed: %s; retrying in %.1f s", error.kind, delay)
            self.store.acquire_lease(claim.lease, self.holder, self.clock(), delay)
        except Exception as error:
            # Logged without the patient or any value; the items stay pending and the patient
            # is decided again after the backoff (a fix to the data or the adapter then takes).
            delay = self._backoff(claim.patient)
            log.error("deciding a patient failed: %s; retrying in %.1f s", where(error), delay)
            self.store.acquire_lease(claim.lease, self.holder, self.clock(), delay)

    def _backoff(self, patient: str) -> float:
        count = self._failures.get(patient, 0)
        self._failures[patient] = count + 1
        base = min(self.settings.retry_seconds * (2**count), self.settings.retry_max_seconds)
        return float(base * (0.75 + 0.5 * random.random()))

    # ------------------------------------------------------------------ one patient

    def _process(self, claim: Claim) -> None:
        patient = claim.patient
        received_at = min(item.received_at for item in claim.items)
        arrived: list[dict[str, Any]] = []
        for item in claim.items:
            if item.body is None:
                continue
            resource, forward = open_envelope(item.body)
            if subject_of(resource) is None and resource.get("resourceType") in SUBJECT_KINDS:
                # filed under its patient by the source (matched, or assigned when parked)
                resource = {**resource, "subject": {"reference": patient}}
            if forward and self.settings.forward and self.ehr is not None:
                resource = self._forward(resource)
            arrived.append(resource)
        state = self.store.patient_state(patient) or {}
        history: list[dict[str, Any]] = []
        polled = all(item.source == "poll" for item in claim.items)  # it brings everything
        if not state.get("hydrated") and not polled and self.settings.hydrate and self.ehr:
            history = patient_history(
                self.ehr,
                self.data,
                patient,
                derive_anc=self.settings.derive_anc,
                limits=self.settings.history,
            )
        for resource in [*history, *arrived]:
            self._prefetch_medication(resource)
        with self.store.transaction():
            for resource in history:
                self.keeper.take(resource)
            for resource in arrived:
                taken = self.keeper.take(resource)
                if taken.problem is not None:
                    log.info("a received %s: %s", resource.get("resourceType"), taken.problem)
        now = self.clock()
        clock = self.settings.as_of or datetime.fromtimestamp(now, UTC).replace(microsecond=0)
        decided = self._decide(patient, clock)
        effects: list[NewEffect] = []
        if decided is not None:
            evaluation, outcome, collector = decided
            effects = self._effects(patient, outcome, collector, clock, received_at)
        with self.store.transaction():
            fresh = self.store.put_effects(effects, now) if effects else []
            record = self._audit(patient, now, decided, effects, fresh)
            self.store.append_audit(record)
            new_state: dict[str, Any] = {**state, "hydrated": True, "decidedAt": now}
            if decided is not None:
                evaluation = decided[0]
                new_state["onClozapine"] = evaluation.on_clozapine
                new_state["status"] = (
                    status_record(evaluation.status, clock) if evaluation.on_clozapine else None
                )
                recheck = self._recheck(evaluation)
                self.store.set_recheck(patient, recheck.isoformat() if recheck else None)
            self.store.set_patient_state(patient, new_state, now)
            self.store.complete_items(claim, [item.id for item in claim.items], now)
            pending = decided is not None and any(
                d.outcome == "pending" for d in decided[1].decisions
            )
            if pending:
                # the REMS could not be reached: the dispense is `pending` (its DetectedIssue
                # says so) and the patient is decided again after a backoff
                if self.metrics is not None:
                    self.metrics.upstream_error("rems")
                delay = self._backoff(patient)
                self.store.put_items(
                    [NewItem(f"rems-pending:{patient}:{now:.3f}", "recheck", patient, None, now)]
                )
                self.store.acquire_lease(claim.lease, self.holder, now, delay)
            else:
                self._failures.pop(patient, None)
                self.store.release_lease(claim.lease, self.holder)
        if any(fresh):
            self.effects_ready.set()
        if self.metrics is not None:
            for effect, new in zip(effects, fresh, strict=True):
                if new and effect.kind == "issue-create":
                    self.metrics.decided(_code_of(effect))

    def _read_medication(self, ref: str) -> dict[str, Any] | None:
        if self.ehr is None:
            return None
        try:
            return self.ehr.read("Medication", ref.removeprefix("Medication/"))
        except FhirNotFoundError:
            return None  # as in batch mode: unresolved is not clozapine

    def _prefetch_medication(self, resource: dict[str, Any]) -> None:
        if resource.get("resourceType") == "Medication":
            self.keeper.note_medication(resource)
            return
        if resource.get("resourceType") not in ("MedicationDispense", "MedicationRequest"):
            return
        try:
            flag, ref = self.reader.medication_of(resource)
        except Exception:  # unreadable: the keeper reports it
            return
        if flag is None and ref is not None:
            self.keeper.is_clozapine_medication(ref)

    def _forward(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Write a pushed result to the EHR (conditional create on its identifier); the EHR's
        copy (its id and version) is what the decision cites. A result the EHR refuses (4xx) is
        decided as received: a finding must not wait on a refused copy."""
        assert self.ehr is not None
        body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        token = _identifier_token(body)
        if token is None:
            digest = _digest(body)
            body["identifier"] = [
                *(body.get("identifier") or []),
                {"system": PUSHED_IDENTIFIER_SYSTEM, "value": digest},
            ]
            token = f"{PUSHED_IDENTIFIER_SYSTEM}|{digest}"
        try:
            written = self.ehr.create_if_none_exist(body, {"identifier": token})
            if not written.created and _superseded(written.resource, body):
                # the same result again, changed (corrected, amended, withdrawn): a new version
                # of the EHR's copy, so that the decisions made with the earlier one are re-made
                return self._supersede(written.resource, body)
        except FhirServerError as error:
            if error.status is not None and 400 <= error.status < 500:
                log.warning(
                    "the EHR refused a forwarded result (HTTP %s); decided as received",
                    error.status,
                )
                if not isinstance(resource.get("id"), str):
                    resource = {**resource, "id": f"pushed-{_digest(body)[:40]}"}
                return resource
            raise
        return written.resource

    def _supersede(self, held: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        assert self.ehr is not None
        meta = held.get("meta")
        version = meta.get("versionId") if isinstance(meta, dict) else None
        return self.ehr.update(
            {**body, "id": held["id"]},
            if_match_version=version if isinstance(version, str) else None,
        )

    def _decide(
        self, patient: str, clock: datetime
    ) -> tuple[Evaluation, Outcome, Collector] | None:
        context = Context(
            protocol=self.data.protocol,
            units=self.data.units,
            site_tz=self.settings.site_tz,
            clock=clock,
            derive_anc=self.settings.derive_anc,
        )
        collector = Collector(self.reader, clock)
        held = self.store.patient_resources(patient)
        medications: set[str] = set()
        for resource in held:
            try:
                flag, ref = self.reader.medication_of(resource)
            except Exception:
                continue
            if flag is None and ref is not None:
                medications.add(ref)
        for ref in sorted(medications):
            medication = self.store.resource("Medication", ref.removeprefix("Medication/"))
            if medication is not None:
                collector.add(Located(ref, medication))
        for resource in held:
            collector.add(Located(f"{resource['resourceType']}/{resource['id']}", resource))
        for problem in collector.problems:
            log.debug("input problem: %s", problem.message)  # FHIR path only, never values
        inputs = [item for item in collector.patients() if item.patient == patient]
        if not inputs:
            return None
        evaluation = evaluate_patient(inputs[0], context)
        identities = {
            f"{r['resourceType']}/{r['id']}": r
            for r in held
            if r.get("resourceType") in ("Patient", "Practitioner", "Organization")
        }
        directory = Directory(identities, collector.requesters())
        with self._lock:
            self.backend.start_run()
            outcome = self.backend.decide(evaluation, inputs[0], directory, clock)
        return evaluation, outcome, collector

    def _effects(
        self,
        patient: str,
        outcome: Outcome,
        collector: Collector,
        clock: datetime,
        received_at: float,
    ) -> list[NewEffect]:
        out: list[NewEffect] = []
        for finding in outcome.findings:
            if self.store.has_identifier(finding.identifier):
                continue  # decided before and on the server: a replay writes nothing
            resource = detected_issue(finding, self.data.finding_system, clock)
            if self.settings.author != AUTHOR_DEVICE:
                resource["author"] = {**resource["author"], "reference": self.settings.author}
            out.append(issue_create(patient, resource, finding.identifier, received_at))
            if self.settings.link_dispense:
                out += self._links(patient, resource, finding.identifier)
        for withdrawal in outcome.withdrawals:
            raw = collector.raw_issue(withdrawal.issue.ref)
            version = version_of(raw)[0] or None
            out.append(issue_update(patient, withdrawn_issue(raw, withdrawal), version, None))
        return out

    def _links(self, patient: str, resource: dict[str, Any], identifier: str) -> list[NewEffect]:
        """A link of each held MedicationDispense the new decision implicates (performed after
        the decision is on the EHR: effects of a patient run in order)."""
        out: list[NewEffect] = []
        for item in resource.get("implicated") or []:
            ref = reference(item)
            if not ref or not ref.startswith("MedicationDispense/"):
                continue
            if self.store.resource("MedicationDispense", ref.removeprefix("MedicationDispense/")):
                out.append(dispense_link(patient, ref, identifier))
        return out

    def _audit(
        self,
        patient: str,
        now: float,
        decided: tuple[Evaluation, Outcome, Collector] | None,
        effects: list[NewEffect],
        fresh: list[bool],
    ) -> AuditRecord:
        inputs = tuple(
            sorted(
                f"{r['resourceType']}/{r['id']}/_history/{version_of(r)[0] or '-'}"
                for r in self.store.patient_resources(patient)
                if r.get("resourceType") != "DetectedIssue"
            )
        )
        outcome: list[str] = []
        backend = self.backend.name
        if decided is None:
            outcome.append("not-on-clozapine-nothing-to-decide")
        else:
            _, result, _ = decided
            backend = result.backend
            outcome += [f"finding {f.code} {f.identifier}" for f in result.findings]
            outcome += [f"withdraw {w.issue.ref} {w.status}" for w in result.withdrawals]
            outcome += [f"dispense {d.dispense.ref} {d.outcome}" for d in result.decisions]
        written = sum(1 for new in fresh if new)
        return AuditRecord(
            patient=patient,
            at=now,
            backend=backend,
            rules_version=__version__,
            mappings_version=self.settings.mappings_version,
            inputs=inputs,
            outcome=tuple(outcome),
            extra={"effectsEnqueued": written, "effectsPlanned": len(effects)},
        )

    def _recheck(self, evaluation: Evaluation) -> date | None:
        """The first day the patient becomes overdue if nothing arrives: decide again then."""
        status = evaluation.status
        if not evaluation.on_clozapine or status.overdue:
            return None
        schedule = Schedule(self.data.protocol, status.hospice)
        due: date = schedule.current_until(status.next_due) + timedelta(days=1)
        return due


#: What makes a result received again a new version of it (status, value, collection time).
_RESULT_ELEMENTS = ("status", "dataAbsentReason", "value", "effective")


#: A later status never gives way to an earlier one when the reports do not say which is newer.
_STATUS_RANK = {
    "registered": 0,
    "preliminary": 1,
    "final": 2,
    "amended": 3,
    "corrected": 3,
    "cancelled": 4,
    "entered-in-error": 4,
}


def _superseded(held: dict[str, Any], received: dict[str, Any]) -> bool:
    """Whether `received` is a newer version of the result the EHR holds as `held` (same
    identifier): it changes the status, value or collection time, and is not older (by
    `issued` when both say, else by status: a late original never undoes a correction or a
    withdrawal)."""

    def result(resource: dict[str, Any]) -> dict[str, Any]:
        return {
            key: value
            for key, value in resource.items()
            if key == "status" or key.startswith(_RESULT_ELEMENTS[1:])
        }

    if result(held) == result(received):
        return False
    if keeps_release(received.get("status"), lambda: held.get("status")):
        return False  # a resend not yet released never replaces the released copy (core.labs)
    held_at = read_instant_or_none(held.get("issued"))
    received_at = read_instant_or_none(received.get("issued"))
    if held_at is not None and received_at is not None and held_at != received_at:
        return received_at > held_at
    rank = _STATUS_RANK.get(str(received.get("status")), 0)
    return rank >= _STATUS_RANK.get(str(held.get("status")), 0)


def _identifier_token(resource: dict[str, Any]) -> str | None:
    for item in resource.get("identifier") or []:
        if not isinstance(item, dict):
            continue
        system, value = item.get("system"), item.get("value")
        if isinstance(system, str) and isinstance(value, str) and system and value:
            return f"{system}|{value}"
    return None


def _digest(body: dict[str, Any]) -> str:
    import hashlib

    import orjson

    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _code_of(effect: NewEffect) -> str:
    import orjson

    resource = orjson.loads(effect.body)["resource"]
    coding = resource.get("code", {}).get("coding", [])
    return str(coding[-1].get("code")) if coding else "unknown"


def _is_rems(error: UpstreamError) -> bool:
    return not isinstance(error, FhirError) and "rems" in type(error).__module__


def _brief(error: AdapterError) -> str:
    if isinstance(error, FhirError):
        return f"HTTP {error.status}" if error.status else type(error).__name__
    return type(error).__name__


__all__ = ["DECISION_IDENTIFIER_SYSTEM", "Worker", "WorkerSettings", "subject_of", "where"]
