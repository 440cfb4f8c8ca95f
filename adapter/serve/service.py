"""One `serve` process: the pipeline's threads, the HTTP endpoints, the extensions, the jobs.

`Service` is assembled from explicit parts (the CLI's composition root builds them from the
settings; tests build them directly) and started and stopped as a whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from adapter.core.calendar import local_date
from adapter.core.reference import ReferenceData
from adapter.decide import Backend
from adapter.ehr import FhirClient
from adapter.pipeline import Pipeline, PipelineSettings
from adapter.pipeline.capabilities import EhrFeatures
from adapter.pipeline.metrics import Metrics
from adapter.serve.app import HttpSettings, build_app
from adapter.serve.extensions import Extension, ServeContext
from adapter.serve.server import HttpServer
from adapter.store import Store

log = logging.getLogger(__name__)

Job = Callable[[threading.Event], None]

#: How often the recheck job looks for patients whose next ANC became due.
RECHECK_SECONDS = 60.0


class Service:
    def __init__(
        self,
        store: Store,
        data: ReferenceData,
        backend: Backend,
        *,
        ehr: Callable[[], FhirClient] | None,
        pipeline: PipelineSettings | None = None,
        http: HttpSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        extensions: Sequence[Extension] = (),
        jobs: Sequence[Job] = (),
        settings: object = None,
        features: EhrFeatures | None = None,
    ) -> None:
        self.store = store
        self.pipeline = Pipeline(
            store, data, backend, pipeline, ehr=ehr, metrics=Metrics(store), features=features
        )
        self.context = ServeContext(self.pipeline, settings)
        self._probe_client = ehr() if ehr is not None else None
        if self._probe_client is not None:
            probe = self._probe_client
            self.context.extras["ehr_probe"] = lambda: probe.capabilities()
        self.extensions = list(extensions)
        self.app = build_app(self.context, http or HttpSettings(), self.extensions)
        self.http = HttpServer(self.app, host, port)
        self.jobs = [*jobs, self._rechecks]
        self._started = False

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> None:
        self.pipeline.start(self.jobs)
        for extension in self.extensions:
            extension.start(self.context)
        self.http.start()
        self._started = True
        log.info("serve: listening on %s", self.url)

    def stop(self) -> None:
        self.http.stop()
        for extension in reversed(self.extensions):
            try:
                extension.stop()
            except Exception as error:  # one extension failing to stop must not block the rest
                log.error("stopping %s failed: %s", extension.name, type(error).__name__)
        self.pipeline.stop()
        if self._probe_client is not None:
            self._probe_client.close()

    def _rechecks(self, stopping: threading.Event) -> None:
        """Patients whose next ANC is now due are decided again (an overdue finding)."""
        tz = self.pipeline.settings.worker.site_tz
        while not stopping.is_set():
            try:
                clock = self.pipeline.settings.worker.as_of or datetime.now(UTC)
                today = local_date(clock, tz).isoformat()
                due = self.store.due_rechecks(today)
                if due:
                    self.pipeline.intake.decide_again(due, "recheck", today)
            except Exception as error:
                log.error("the recheck job failed: %s", type(error).__name__)
            stopping.wait(RECHECK_SECONDS)
