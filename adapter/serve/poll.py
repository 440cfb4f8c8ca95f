"""The poll source: the watch cycle's polling, feeding the pipeline.

The polling is `adapter.watch.Watcher`'s (watermarks kept as the server's raw strings minus an
overlap, keyset paging, versions seen once, Medications resolved, quarantine, undated results
dated by their report or specimen, per-patient mode, the state bound to its EHR and to the
settings' fingerprint, reconcile of our DetectedIssues deleted or changed on the server), on its
own cursor file (`watch.state`). What it does not do any more is decide: the patients a cycle
touched are handed to the pipeline's inbox with what the poll holds for them (deduplicated by
type, id and version), and the pipeline decides and writes, exactly as for a push.

One process polls at a time: the cycle runs under the store lease ``poll`` (several serve
processes on one PostgreSQL store share the work of deciding, not the polling).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from adapter.ehr import FhirError
from adapter.fhir.read import decision_identifier
from adapter.pipeline import Arrival, Intake
from adapter.pipeline.effects import ISSUE_CREATE, ISSUE_UPDATE
from adapter.store import Store
from adapter.store.base import OUTBOX_DONE
from adapter.watch.state import StateError as WatchStateError
from adapter.watch.state import StateStore, version_of
from adapter.watch.watcher import PATIENTS_PER_STEP, CycleReport, Watcher, where

log = logging.getLogger(__name__)

POLL_LEASE = "poll"
#: The cursor's watermark: the last pipeline effect whose write it has recorded.
SYNC_MARK = "pipeline-effects"


class PollSource(Watcher):
    """A Watcher whose decisions are the pipeline's."""

    def attach(self, intake: Intake) -> PollSource:
        self.intake = intake
        return self

    def cycle(self) -> CycleReport:
        self.learn_writes()
        return super().cycle()

    def learn_writes(self, limit: int = 10_000) -> int:
        """Record in the poll's cursor the DetectedIssues the pipeline wrote since last time (as
        watch recorded its own writes): the poll then knows them when they come back, and
        reconcile can restore one deleted or changed on the server."""
        pipeline = self.intake.store
        raw = self.store.watermark(SYNC_MARK)
        after = int(raw) if raw and raw.isdigit() else 0
        learnt = 0
        with self.store.step():
            for effect in pipeline.effects(OUTBOX_DONE, limit, after=after):
                after = effect.id
                if effect.kind not in (ISSUE_CREATE, ISSUE_UPDATE) or effect.patient is None:
                    continue
                rid = str(orjson.loads(effect.result or "{}").get("id") or "")
                resource = pipeline.resource("DetectedIssue", rid) if rid else None
                if resource is None:
                    continue
                identifier = decision_identifier(resource)
                self.store.upsert(resource, effect.patient, identifier)
                if identifier is not None:
                    self.store.record_decision(identifier, effect.patient, resource)
                learnt += 1
            if after:
                self.store.set_watermark(SYNC_MARK, str(after))
        return learnt

    def _decide(self, clock: datetime, report: CycleReport) -> None:
        patients = self.store.dirty()
        stamp = f"{time.time():.6f}"
        for start in range(0, len(patients), PATIENTS_PER_STEP):
            if self.stop():
                report.complete = False
                return
            chunk = patients[start : start + PATIENTS_PER_STEP]
            try:
                self._reconcile(chunk, report)
            except FhirError as error:
                log.warning(
                    "reconcile failed: %s; retried when these patients are next polled", error
                )
            arrivals: list[Arrival] = []
            handed: list[str] = []
            for patient in chunk:
                held = self._held_for(patient)
                if not report.redecided_all and not self._news(held):
                    continue  # what the pipeline wrote, coming back: nothing to decide
                handed.append(patient)
                for resource in held:
                    kind, rid = resource["resourceType"], resource["id"]
                    version, updated = version_of(resource)
                    key = f"poll:{kind}/{rid}/_history/{version}|{updated}"
                    arrivals.append(Arrival(resource, "poll", patient=patient, key=key))
            self.intake.receive(arrivals)
            # decided again even when nothing it holds is new (changed settings, a reconcile)
            self.intake.decide_again(handed, "poll", stamp)
            with self.store.step():
                self.store.clear_dirty(chunk)
            report.patients_decided += len(handed)

    def _news(self, held: list[dict[str, Any]]) -> bool:
        """Whether the pipeline's store lacks any of these versions."""
        pipeline = self.intake.store
        for resource in held:
            version = version_of(resource)
            if pipeline.held_version(resource["resourceType"], resource["id"]) != version:
                return True
        return False

    def _held_for(self, patient: str) -> list[dict[str, Any]]:
        held = self.store.patient_resources(patient)
        medications = set()
        for resource in held:
            try:
                flag, ref = self.reader.medication_of(resource)
            except Exception:  # unreadable: the pipeline reports it
                continue
            if flag is None and ref is not None and ref.startswith("Medication/"):
                medications.add(ref)
        for ref in sorted(medications):
            medication = self.store.resource("Medication", ref.removeprefix("Medication/"))
            if medication is not None:
                held.append(medication)
        return held


class PollJob:
    """Runs the poll cycle every `interval` seconds while holding the ``poll`` lease."""

    def __init__(
        self,
        source: PollSource,
        store: Store,
        interval: float,
        open_cursor: Callable[[], StateStore] | None = None,
    ) -> None:
        self.source = source
        self.store = store
        #: opens the poll's cursor file in the polling thread (sqlite3 objects stay in theirs)
        self.open_cursor = open_cursor
        self.interval = interval
        self.holder = f"poll-{uuid.uuid4().hex[:12]}"
        self.cycles = 0
        self.last: CycleReport | None = None
        self.failed: str | None = None

    def __call__(self, stopping: threading.Event) -> None:
        self.source.stop = stopping.is_set
        if self.open_cursor is not None:
            self.source.store = self.open_cursor()
        try:
            while not stopping.is_set():
                lease = max(self.interval * 3, 60.0)
                if self.store.acquire_lease(POLL_LEASE, self.holder, time.time(), lease):
                    self.once()
                stopping.wait(self.interval)
        except WatchStateError:
            return
        finally:
            self.store.release_lease(POLL_LEASE, self.holder)
            if self.open_cursor is not None:
                self.source.store.close()

    def once(self) -> CycleReport | None:
        try:
            report = self.source.cycle()
        except FhirError as error:
            log.error("poll: EHR request failed: %s; trying again next cycle", error)
            return None
        except WatchStateError as error:
            # the poll's cursor cannot be trusted: stop polling (loudly), never skip work
            log.error("poll stopped: %s", error)
            self.failed = str(error)
            raise
        except Exception as error:
            log.error("poll cycle failed: %s; trying again next cycle", where(error))
            return None
        self.cycles += 1
        self.last = report
        log.info("poll %s", report.summary())
        return report
