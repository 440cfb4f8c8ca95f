"""The MLLP source: HL7 v2 ORU^R01 results into the durable inbox, with their ACKs.

    lab --MLLP--> MllpServer (adapter.mllp) --payload--> Receiver (adapter.hl7v2: parse, map)
        --mapped Observations--> GroupCommit --> Intake.receive (one durable transaction)
        --returned--> ACK AA to the lab

- Deduplication: each mapped Observation is one inbox item keyed ``mllp:`` + MSH-3|MSH-4|MSH-10
  + its position, so a message sent again (same control id) is acknowledged again and has no
  second effect.
- The patient: PID-3 under the configured assigning authority is matched to the EHR's Patient
  by ``Patient?identifier=system|value`` (`adapter.pipeline.matching`); exactly one match files
  the results under it. None, or several (never a guess), leaves them parked (stored,
  acknowledged ``AA``, counted by ``rems_adapter_mllp_unmatched``, listed by ``rems-adapter mllp
  unmatched``), and the matcher tries again until the patient appears, then they are decided.
  Matching never waits on the EHR before the ACK: a patient matched before is filed at once,
  others are parked and matched by the background pass (woken by each new parked result).
- Group commit: the connections' writes that wait together go in one transaction (one fsync),
  so throughput grows with concurrent senders while one sender waits for one fsync only.
- The mapped results are forwarded to the EHR like a FHIR push (``forward``), by their
  deterministic id, so a correction or a withdrawal updates the same Observation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hl7.containers
import hl7.util

from adapter.ehr import FhirClient
from adapter.errors import StateError
from adapter.hl7v2.oru import Options, OruMessage, PatientKey
from adapter.hl7v2.receive import Receiver
from adapter.hl7v2.tables import Hl7v2Tables
from adapter.mllp.server import Limits, MllpServer
from adapter.pipeline.intake import Arrival, Intake, Receipt
from adapter.pipeline.matching import (
    MatchingSettings,
    ParkedMatching,
    PatientMatcher,
    Unmatched,
    unmatched,
)
from adapter.store import Store

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
        #: Matches the parked results of every source that parks by identifier (this one and
        #: pushed FHIR results), so serve runs one pass.
        self.matching = ParkedMatching(
            intake,
            store,
            MatchingSettings(settings.match_interval, settings.match_batch, settings.match_delay),
            ehr=ehr,
            registry=registry,
        )
        self.matcher = self.matching.matcher
        self.commit = GroupCommit(intake.receive)
        self.receiver = Receiver(tables, settings.options, self._store)
        self.server = MllpServer(settings.host, settings.port, self, settings.limits)
        self.clock = clock

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
        if parked:
            self.matching.wake()

    # -- matching parked results ---------------------------------------------------------------

    def match_parked(self) -> int:
        """One matching pass now (see `ParkedMatching.match_parked`)."""
        return self.matching.match_parked()

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
        self.matching.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.matching.stop()
        self.commit.stop()


__all__ = ["GroupCommit", "MllpSettings", "MllpSource", "PatientMatcher", "Unmatched", "unmatched"]
