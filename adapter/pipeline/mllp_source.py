"""The MLLP source: HL7 v2 ORU^R01 results into the durable inbox, with their ACKs.

    lab --MLLP--> MllpServer (adapter.mllp) --payload--> Receiver (adapter.hl7v2: parse, map)
        --mapped Observations--> GroupCommit --> Intake.receive (one durable transaction)
        --returned--> ACK AA (or CA) to the lab

- Deduplication: each mapped Observation is one inbox item keyed ``mllp:`` + MSH-3|MSH-4|MSH-10
  + its position, so a message sent again (same control id) is acknowledged again and has no
  second effect.
- The patient: PID-3 under the configured assigning authority is matched to the EHR's Patient
  by ``Patient?identifier=system|value``; exactly one match files the results under it. None,
  or several (never a guess), leaves them parked (stored, acknowledged ``AA``, counted by
  ``rems_adapter_mllp_unmatched``, listed by ``rems-adapter mllp unmatched``), and the matcher
  tries again until the patient appears, then they are decided. Matching never waits on the
  EHR before the ACK: a patient matched before is filed at once, others are parked and matched
  by the background pass (woken by each new parked result).
- Group commit: the connections' writes that wait together go in one transaction (one fsync),
  so throughput grows with concurrent senders while one sender waits for one fsync only.
- The mapped results are forwarded to the EHR like a FHIR push (``forward``), by their
  deterministic id, so a correction or a withdrawal updates the same Observation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import hl7.containers
import hl7.util
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapter.ehr import FhirClient
from adapter.errors import AdapterError, StateError, as_adapter_error
from adapter.hl7v2.oru import Options, OruMessage, PatientKey
from adapter.hl7v2.receive import Receiver
from adapter.hl7v2.tables import Hl7v2Tables
from adapter.mllp.server import Limits, MllpServer
from adapter.pipeline.intake import Arrival, Intake, Receipt, open_envelope
from adapter.store import InboxItem, Store

log = logging.getLogger("rems_adapter.mllp")

# python-hl7 logs the text of a field whose escape sequence it cannot decode (its loggers are
# named by file): field values belong to a person, so those loggers are silenced.
for _module in (hl7.util, hl7.containers):
    logging.getLogger(_module.__file__).disabled = True

SOURCE = "mllp"


# ------------------------------------------------------------------ group commit


class _Waiter:
    """One `submit` waiting for its transaction: `done` is held until the committer has set
    `receipts` or `error` (a bare lock: the cheapest hand-off between two threads)."""

    __slots__ = ("arrivals", "done", "error", "receipts")

    def __init__(self, arrivals: list[Arrival]) -> None:
        self.arrivals = arrivals
        self.done = threading.Lock()
        self.done.acquire()
        self.receipts: list[Receipt] = []
        self.error: BaseException | None = None


class GroupCommit:
    """One committer thread: what the connections hand it while it writes goes in the next
    transaction, together (one fsync for all of them). `submit` returns once its arrivals are
    durably stored, or raises (StateError: nothing is acknowledged).

    The hand-offs are bare locks, not queues and futures: a message costs one wake-up of its
    connection thread, and the committer is woken once per batch (only when it was idle)."""

    def __init__(
        self,
        receive: Callable[[Sequence[Arrival]], list[Receipt]],
        *,
        max_batch: int = 256,
        timeout: float = 30.0,
    ) -> None:
        self.receive = receive
        self.max_batch = max_batch
        self.timeout = timeout
        self._mutex = threading.Lock()
        #: held while the committer has nothing to do; released by a submit that finds it idle
        self._bell = threading.Lock()
        self._bell.acquire()
        self._idle = True
        self._pending: deque[_Waiter | None] = deque()  # None: stop once what precedes is done
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.submitted = 0

    @property
    def waiting(self) -> int:
        """Submissions waiting for the next transaction."""
        with self._mutex:
            return len(self._pending)

    def start(self) -> GroupCommit:
        self._thread = threading.Thread(target=self._run, name="mllp-commit", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._put(None)
            self._thread.join(timeout)
            self._thread = None

    def _put(self, waiter: _Waiter | None) -> None:
        with self._mutex:
            self._pending.append(waiter)
            ring, self._idle = self._idle, False
        if ring:
            self._bell.release()

    def submit(self, arrivals: Sequence[Arrival]) -> list[Receipt]:
        if self._thread is None:
            raise StateError("the MLLP source is not running")
        waiter = _Waiter(list(arrivals))
        self._put(waiter)
        if not waiter.done.acquire(timeout=self.timeout):
            raise StateError(f"the inbox write took over {self.timeout:g} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.receipts

    def _take(self) -> tuple[list[_Waiter], bool]:
        """What waits (up to max_batch), and whether a stop came after it; ([], False) when
        nothing does (the committer is idle from then on)."""
        batch: list[_Waiter] = []
        with self._mutex:
            pending = self._pending
            while pending and len(batch) < self.max_batch:
                waiter = pending.popleft()
                if waiter is None:
                    return batch, True
                batch.append(waiter)
            if not batch:
                self._idle = True
        return batch, False

    def _run(self) -> None:
        while True:
            self._bell.acquire()
            while True:
                batch, stopping = self._take()
                if batch:
                    self._commit(batch)
                if stopping:
                    return
                if not batch:
                    break  # idle: wait for the bell

    def _commit(self, batch: list[_Waiter]) -> None:
        everything = [arrival for waiter in batch for arrival in waiter.arrivals]
        try:
            receipts = self.receive(everything) if everything else []
        except BaseException as error:  # every waiter learns, none is acknowledged
            for waiter in batch:
                waiter.error = error
                waiter.done.release()
            return
        self.commits += 1
        self.submitted += len(batch)
        start = 0
        for waiter in batch:
            end = start + len(waiter.arrivals)
            waiter.receipts = receipts[start:end]
            start = end
            waiter.done.release()


# ------------------------------------------------------------------ patients


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
                log.warning("mllp: an identifier names several EHR Patients; left unmatched")
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
    """One parked MLLP result, for operators (`rems-adapter mllp unmatched`)."""

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


def _identifier(resource: dict[str, Any]) -> PatientKey | None:
    subject = resource.get("subject")
    identifier = subject.get("identifier") if isinstance(subject, dict) else None
    if isinstance(identifier, dict):
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and isinstance(value, str):
            return PatientKey(system, value)
    return None


def _parked(store: Store, limit: int) -> Iterator[tuple[InboxItem, dict[str, Any], PatientKey]]:
    for item in store.parked_items(limit):
        if item.source != SOURCE or item.body is None:
            continue
        resource, _ = open_envelope(item.body)
        key = _identifier(resource)
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
            "HL7 v2 results stored and acknowledged whose patient the EHR does not know yet "
            "(rems-adapter mllp unmatched)",
            value=count,
        )


# ------------------------------------------------------------------ the source


@dataclass
class MllpSettings:
    host: str
    port: int
    options: Options
    limits: Limits = field(default_factory=Limits)
    #: seconds between passes matching parked results to EHR Patients
    match_interval: float = 30.0
    #: bound of one pass (parked results read)
    match_batch: int = 1000
    #: seconds a pass waits after new parked results, so a burst is matched in one pass
    match_delay: float = 1.0


class MllpSource:
    """The listener, the group commit and the matcher of one `serve` process."""

    def __init__(
        self,
        intake: Intake,
        store: Store,
        tables: Hl7v2Tables,
        settings: MllpSettings,
        *,
        ehr: Callable[[], FhirClient] | None = None,
        registry: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.intake = intake
        self.store = store
        self.settings = settings
        self.matcher = PatientMatcher(ehr)
        self.commit = GroupCommit(intake.receive)
        self.receiver = Receiver(tables, settings.options, self._store)
        self.server = MllpServer(settings.host, settings.port, self, settings.limits)
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._matcher_thread: threading.Thread | None = None
        if registry is not None:
            registry.register(_UnmatchedGauge(store, settings.match_batch))

    # -- the handler MllpServer calls ------------------------------------------------------------

    def on_message(self, payload: bytes) -> bytes | None:
        reply = self.receiver(payload)
        if reply.outcome != "AA":
            log.info("mllp message %s: %s", reply.outcome, reply.reason)
        return reply.ack

    def on_bad_frame(self, reason: str, head: bytes) -> bytes | None:
        return self.receiver.bad_frame(reason, head).ack

    def _store(self, message: OruMessage) -> None:
        arrivals = []
        parked = False
        prefix = f"{SOURCE}:{message.header.key}#"
        matched: dict[PatientKey, str | None] = {}  # the results of a message share a patient
        for index, result in enumerate(message.results, start=1):
            if result.patient in matched:
                patient = matched[result.patient]
            else:
                patient = matched[result.patient] = self.matcher.known(result.patient)
            resource = result.observation
            if patient is not None:
                subject = {**resource["subject"], "reference": patient}
                resource = {**resource, "subject": subject}
            else:
                parked = True
            arrivals.append(
                Arrival(
                    resource, source=SOURCE, patient=patient, key=f"{prefix}{index}", forward=True
                )
            )
        if arrivals:
            self.commit.submit(arrivals)
        if parked and not self._wake.is_set():  # the matcher's pass is due already otherwise
            self._wake.set()

    # -- matching parked results ---------------------------------------------------------------

    def match_parked(self) -> int:
        """One pass: parked results whose patient the EHR now knows are filed under it; how
        many were. An EHR that cannot answer leaves them for the next pass."""
        groups: dict[PatientKey, list[InboxItem]] = {}
        for item, _, key in _parked(self.store, self.settings.match_batch):
            groups.setdefault(key, []).append(item)
        assigned = 0
        for key, items in groups.items():
            try:
                patient = self.matcher.lookup(key)
            except AdapterError as error:
                log.warning("mllp: matching parked results paused: %s", error.kind)
                return assigned
            if patient is not None:
                self.intake.assign([item.key for item in items], patient)
                assigned += len(items)
        return assigned

    def _match_loop(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.settings.match_interval)
            if woken:
                # new parked results come in bursts: one pass for the burst, not one each
                self._stop.wait(min(self.settings.match_delay, self.settings.match_interval))
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.matcher.ehr is None:
                continue
            try:
                self.match_parked()
            except Exception as error:  # the loop survives; logged by kind only
                log.error("mllp: matching failed: %s", as_adapter_error(error).kind)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> MllpSource:
        self.commit.start()
        try:
            self.server.start()
        except BaseException:
            self.commit.stop()
            raise
        self._stop.clear()
        self._wake.set()  # a first pass over what was parked before a restart
        self._matcher_thread = threading.Thread(
            target=self._match_loop, name="mllp-match", daemon=True
        )
        self._matcher_thread.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self._stop.set()
        self._wake.set()
        if self._matcher_thread is not None:
            self._matcher_thread.join(5)
        self.commit.stop()
        self.matcher.close()
