"""One pipeline for every way a result arrives.

    sources (files | poll | push | notify | mllp)
        -> inbox (durable, per patient)          Intake.receive
        -> worker (claim a patient, gather what the rules need, decide via the backend,
           enqueue effects)                      Worker
        -> outbox (durable effects, retries with backoff, dead letters)   Outbox
        -> sinks (EHR: DetectedIssue writes)     EhrSink

How a source enqueues (the one call a new source needs)
-------------------------------------------------------
Build one `Arrival` per resource and call `Pipeline.intake.receive([...])`::

    from adapter.pipeline import Arrival

    receipts = pipeline.intake.receive(
        [Arrival(resource, source="mllp", patient="Patient/123", key=f"mllp:{msh10}:{n}")]
    )
    # returned = durably stored: now acknowledge (HTTP 202, MLLP AA)

- `source`: ``push``, ``notify``, ``poll``, ``mllp`` or ``files`` (the label of
  `rems_adapter_results_received_total`).
- `patient`: leave None to take it from the resource's `subject`; give it when the source
  matched the patient itself; when neither names one the item is parked (never matched by
  guess) until `Pipeline.intake.assign(keys, "Patient/id")`.
- `key`: the deduplication key. The same key received twice is one item and answers as the
  first time (`Receipt.new` is False); the default is a digest of the resource without `meta`.
  An MLLP source uses the message control id; a notification source the notified resource's
  ``Type/id/_history/version``.
- `forward=True`: the result is written to the EHR before deciding (pushed lab results).
- `Pipeline.intake.decide_again(patients, source, key)`: a decision without new content
  (a notification that only names a resource already read, a recheck date).

`receive` raises `adapter.errors.StateError` when the store cannot take the write: answer 503
(HTTP; `as_adapter_error(e).operation_outcome()`) or MLLP ``AE``, never an acknowledgement.

Where serve registers more routes and listeners
-----------------------------------------------
An `Extension` (`adapter.serve.extensions`, read its docstring) may add Flask routes
(``routes(app, context)``) and start listeners or background jobs (``start(context)`` /
``stop()``); `context.pipeline` is this `Pipeline` (its `intake`, `store`, `ehr` client
factory, `metrics`). Register a factory ``(loaded settings) -> Extension | None`` in
`adapter.serve.command.EXTENSIONS` (append at import of your module, imported by
`adapter.serve.command`), or pass extensions to `adapter.serve.service.Service(...,
extensions=[...])` in tests. The worklist pages, the Subscription notifications and the MLLP
listener plug in there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapter.core.reference import ReferenceData
from adapter.decide import Backend
from adapter.ehr import FhirClient
from adapter.pipeline.capabilities import EhrFeatures
from adapter.pipeline.ehr_sink import EhrSink
from adapter.pipeline.intake import SOURCES, Arrival, Intake, Receipt, content_key
from adapter.pipeline.metrics import Metrics
from adapter.pipeline.outbox import Outbox, RetryPolicy, Sink
from adapter.pipeline.runner import Runner
from adapter.pipeline.worker import Worker, WorkerSettings
from adapter.store import Store


@dataclass
class PipelineSettings:
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    workers: int = 2
    performers: int = 2
    outbox_batch: int = 20


class Pipeline:
    """The pipeline of one process: intake, workers and outbox performers on one store.

    `ehr` makes an EHR client (one per thread); None for a pipeline without an EHR (the
    effects then wait in the outbox, with no sink, until one is configured)."""

    def __init__(
        self,
        store: Store,
        data: ReferenceData,
        backend: Backend,
        settings: PipelineSettings | None = None,
        *,
        ehr: Callable[[], FhirClient] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        sinks: dict[str, Sink] | None = None,
        features: EhrFeatures | None = None,
    ) -> None:
        self.features = features
        self.store = store
        self.data = data
        self.backend = backend
        self.settings = settings or PipelineSettings()
        self.ehr = ehr
        self.metrics = metrics or Metrics(store)
        self.clock = clock
        self.inbox_event = threading.Event()
        self.outbox_event = threading.Event()
        self.intake = Intake(store, self.metrics, clock=clock, wake=self.inbox_event)
        self._backend_lock = threading.Lock()
        self._extra_sinks = sinks or {}
        self._clients: list[FhirClient] = []
        self.runner: Runner | None = None

    def _client(self) -> FhirClient | None:
        if self.ehr is None:
            return None
        client = self.ehr()
        self._clients.append(client)
        return client

    def worker(self) -> Worker:
        return Worker(
            self.store,
            self.data,
            self.backend,
            self.settings.worker,
            ehr=self._client(),
            metrics=self.metrics,
            clock=self.clock,
            backend_lock=self._backend_lock,
            effects_ready=self.outbox_event,
        )

    def outbox(self) -> Outbox:
        sinks: dict[str, Sink] = {}
        client = self._client()
        if client is not None:
            sink = EhrSink(client, features=self.features, store=self.store)
            sinks.update({kind: sink for kind in sink.kinds})
        sinks.update(self._extra_sinks)
        return Outbox(
            self.store,
            sinks,
            policy=self.settings.retry,
            metrics=self.metrics,
            clock=self.clock,
            batch=self.settings.outbox_batch,
            lease_seconds=self.settings.worker.lease_seconds,
        )

    def start(self, extra: list[Callable[[threading.Event], None]] | None = None) -> None:
        """Run workers and performers in threads (and `extra` jobs, given the stop event)."""
        self.runner = Runner(
            [self.worker() for _ in range(self.settings.workers)],
            [self.outbox() for _ in range(self.settings.performers)],
            inbox_event=self.inbox_event,
            outbox_event=self.outbox_event,
            extra=extra,
            store=self.store,
        )
        self.runner.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        for client in self._clients:
            client.close()
        self._clients = []

    def settle(self, limit: int = 100_000) -> None:
        """Run everything due now to the end in this thread (batch, tests, `--once`)."""
        worker, outbox = self.worker(), self.outbox()
        for _ in range(limit):
            decided = worker.drain()
            performed = outbox.drain()
            if not decided and not performed:
                return


__all__ = [
    "SOURCES",
    "Arrival",
    "Intake",
    "Metrics",
    "Outbox",
    "Pipeline",
    "PipelineSettings",
    "Receipt",
    "RetryPolicy",
    "Worker",
    "WorkerSettings",
    "content_key",
]
