"""Results parked until their patient is known: matched to the EHR's Patient by identifier.

A result that names its patient only by an identifier (an HL7 v2 PID-3, or a pushed FHIR
Observation whose subject is a logical reference or a Bundle's Patient entry without an id) is
stored and acknowledged, then parked: never filed under a patient by guess. `ParkedMatching`
asks the EHR (``Patient?identifier=system|value``) now and then, and on every new parked result;
exactly one Patient carrying that identifier files the results under it and they are decided.
None, or several, leaves them parked (`rems_adapter_mllp_unmatched`, `rems-adapter mllp
unmatched`) for the next pass.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapter.ehr import FhirClient
from adapter.errors import AdapterError, as_adapter_error
from adapter.hl7v2.oru import PatientKey
from adapter.pipeline.intake import Intake, open_envelope
from adapter.store import InboxItem, Store

log = logging.getLogger("rems_adapter.matching")

#: The sources whose parked results are matched by identifier (the others name their patient).
MATCHED_SOURCES = frozenset({"mllp", "push"})
#: The key of `ServeContext.extras` under which serve's matching pass takes its wake-up call.
WAKE_MATCHING = "wake-matching"


class PatientMatcher:
    """PID-3 -> ``Patient/id`` by the EHR's ``Patient?identifier=system|value``: exactly one
    Patient, or nothing (none, or several: never a guess). Matches are remembered (bounded)."""

    def __init__(self, ehr: Callable[[], FhirClient] | None, cache_size: int = 100_000) -> None:
        self.ehr = ehr
        self.cache_size = cache_size
        self._cache: OrderedDict[PatientKey, str] = OrderedDict()
        self._lock = threading.Lock()
        self._client: FhirClient | None = None

    def known(self, key: PatientKey) -> str | None:
        """A match found before (no I/O: the ACK path)."""
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
            return found

    def lookup(self, key: PatientKey) -> str | None:
        """Ask the EHR (raises UpstreamError when it cannot answer)."""
        found = self.known(key)
        if found is not None or self.ehr is None:
            return found
        if self._client is None:
            self._client = self.ehr()
        result = self._client.search(
            "Patient", {"identifier": f"{key.system}|{key.value}"}, count=2, max_pages=1
        )
        # only Patients that carry the identifier count: a server that ignored the search
        # parameter and answered with its only Patient must not turn into a guess
        ids = {
            resource["id"]
            for resource in result.matches
            if resource.get("resourceType") == "Patient"
            and isinstance(resource.get("id"), str)
            and _has_identifier(resource, key)
        }
        if len(ids) != 1:
            if len(ids) > 1:
                log.warning("matching: an identifier names several EHR Patients; left unmatched")
            return None
        patient = f"Patient/{ids.pop()}"
        with self._lock:
            self._cache[key] = patient
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return patient

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# ------------------------------------------------------------------ unmatched results


@dataclass(frozen=True)
class Unmatched:
    """One parked result, for operators (`rems-adapter mllp unmatched`)."""

    key: str
    received_at: float
    identifier_system: str
    identifier_value: str
    code: str


def _has_identifier(patient: dict[str, Any], key: PatientKey) -> bool:
    return any(
        isinstance(item, dict)
        and item.get("system") == key.system
        and item.get("value") == key.value
        for item in patient.get("identifier") or []
    )


def identifier_key(resource: dict[str, Any]) -> PatientKey | None:
    """The patient a result names by identifier only (``subject.identifier``), if it does."""
    subject = resource.get("subject")
    identifier = subject.get("identifier") if isinstance(subject, dict) else None
    if isinstance(identifier, dict):
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and isinstance(value, str):
            return PatientKey(system, value)
    return None


def _parked(store: Store, limit: int) -> Iterator[tuple[InboxItem, dict[str, Any], PatientKey]]:
    for item in store.parked_items(limit):
        if item.source not in MATCHED_SOURCES or item.body is None:
            continue
        resource, _ = open_envelope(item.body)
        key = identifier_key(resource)
        if key is not None:
            yield item, resource, key


def unmatched(store: Store, limit: int = 1000) -> list[Unmatched]:
    out = []
    for item, resource, key in _parked(store, limit):
        codings = (resource.get("code") or {}).get("coding") or [{}]
        out.append(
            Unmatched(item.key, item.received_at, key.system, key.value, codings[0].get("code", ""))
        )
    return out


class _UnmatchedGauge(Collector):
    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = sum(1 for _ in _parked(self.store, self.limit))
        except AdapterError:
            return
        yield GaugeMetricFamily(
            "rems_adapter_mllp_unmatched",
            "results stored and acknowledged (HL7 v2, or pushed naming their patient by "
            "identifier) whose patient the EHR does not know yet (rems-adapter mllp unmatched)",
            value=count,
        )


@dataclass
class MatchingSettings:
    #: seconds between passes
    interval: float = 30.0
    #: bound of one pass (parked results read)
    batch: int = 1000
    #: seconds a pass waits after a new parked result, so a burst is matched in one pass
    delay: float = 1.0


class ParkedMatching:
    """The background pass that files parked results under their patient once the EHR knows
    it: every `interval` seconds, and soon after `wake` (a new parked result)."""

    def __init__(
        self,
        intake: Intake,
        store: Store,
        settings: MatchingSettings,
        *,
        ehr: Callable[[], FhirClient] | None = None,
        registry: Any = None,
    ) -> None:
        self.intake = intake
        self.store = store
        self.settings = settings
        self.matcher = PatientMatcher(ehr)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(_UnmatchedGauge(store, settings.batch))

    def wake(self) -> None:
        """A result was parked: a pass is due soon (one for a burst)."""
        if not self._wake.is_set():
            self._wake.set()

    def match_parked(self) -> int:
        """One pass: parked results whose patient the EHR now knows are filed under it; how
        many were. An EHR that cannot answer leaves them for the next pass."""
        groups: dict[PatientKey, list[InboxItem]] = {}
        for item, _, key in _parked(self.store, self.settings.batch):
            groups.setdefault(key, []).append(item)
        assigned = 0
        for key, items in groups.items():
            try:
                patient = self.matcher.lookup(key)
            except AdapterError as error:
                log.warning("matching parked results paused: %s", error.kind)
                return assigned
            if patient is not None:
                self.intake.assign([item.key for item in items], patient)
                assigned += len(items)
        return assigned

    def _loop(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.settings.interval)
            if woken:
                self._stop.wait(min(self.settings.delay, self.settings.interval))
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.matcher.ehr is None:
                continue
            try:
                self.match_parked()
            except Exception as error:  # the loop survives; logged by kind only
                log.error("matching failed: %s", as_adapter_error(error).kind)

    def start(self) -> ParkedMatching:
        self._stop.clear()
        self._wake.set()  # a first pass over what was parked before a restart
        self._thread = threading.Thread(target=self._loop, name="match-parked", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.matcher.close()
