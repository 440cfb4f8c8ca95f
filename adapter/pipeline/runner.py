"""Threads that run the pipeline in one process: workers and outbox performers.

Each thread sleeps until its event is set (intake -> workers, workers -> outbox) or half a
second passes (work put in by another process sharing the store), then works until nothing is
due. `stop()` lets every thread finish the item in hand and joins them (bounded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adapter.pipeline.outbox import Outbox
from adapter.pipeline.worker import Worker, where
from adapter.store import Store

log = logging.getLogger(__name__)

#: How often an idle thread looks at the store for work another process put there.
IDLE_SECONDS = 0.5


class Runner:
    def __init__(
        self,
        workers: list[Worker],
        outboxes: list[Outbox],
        *,
        inbox_event: threading.Event,
        outbox_event: threading.Event,
        idle_seconds: float = IDLE_SECONDS,
        extra: list[Callable[[threading.Event], None]] | None = None,
        store: Store | None = None,
    ) -> None:
        self.store = store
        self.workers = workers
        self.outboxes = outboxes
        self.inbox_event = inbox_event
        self.outbox_event = outbox_event
        self.idle = idle_seconds
        self.extra = extra or []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for n, worker in enumerate(self.workers):
            self._spawn(f"worker-{n}", self._loop, worker.run_once, self.inbox_event)
        for n, outbox in enumerate(self.outboxes):
            self._spawn(
                f"outbox-{n}", self._loop, lambda o=outbox: o.run_once() > 0, self.outbox_event
            )
        for n, job in enumerate(self.extra):
            self._spawn(f"job-{n}", job, self.stopping)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _loop(self, step: Callable[[], bool], event: threading.Event) -> None:
        if self.store is not None:
            # a lost commit of a worker or performer is redone (the item stays pending)
            self.store.relax_durability_for_this_thread()
        while not self.stopping.is_set():
            try:
                busy = step()
            except Exception as error:  # contained: logged by type and place, then retried
                log.error("pipeline step failed: %s", where(error))
                busy = False
                self.stopping.wait(self.idle)
            if not busy:
                event.wait(self.idle)
                event.clear()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.inbox_event.set()
        self.outbox_event.set()
        for thread in self.threads:
            thread.join(timeout)
