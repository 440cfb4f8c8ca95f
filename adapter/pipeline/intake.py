"""The one way into the pipeline: `Intake.receive` puts what arrived in the durable inbox.

A source (push, notify, poll, mllp, files) builds `Arrival`s and calls `receive`; when it
returns, the items are durably stored (the transaction committed with synchronous=FULL), so the
source may acknowledge (HTTP 202, MLLP AA). The same content received again is one item (its
key is a digest of the resource without `meta`, unless the source gives its own key) and
answers as the first time did.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapter.pipeline.gather import subject_of
from adapter.pipeline.metrics import Metrics
from adapter.store import NewItem, Store

#: The sources named by interfaces.md s.4 (`rems_adapter_results_received_total{source}`).
SOURCES = ("push", "notify", "poll", "mllp", "files")


@dataclass(frozen=True)
class Arrival:
    """One resource that arrived.

    `patient`: ``Patient/id`` when the source knows it better than the resource says (an
    HL7 v2 result matched to a patient); None to take it from the resource (`subject`), and
    when neither names one the item is parked until `Intake.assign` (never matched by guess).
    `key`: the deduplication key (default: a digest of the resource without `meta`).
    `forward`: write the resource to the EHR before deciding (pushed lab results), so that the
    evidence a DetectedIssue cites resolves on the EHR."""

    resource: dict[str, Any]
    source: str
    patient: str | None = None
    key: str | None = None
    forward: bool = False


@dataclass(frozen=True)
class Receipt:
    key: str
    #: False when the same key was received before (answered as the first time)
    new: bool
    #: the patient it was filed under; None when parked
    patient: str | None


def content_key(resource: dict[str, Any]) -> str:
    """``Type:sha256`` of the resource without `meta` (canonical JSON, sorted keys)."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{resource.get('resourceType')}:{digest}"


def envelope(resource: dict[str, Any], forward: bool) -> str:
    return orjson.dumps({"resource": resource, "forward": forward}).decode()


def open_envelope(body: str) -> tuple[dict[str, Any], bool]:
    value = orjson.loads(body)
    return value["resource"], bool(value.get("forward"))


class Intake:
    """Puts arrivals in the inbox and wakes the workers of this process."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        wake: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.wake = wake or threading.Event()

    def receive(self, arrivals: Sequence[Arrival]) -> list[Receipt]:
        """Store every arrival durably, in one transaction; a receipt for each, in order."""
        now = self.clock()
        items: list[NewItem] = []
        for arrival in arrivals:
            patient = arrival.patient or subject_of(arrival.resource)
            key = arrival.key or content_key(arrival.resource)
            body = envelope(arrival.resource, arrival.forward)
            items.append(NewItem(key, arrival.source, patient, body, now))
        fresh = self.store.put_items(items) if items else []
        receipts = [
            Receipt(item.key, new, item.patient) for item, new in zip(items, fresh, strict=True)
        ]
        if self.metrics is not None:  # distinct results: the same one again is not counted
            for arrival, new in zip(arrivals, fresh, strict=True):
                if new and arrival.resource.get("resourceType") == "Observation":
                    self.metrics.received(arrival.source)
        if any(fresh):
            self.wake.set()
        return receipts

    def decide_again(self, patients: Sequence[str], source: str, key: str) -> None:
        """Ask for a decision of each patient without new content (a recheck date reached, the
        poll source kept what changed itself). `key` makes the request once per occasion."""
        now = self.clock()
        items = [NewItem(f"{source}:{key}:{p}", source, p, None, now) for p in patients]
        if items and any(self.store.put_items(items)):
            self.wake.set()

    def assign(self, keys: Sequence[str], patient: str) -> None:
        """File parked items under the patient they turned out to be about: they are decided."""
        ids = [item.id for key in keys if (item := self.store.item(key)) is not None]
        self.store.assign_parked(ids, patient)
        self.wake.set()
