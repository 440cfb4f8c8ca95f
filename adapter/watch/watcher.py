"""One watch cycle: poll what changed, keep it, decide the patients it touched, write back.

Logging here is counts and timings only: never a patient reference, value or resource body.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from adapter import __version__
from adapter.core.calendar import local_date
from adapter.core.evaluate import Context, Evaluation, evaluate_patient
from adapter.core.monitoring import Schedule
from adapter.core.reference import ReferenceData
from adapter.ehr import (
    FhirClient,
    FhirError,
    FhirNotFoundError,
    FhirServerError,
    FhirTransientError,
)
from adapter.fhir.collect import Collector, Located
from adapter.fhir.read import (
    DECISION_IDENTIFIER_SYSTEM,
    FhirInputError,
    Reader,
    decision_identifier,
    reference,
    release_stands,
)
from adapter.fhir.write import AUTHOR_DEVICE, detected_issue, withdrawn_issue
from adapter.mappings_loader import MAPPING_FILES
from adapter.watch.config import EvaluationSettings, WatchSettings
from adapter.watch.queries import Query, later, poll_from, watch_queries
from adapter.watch.state import StateError, StateStore, instant_of, is_newer, version_of
from adapter.watch.writeback import (
    EhrFeatures,
    Write,
    Written,
    ehr_features,
    ensure_author_device,
    send,
)

log = logging.getLogger(__name__)

#: Patients decided and written back per durable step.
PATIENTS_PER_STEP = 200
#: Undated results whose DiagnosticReport / Specimen are looked up per cycle, and per search.
UNDATED_PER_CYCLE = 500
UNDATED_PER_SEARCH = 20
#: Our DetectedIssues read back per search when reconciling.
RECONCILE_PER_SEARCH = 50
#: The elements of a DetectedIssue the adapter owns; reconcile restores them, and leaves the
#: rest (a prescriber's `mitigation`, the server's `meta`) as the server holds it.
OWNED = (
    "identifier",
    "status",
    "code",
    "severity",
    "patient",
    "identifiedDateTime",
    "author",
    "implicated",
    "evidence",
    "detail",
)


def fingerprint(evaluation: EvaluationSettings) -> str:
    """Of everything a decision depends on besides the inputs and the clock: the adapter version,
    the mappings files in force (bundled or the site's), the time zone and derive_anc."""
    from importlib import resources

    digest = hashlib.sha256(f"{__version__}|{evaluation.site_tz}|{evaluation.derive_anc}".encode())
    for name in MAPPING_FILES:
        own = evaluation.mappings / name if evaluation.mappings is not None else None
        try:
            raw = (
                own.read_bytes()
                if own is not None and own.is_file()
                else resources.files("adapter.mappings").joinpath(name).read_bytes()
            )
        except OSError:
            raw = b""
        digest.update(name.encode() + b"\0" + hashlib.sha256(raw).digest())
    return digest.hexdigest()[:32]


@dataclass
class CycleReport:
    pages: int = 0
    resources_seen: int = 0
    new_versions: int = 0
    duplicates: int = 0
    new_anc: int = 0
    medications_read: int = 0
    patients_decided: int = 0
    issues_created: int = 0
    issues_existing: int = 0
    withdrawn: int = 0
    dispenses_linked: int = 0
    conflicts: int = 0
    write_errors: int = 0
    input_problems: int = 0
    #: resources that could not be read or kept (reported; their patient is still decided)
    quarantined: int = 0
    #: DetectedIssues deleted or changed on the server and restored from what was decided
    restored: int = 0
    #: DiagnosticReports / Specimens read to date results without an effective time
    collection_context_read: int = 0
    #: the mappings or settings changed since the state was written: every patient re-decided
    redecided_all: bool = False
    #: patients whose decision failed unexpectedly: contained, logged, decided again next cycle
    patient_errors: int = 0
    complete: bool = True
    seconds: float = 0.0
    per_query: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"cycle: {self.pages} pages, {self.new_versions} new versions "
            f"({self.new_anc} ANC results, {self.duplicates} already seen); "
            f"{self.patients_decided} patients decided; {self.issues_created} DetectedIssues "
            f"created ({self.issues_existing} already on the server), {self.withdrawn} withdrawn, "
            f"{self.dispenses_linked} dispenses linked; {self.conflicts} conflicts, "
            f"{self.write_errors} write errors, {self.input_problems} input problems, "
            f"{self.quarantined} resources quarantined, {self.patient_errors} patients failed "
            f"(retried next cycle); {self.restored} DetectedIssues restored; "
            + (
                "mappings or settings changed: every patient re-decided; "
                if self.redecided_all
                else ""
            )
            + f"{self.seconds:.2f}s"
            + ("" if self.complete else " (stopped early; more to do)")
        )


Resources = list[dict[str, Any]]


def _matches_and_includes(bundle: dict[str, Any]) -> tuple[Resources, Resources]:
    matches: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
            continue
        search = entry.get("search")
        mode = search.get("mode", "match") if isinstance(search, dict) else "match"
        (included if mode == "include" else matches).append(resource)
    return matches, included


def _has_next(bundle: dict[str, Any]) -> bool:
    links = bundle.get("link")
    return any(
        isinstance(link, dict) and link.get("relation") == "next"
        for link in (links if isinstance(links, list) else [])
    )


def where(error: BaseException) -> str:
    """An unexpected error as its type and innermost place: never its message, which may quote
    a value from a resource."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {frames[-1].name} ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})"
    return type(error).__name__ + (place if frames else "")


def _undated(resource: dict[str, Any]) -> bool:
    return not any(
        key in resource for key in ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
    )


def _owned_differ(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    return any(ours.get(key) != theirs.get(key) for key in OWNED)


def _storable(resource: dict[str, Any]) -> dict[str, Any]:
    """The top-level elements of `resource` the state file can hold (a value nested deeper than
    the serialiser allows is dropped; what the rules needed from it is then unreadable)."""
    kept: dict[str, Any] = {}
    for key, value in resource.items():
        try:
            orjson.dumps(value)
        except TypeError:
            continue
        kept[key] = value
    return kept


class Watcher:
    def __init__(
        self,
        client: FhirClient,
        store: StateStore,
        data: ReferenceData,
        watch: WatchSettings,
        evaluation: EvaluationSettings,
        *,
        stop: Callable[[], bool] = lambda: False,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        features: EhrFeatures | None = None,
        author: str | None = None,
        reconcile_all: bool = False,
    ) -> None:
        self.client = client
        self.store = store
        self.data = data
        self.settings = watch
        self.evaluation = evaluation
        self.stop = stop
        self.now = now
        self.reader = Reader(data, evaluation.site_tz)
        self.queries = watch_queries(data, evaluation.derive_anc, watch.use_include)
        self._medications: dict[str, bool] = {}
        self.features = features
        self.author = author
        self.reconcile_all = reconcile_all
        self._prepared = False
        self._redecided_all = False

    def prepare(self) -> None:
        """Once, before the first cycle: bind the state to this EHR and the fingerprint (another
        EHR: ForeignStateError, exit 3), read what the server allows for writes, and create the
        author Device. Errors propagate (the caller maps them to exit codes)."""
        if self._prepared:
            return
        self._redecided_all = self.store.bind(self.client.base_url, fingerprint(self.evaluation))
        if self._redecided_all:
            log.warning(
                "the mappings or settings changed since the state was written: every patient "
                "is decided again"
            )
        if self.features is None:
            self.features = ehr_features(self.client.capabilities())
            self.queries = watch_queries(
                self.data,
                self.evaluation.derive_anc,
                self.settings.use_include,
                self.features.issue_identifier_search,
            )
        if self.author is None:
            try:
                self.author = ensure_author_device(
                    self.client, __version__, self.features.create_mode
                )
            except FhirServerError as error:
                log.warning(
                    "the EHR refused to create the author Device (%s); the DetectedIssues name "
                    "it all the same",
                    error,
                )
                self.author = AUTHOR_DEVICE
        if self.reconcile_all:
            with self.store.step():
                self.store.mark_dirty(self.store.decided_patients())
        self._prepared = True

    @property
    def create_mode(self) -> str:
        return (self.features or EhrFeatures()).create_mode

    # ------------------------------------------------------------------ the cycle

    def cycle(self) -> CycleReport:
        started = time.monotonic()
        self.prepare()
        report = CycleReport(redecided_all=self._redecided_all)
        self._redecided_all = False
        clock = self.evaluation.as_of or self.now().replace(microsecond=0)
        self._medications = {}  # per-cycle cache: a Medication edited on the server is re-read
        for query in self._expanded_queries():
            if self.stop():
                report.complete = False
                break
            self._poll(query, report)
        if report.complete:
            self._date_undated(report)
        if report.complete:
            today = local_date(clock, self.evaluation.site_tz)
            with self.store.step():
                self.store.mark_dirty(self.store.due_rechecks(today))
            self._decide(clock, report)
        report.seconds = time.monotonic() - started
        return report

    def _expanded_queries(self) -> list[Query]:
        patients = list(self.settings.patients)
        if self.settings.group is not None:
            patients = self._group_members(self.settings.group)
        if not patients and self.settings.group is None:
            return list(self.queries)
        # DetectedIssues polled without any search parameter (the server has none for them):
        # one global query; ours are recognised locally and carry their patient
        shared = [q for q in self.queries if q.resource_type == "DetectedIssue" and not q.params]
        scoped = [q for q in self.queries if q not in shared]
        return shared + [query.for_patient(patient) for patient in patients for query in scoped]

    def _group_members(self, group: str) -> list[str]:
        resource = self.client.read("Group", group.removeprefix("Group/"))
        members = []
        for member in resource.get("member") or []:
            if isinstance(member, dict) and member.get("inactive") is True:
                continue
            ref = reference(member.get("entity") if isinstance(member, dict) else None)
            if ref and ref.startswith("Patient/"):
                members.append(ref)
        return sorted(set(members))

    # ------------------------------------------------------------------ polling

    def _pages(self, query: Query, since: str | None) -> Generator[dict[str, Any], None, None]:
        params = [*query.params, ("_sort", "_lastUpdated")]
        if since is not None:
            params.append(("_lastUpdated", f"ge{since}"))
        return self.client.search_pages(
            query.resource_type,
            params,
            include=query.include,
            count=self.settings.page_size,
            max_pages=self.settings.max_pages_per_cycle,
        )

    def _poll(self, query: Query, report: CycleReport) -> None:
        watermark = self.store.watermark(query.key)
        sent = poll_from(watermark, self.settings.overlap_seconds)
        pages = self._pages(query, sent)
        polled = 0
        try:
            while True:
                bundle = next(pages, None)
                if bundle is None:
                    break
                polled += 1
                report.pages += 1
                watermark = self._take_page(query, bundle, watermark, report)
                if self.stop() or polled >= self.settings.max_pages_per_cycle:
                    report.complete = not _has_next(bundle)
                    break
                if not _has_next(bundle):
                    break
                if watermark is not None and later(watermark, sent):
                    # keyset paging: ask again from the newest instant seen rather than trust
                    # offset links over a result set that moves as resources are updated
                    pages.close()
                    sent = watermark
                    pages = self._pages(query, sent)
                # else every resource on the page shares the bound instant: follow `next`
        finally:
            pages.close()
        report.per_query[query.name] = report.per_query.get(query.name, 0) + polled

    def _take_page(
        self, query: Query, bundle: dict[str, Any], watermark: str | None, report: CycleReport
    ) -> str | None:
        matches, included = _matches_and_includes(bundle)
        for resource in included:
            if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
                self._medications[f"Medication/{resource['id']}"] = (
                    self.reader.medication_is_clozapine(resource)
                )
        self._resolve_medications(matches, report)
        touched: set[str] = set()
        newest = watermark
        with self.store.step():
            for resource in included:
                self._take_safely(resource, touched, report)
            for resource in matches:
                self._take_safely(resource, touched, report)
                raw = version_of(resource)[1]
                if raw and instant_of(raw) is not None and later(raw, newest):
                    newest = raw
            if newest is not None and newest != watermark:
                self.store.set_watermark(query.key, newest)
            self.store.mark_dirty(touched)
        return newest

    def _resolve_medications(self, resources: list[dict[str, Any]], report: CycleReport) -> None:
        """Medications referenced by dispenses/requests and not known yet: read once per cycle."""
        for resource in resources:
            if resource.get("resourceType") not in ("MedicationDispense", "MedicationRequest"):
                continue
            flag, ref = self.reader.medication_of(resource)
            if flag is not None or ref is None or ref in self._medications:
                continue
            held = self.store.resource("Medication", ref.removeprefix("Medication/"))
            if held is not None:
                self._medications[ref] = self.reader.medication_is_clozapine(held)
                continue
            kind, _, rid = ref.partition("/")
            if kind != "Medication" or not rid or "/" in rid:
                self._medications[ref] = False
                continue
            try:
                medication = self.client.read("Medication", rid)
            except FhirNotFoundError:
                self._medications[ref] = False  # as in batch mode: unresolved is not clozapine
                continue
            report.medications_read += 1
            self._medications[ref] = self.reader.medication_is_clozapine(medication)
            with self.store.step():
                self.store.upsert(medication, None)

    def _take_safely(
        self, resource: dict[str, Any], touched: set[str], report: CycleReport
    ) -> None:
        """Keep one polled resource; one that cannot be read or kept is quarantined (counted,
        logged by type and FHIR path, its patient still decided) and never stops the page."""
        kind, rid = resource.get("resourceType"), resource.get("id")
        version = version_of(resource)
        known = isinstance(kind, str) and isinstance(rid, str) and bool(rid)
        if known and self.store.quarantined(str(kind), str(rid), version):
            report.duplicates += 1  # this version was quarantined and reported already
            return
        try:
            self._take(resource, touched, report)
        except Exception as error:
            if known:
                self.store.quarantine(str(kind), str(rid), version)
            report.quarantined += 1
            kind = resource.get("resourceType")
            what = str(error) if isinstance(error, FhirInputError) else where(error)
            log.warning("quarantined a %s: %s", kind if isinstance(kind, str) else "?", what)
            self._quarantine(resource, touched)

    def _quarantine(self, resource: dict[str, Any], touched: set[str]) -> None:
        """Hold what can be held of it under its patient: deciding the patient then reports it
        again and, for an ANC result, writes `anc-unevaluable`."""
        kind, rid = resource.get("resourceType"), resource.get("id")
        element = "patient" if kind == "DetectedIssue" else "subject"
        patient = reference(resource.get(element))
        if not isinstance(kind, str) or not isinstance(rid, str) or not rid:
            return
        if patient is None or not patient.startswith("Patient/"):
            return
        try:
            self.store.upsert(_storable(resource), patient, None)
        except Exception as error:
            log.warning("could not hold a quarantined %s: %s", kind, where(error))
            return
        touched.add(patient)

    def _take(self, resource: dict[str, Any], touched: set[str], report: CycleReport) -> None:
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind, str) or not isinstance(rid, str) or not rid:
            report.input_problems += 1
            return
        report.resources_seen += 1
        version = version_of(resource)
        held = self.store.held_version(kind, rid)
        if held is not None and not is_newer(version, held):
            report.duplicates += 1
            return
        if held is not None and release_stands(resource, lambda: self.store.resource(kind, rid)):
            report.duplicates += 1
            return
        relevant, patient, identifier = self._classify(resource, report)
        if relevant:
            self.store.upsert(resource, patient, identifier)
            report.new_versions += 1
            if patient is not None:
                touched.add(patient)
            if kind == "Observation" and self.reader.lab_role(resource) == "anc":
                report.new_anc += 1
            if kind == "Observation" and patient is not None and _undated(resource):
                # kept in the same step as the result: a crash before it is dated loses nothing
                self.store.add_undated(rid, patient, reference(resource.get("specimen")))
        elif held is not None:
            # it was relevant and no longer is (recoded, another drug): forget it, re-decide
            previous = self.store.resource(kind, rid)
            self.store.delete(kind, rid)
            subject = reference((previous or {}).get("subject") or (previous or {}).get("patient"))
            if subject:
                touched.add(subject)

    def _classify(
        self, resource: dict[str, Any], report: CycleReport
    ) -> tuple[bool, str | None, str | None]:
        """(keep it, its patient, our decision identifier if it is one of our DetectedIssues)."""
        kind = resource["resourceType"]
        if kind == "Medication":
            return True, None, None
        element = "patient" if kind == "DetectedIssue" else "subject"
        patient = reference(resource.get(element))
        if kind == "Observation":
            relevant = self.reader.lab_role(resource) not in (None, "not-anc")
        elif kind in ("MedicationDispense", "MedicationRequest"):
            flag, ref = self.reader.medication_of(resource)
            relevant = flag if flag is not None else self._medications.get(ref or "", False)
        elif kind in ("Condition", "Flag"):
            relevant = self.reader.designation_coded(resource)
        elif kind == "DetectedIssue":
            identifier = decision_identifier(resource)
            if identifier is None:
                return False, None, None
            return patient is not None, patient, identifier
        else:
            return False, None, None
        if relevant and (patient is None or not patient.startswith("Patient/")):
            report.input_problems += 1  # relevant but about no patient: nothing to decide
            return False, None, None
        return relevant, patient, None

    # ------------------------------------------------------------------ collection context

    def _date_undated(self, report: CycleReport) -> None:
        """Results without an effective time: read the DiagnosticReports that list them
        (``DiagnosticReport?result=``) and the Specimens they or those reports name, and keep
        them under the patient, so the collector dates the result as batch mode does
        (adapter.fhir.read.collection_time). Bounded: UNDATED_PER_CYCLE results, one search per
        UNDATED_PER_SEARCH of them, one read per Specimen."""
        pending = self.store.undated(UNDATED_PER_CYCLE)
        if not pending:
            return
        specimens: dict[str, str] = {}
        done: list[tuple[str, str, str | None]] = []
        for start in range(0, len(pending), UNDATED_PER_SEARCH):
            chunk = pending[start : start + UNDATED_PER_SEARCH]
            patient_of = {f"Observation/{rid}": patient for rid, patient, _ in chunk}
            try:
                found = self.client.search(
                    "DiagnosticReport",
                    [("result", ",".join(patient_of))],
                    count=100,
                    max_pages=2,
                )
            except FhirTransientError as error:
                # kept for the next cycle (an outage must not leave them undated for good)
                log.warning("could not read the DiagnosticReports of undated results: %s", error)
                continue
            except FhirError as error:
                # the server cannot answer this search: the results stay unevaluable
                log.warning("cannot search the DiagnosticReports of undated results: %s", error)
                done += chunk
                continue
            done += chunk
            specimens.update({spec: patient for _, patient, spec in chunk if spec})
            with self.store.step():
                for item in found.matches:
                    if item.get("resourceType") != "DiagnosticReport" or not item.get("id"):
                        continue
                    owners = [
                        patient_of[ref]
                        for result in item.get("result") or []
                        if (ref := reference(result)) in patient_of
                    ]
                    if not owners:
                        continue
                    self.store.upsert(item, owners[0])
                    report.collection_context_read += 1
                    for spec in item.get("specimen") or []:
                        if (ref := reference(spec)) and ref.startswith("Specimen/"):
                            specimens.setdefault(ref, owners[0])
        for ref, patient in sorted(specimens.items()):
            rid = ref.removeprefix("Specimen/")
            if not ref.startswith("Specimen/") or self.store.held_version("Specimen", rid):
                continue
            try:
                specimen = self.client.read("Specimen", rid)
            except (FhirNotFoundError, ValueError):
                continue
            except FhirError as error:
                log.warning("could not read the Specimen of an undated result: %s", error)
                continue
            with self.store.step():
                self.store.upsert(specimen, patient)
            report.collection_context_read += 1
        with self.store.step():
            # looked up once; the patients were marked when the results arrived (same cycle)
            # or are marked now, so they are decided with what was found
            self.store.clear_undated(rid for rid, _, _ in done)
            self.store.mark_dirty({patient for _, patient, _ in done})

    # ------------------------------------------------------------------ reconcile

    def _reconcile(self, patients: list[str], report: CycleReport) -> None:
        """Restore our DetectedIssues that were deleted or changed on the server from what the
        adapter decided (the state's `decisions`): a deleted one is created again, a changed
        one gets the adapter's elements back (If-Match on the server's version; the elements
        others may add, such as a prescriber's mitigation, are kept)."""
        decided = self.store.decisions_of(patients)
        if not decided:
            return
        ids = sorted({str(ours["id"]) for _, _, ours in decided})
        on_server: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), RECONCILE_PER_SEARCH):
            chunk = ids[start : start + RECONCILE_PER_SEARCH]
            found = self.client.search(
                "DetectedIssue", [("_id", ",".join(chunk))], count=len(chunk), max_pages=2
            )
            for item in found.matches:
                if item.get("resourceType") == "DetectedIssue" and isinstance(item.get("id"), str):
                    on_server[item["id"]] = item
        writes: list[Write] = []
        for identifier, patient, ours in decided:
            theirs = on_server.get(str(ours["id"]))
            mine = {k: v for k, v in ours.items() if k != "meta"}
            if theirs is None:
                token = f"{DECISION_IDENTIFIER_SYSTEM}|{identifier}"
                writes.append(Write(patient, mine, condition=token))
            elif _owned_differ(ours, theirs):
                restored = {k: v for k, v in theirs.items() if k not in OWNED}
                restored.update({k: ours[k] for k in OWNED if k in ours})
                version = version_of(theirs)[0] or None
                writes.append(Write(patient, restored, if_match=version))
            else:
                continue
        if not writes:
            return
        written = self._send(writes)
        with self.store.step():
            for result in written:
                if result.ok and result.resource is not None:
                    resource = result.resource
                    restored_id = decision_identifier(resource)
                    self.store.upsert(resource, result.write.patient, restored_id)
                    if restored_id is not None:
                        self.store.record_decision(restored_id, result.write.patient, resource)
                    report.restored += 1
                else:
                    self._refused(result, report)
        log.info("reconcile: %d DetectedIssues restored", report.restored)

    def _send(self, writes: list[Write]) -> list[Written]:
        return send(
            self.client,
            writes,
            use_bundles=self.settings.use_bundles,
            batch_size=self.settings.write_batch_size,
            create_mode=self.create_mode,
        )

    # ------------------------------------------------------------------ deciding

    def _context(self, clock: datetime) -> Context:
        return Context(
            protocol=self.data.protocol,
            units=self.data.units,
            site_tz=self.evaluation.site_tz,
            clock=clock,
            derive_anc=self.evaluation.derive_anc,
        )

    def _decide(self, clock: datetime, report: CycleReport) -> None:
        context = self._context(clock)
        patients = self.store.dirty()
        for start in range(0, len(patients), PATIENTS_PER_STEP):
            if self.stop():
                report.complete = False
                return
            chunk = patients[start : start + PATIENTS_PER_STEP]
            writes: list[Write] = []
            rechecks: dict[str, Any] = {}
            failed: set[str] = set()
            try:
                self._reconcile(chunk, report)
            except FhirError as error:
                # the decisions still go ahead; the next decision of these patients (or
                # `watch --reconcile`) tries again
                log.warning(
                    "reconcile failed: %s; retried when these patients are next decided", error
                )
            for patient in chunk:
                try:
                    evaluation, collector = self._evaluate(patient, context, report)
                    if evaluation is None:
                        rechecks[patient] = None
                        report.patients_decided += 1
                        continue
                    planned = self._writes(evaluation, collector, clock, writes)
                    recheck = self._recheck(evaluation)
                except StateError:
                    raise  # the state store itself is broken: stop (exit 5), never skip work
                except Exception as error:
                    # Logged without the patient or any value; the patient stays marked and is
                    # decided again next cycle (a fix to the data or the adapter then takes).
                    report.patient_errors += 1
                    failed.add(patient)
                    log.error("deciding a patient failed: %s; retried next cycle", where(error))
                    continue
                report.patients_decided += 1
                writes += planned
                rechecks[patient] = recheck
            written = self._send(writes)
            links = self._links(written) if self.settings.link_dispense else []
            linked = self._send([w for w, _ in links]) if links else []
            with self.store.step():
                for result in written:
                    self._record(result, report)
                for result, (_, base) in zip(linked, links, strict=True):
                    if result.ok and result.resource is not None:
                        self.store.upsert(result.resource, result.write.patient, None, base)
                        report.dispenses_linked += 1
                    else:
                        self._refused(result, report)
                for patient, due in rechecks.items():
                    self.store.set_recheck(patient, due)
                # A refused decision is not dropped: its patient is decided again next cycle,
                # after the poll has brought whatever changed on the server (a 412).
                refused = {result.write.patient for result in written if not result.ok}
                self.store.clear_dirty([p for p in chunk if p not in refused | failed])

    def _evaluate(
        self, patient: str, context: Context, report: CycleReport
    ) -> tuple[Evaluation | None, Collector]:
        collector = Collector(self.reader, context.clock)
        held = self.store.patient_resources(patient)
        medications = set()
        for resource in held:
            flag, ref = self.reader.medication_of(resource)
            if flag is None and ref is not None:
                medications.add(ref)
        for ref in sorted(medications):
            medication = self.store.resource("Medication", ref.removeprefix("Medication/"))
            if medication is not None:
                collector.add(Located(ref, medication))
        for resource in held:
            collector.add(Located(f"{resource['resourceType']}/{resource['id']}", resource))
        report.input_problems += len(collector.problems)
        for problem in collector.problems:
            log.debug("input problem: %s", problem.message)  # FHIR path only, never values
        inputs = [item for item in collector.patients() if item.patient == patient]
        if not inputs:
            return None, collector
        return evaluate_patient(inputs[0], context), collector

    def _writes(
        self,
        evaluation: Evaluation,
        collector: Collector,
        clock: datetime,
        planned: list[Write],
    ) -> list[Write]:
        out: list[Write] = []
        seen = {w.condition for w in planned}
        for finding in evaluation.findings:
            token = f"{DECISION_IDENTIFIER_SYSTEM}|{finding.identifier}"
            if token in seen or self.store.has_identifier(finding.identifier):
                continue  # decided before (here or on the server): a replay writes nothing
            seen.add(token)
            resource = detected_issue(finding, self.data.finding_system, clock)
            if self.author is not None and self.author != AUTHOR_DEVICE:
                resource["author"] = {**resource["author"], "reference": self.author}
            out.append(Write(evaluation.patient, resource, condition=token))
        for withdrawal in evaluation.withdrawals:
            raw = collector.raw_issue(withdrawal.issue.ref)
            version = version_of(raw)[0] or None
            out.append(
                Write(evaluation.patient, withdrawn_issue(raw, withdrawal), if_match=version)
            )
        return out

    def _recheck(self, evaluation: Evaluation) -> Any:
        """The first day the patient becomes overdue if nothing arrives: decide again then."""
        status = evaluation.status
        if not evaluation.on_clozapine or status.overdue:
            return None
        schedule = Schedule(self.data.protocol, status.hospice)
        return schedule.current_until(status.next_due) + timedelta(days=1)

    def _record(self, result: Written, report: CycleReport) -> None:
        if not result.ok or result.resource is None:
            self._refused(result, report)
            return
        resource = result.resource
        identifier = decision_identifier(resource)
        self.store.upsert(resource, result.write.patient, identifier)
        if identifier is not None:
            self.store.record_decision(identifier, result.write.patient, resource)
        if not result.write.is_create:
            report.withdrawn += 1
        elif result.status == 201:
            report.issues_created += 1
        else:
            report.issues_existing += 1

    @staticmethod
    def _refused(result: Written, report: CycleReport) -> None:
        if result.status in (409, 412):
            # changed on the server since we read it: the new version arrives with the next poll
            # and the patient is decided again then
            report.conflicts += 1
        else:
            report.write_errors += 1
            log.warning(
                "the server refused a %s %s (HTTP %s)",
                "create of a" if result.write.is_create else "update of a",
                result.write.resource.get("resourceType"),
                result.status,
            )

    def _links(self, written: list[Written]) -> list[tuple[Write, str | None]]:
        """MedicationDispense updates pointing `detectedIssue` at the new decision."""
        out: list[tuple[Write, str | None]] = []
        for result in written:
            resource = result.resource
            if not result.ok or resource is None or not result.write.is_create:
                continue
            implicated = [
                ref
                for item in resource.get("implicated") or []
                if (ref := reference(item)) and ref.startswith("MedicationDispense/")
            ]
            for ref in implicated:
                rid = ref.removeprefix("MedicationDispense/")
                dispense = self.store.resource("MedicationDispense", rid)
                if dispense is None:
                    continue
                own = f"DetectedIssue/{resource['id']}"
                links = [
                    item
                    for item in dispense.get("detectedIssue") or []
                    if not self._is_ours(reference(item))
                ]
                if any(reference(item) == own for item in dispense.get("detectedIssue") or []):
                    continue
                updated = {**dispense, "detectedIssue": [*links, {"reference": own}]}
                version = version_of(dispense)[0] or None
                base = self.store.base_version("MedicationDispense", rid) or version
                out.append((Write(result.write.patient, updated, if_match=version), base))
        return out

    def _is_ours(self, ref: str | None) -> bool:
        if not ref or not ref.startswith("DetectedIssue/"):
            return False
        held = self.store.resource("DetectedIssue", ref.removeprefix("DetectedIssue/"))
        return held is not None


__all__ = ["CycleReport", "Watcher", "where"]
