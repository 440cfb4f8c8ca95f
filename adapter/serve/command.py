"""``rems-adapter serve``: the composition root of the service (interfaces.md s.4).

Settings -> the state store (bound to the EHR base URL), the EHR client factory, the decision
backend, the pipeline, the HTTP endpoints; then it runs until SIGTERM/SIGINT and stops cleanly
(the HTTP server first, then the pipeline after the items in hand).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from adapter import __version__
from adapter.decide import Backend
from adapter.ehr import FhirClient, FhirError, FhirServerError
from adapter.errors import EXIT_UPSTREAM, ConfigurationError
from adapter.fhir.write import AUTHOR_DEVICE
from adapter.listen import loopback, parse_listen
from adapter.mappings_loader import load_reference_data
from adapter.pipeline import Pipeline, PipelineSettings, RetryPolicy, WorkerSettings
from adapter.pipeline.capabilities import EhrFeatures, ehr_features, ensure_author_device
from adapter.pipeline.history import HistoryLimits
from adapter.pipeline.worker import mappings_version
from adapter.serve.app import HttpSettings
from adapter.serve.extensions import Extension
from adapter.serve.notify import from_settings as notifications_from_settings
from adapter.serve.poll import PollJob, PollSource
from adapter.serve.service import Service
from adapter.serve.worklist import make_worklist
from adapter.settings import Loaded
from adapter.store import Store, open_store
from adapter.watch.cli import build_client
from adapter.watch.config import watch_config
from adapter.watch.state import StateStore

log = logging.getLogger("adapter.serve")

#: Extensions other issues add (Subscriptions, MLLP, worklist): factories given the settings.
EXTENSIONS: list[Callable[[Loaded], Extension | None]] = [
    notifications_from_settings,
    make_worklist,
]


def settings_for(loaded: Loaded, as_of: str | None = None) -> tuple[PipelineSettings, HttpSettings]:
    serve = loaded.settings.serve
    inbound = loaded.settings.inbound
    config = watch_config(loaded, as_of)
    evaluation = config.evaluation
    worker = WorkerSettings(
        site_tz=evaluation.site_tz,
        derive_anc=evaluation.derive_anc,
        as_of=evaluation.as_of,
        lease_seconds=serve.lease_seconds,
        hydrate=serve.hydrate,
        history=HistoryLimits(max_pages=serve.history_max_pages),
        forward=serve.forward,
        retry_seconds=serve.retry_first_seconds,
        retry_max_seconds=serve.retry_max_seconds,
        mappings_version=mappings_version(loaded.settings.evaluation.mappings),
        link_dispense=loaded.settings.watch.link_dispense,
    )
    pipeline = PipelineSettings(
        worker=worker,
        retry=RetryPolicy(
            first_seconds=serve.retry_first_seconds,
            max_seconds=serve.retry_max_seconds,
            max_attempts=serve.max_attempts,
        ),
        workers=serve.workers,
        performers=serve.performers,
    )
    http = HttpSettings(
        token=inbound.token.get_secret_value() if inbound.token else None,
        max_body_bytes=inbound.max_body_bytes,
        rate_per_second=inbound.rate_per_second,
        rate_burst=inbound.rate_burst,
        forward=serve.forward,
        max_bundle_entries=inbound.max_bundle_entries,
    )
    return pipeline, http


def run(
    loaded: Loaded, backend: Backend, *, once_ready: Callable[[str], None] | None = None
) -> int:
    serve = loaded.settings.serve
    host, port = parse_listen(serve.listen, loaded.name("serve.listen"))
    token = loaded.settings.inbound.token
    if token is None and not loopback(host):
        raise ConfigurationError(
            f"refusing to listen on {host} (not a loopback address) without an inbound token: "
            "set REMS_ADAPTER_INBOUND_TOKEN",
            where=loaded.name("serve.listen"),
        )
    config = watch_config(loaded, None)
    pipeline_settings, http = settings_for(loaded)
    data = load_reference_data(config.evaluation.mappings)
    # extensions check their settings before anything is opened or contacted
    extensions = [ext for make in EXTENSIONS if (ext := make(loaded)) is not None]
    store = open_store(serve.state)
    try:
        store.bind_ehr(config.fhir.base_url)

        def factory() -> FhirClient:  # one client per thread
            return build_client(config.fhir)

        source: PollSource | None = None
        if serve.poll:
            cursor = StateStore(config.watch.state)
            source = PollSource(factory(), cursor, data, config.watch, config.evaluation)
            try:
                # binds the poll's cursor to this EHR (another: exit 3) and the settings'
                # fingerprint, reads what the EHR allows, creates the author Device once
                source.prepare()
            finally:
                cursor.close()
            features = source.features or EhrFeatures()
            author = source.author or AUTHOR_DEVICE
        else:
            features, author = _prepare_writes(factory)
        pipeline_settings.worker = replace(pipeline_settings.worker, author=author)
        service = Service(
            store,
            data,
            backend,
            ehr=factory,
            pipeline=pipeline_settings,
            http=http,
            host=host,
            port=port,
            extensions=extensions,
            settings=loaded.settings,
            features=features,
        )
        if source is not None:
            source.attach(service.pipeline.intake)
            path = config.watch.state
            job = PollJob(source, store, config.watch.interval_seconds, lambda: StateStore(path))
            service.jobs.insert(0, job)
        stop = threading.Event()
        restore = _install_signals(stop)
        service.start()
        try:
            print(f"rems-adapter serve: listening on {service.url}", flush=True)
            if once_ready is not None:
                once_ready(service.url)
            while not stop.wait(1.0):
                pass
        finally:
            restore()
            log.info("serve: stopping")
            service.stop()
    finally:
        backend.close()
        store.close()
    return 0


def pipeline_state(loaded: Loaded, cursor: Path) -> str:
    """watch's pipeline store: `serve.state` when set, else beside the poll's cursor file
    (``state.sqlite`` -> ``state.pipeline.sqlite``), so `--state` keeps everything together."""
    if loaded.origins.of("serve.state") != "default":
        return loaded.settings.serve.state
    return str(cursor.with_name(f"{cursor.stem}.pipeline{cursor.suffix or '.sqlite'}"))


def run_watch(
    loaded: Loaded, backend: Backend, *, once: bool, as_of: str | None, reconcile: bool
) -> int:
    """`watch`: serve with only the poll source (no HTTP endpoints). `--once` polls one cycle,
    decides and writes everything it brought, prints the summary and exits."""
    config = watch_config(loaded, as_of)
    pipeline_settings, _ = settings_for(loaded, as_of)
    data = load_reference_data(config.evaluation.mappings)

    def factory() -> FhirClient:  # one client per thread
        return build_client(config.fhir)

    cursor = StateStore(config.watch.state)
    client = factory()
    source = PollSource(
        client, cursor, data, config.watch, config.evaluation, reconcile_all=reconcile
    )
    store: Store | None = None
    pipeline: Pipeline | None = None
    stop = threading.Event()
    restore: Callable[[], None] = lambda: None  # noqa: E731
    try:
        try:
            source.prepare()  # the cursor bound to this EHR (another: exit 3), the Device
        except FhirError as error:
            log.error("rems-adapter: EHR request failed: %s", error)
            return error.exit_code
        store = open_store(pipeline_state(loaded, config.watch.state))
        store.bind_ehr(config.fhir.base_url)
        worker = replace(pipeline_settings.worker, author=source.author or AUTHOR_DEVICE)
        pipeline_settings.worker = worker
        pipeline = Pipeline(
            store, data, backend, pipeline_settings, ehr=factory, features=source.features
        )
        source.attach(pipeline.intake)
        if once:
            try:
                report = source.cycle()
            except FhirError as error:
                log.error("rems-adapter: EHR request failed: %s", error)
                return error.exit_code
            pipeline.settle()
            source.learn_writes()
            summary = report.summary()
            waiting = store.outbox_depth()
            if not loaded.settings.log.quiet:
                print(summary, flush=True)
            else:
                log.info("%s", summary)
            if waiting:
                log.error(
                    "rems-adapter: %d writes could not be made now (the EHR failed); "
                    "they are kept and made by the next run",
                    waiting,
                )
                return EXIT_UPSTREAM
            return 0
        cursor.close()
        path = config.watch.state
        job = PollJob(source, store, config.watch.interval_seconds, lambda: StateStore(path))
        restore = _install_signals(stop)
        pipeline.start([job])
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        restore()
        if pipeline is not None:
            pipeline.stop()
        client.close()
        cursor.close()
        backend.close()
        if store is not None:
            store.close()


def _prepare_writes(factory: Callable[[], FhirClient]) -> tuple[EhrFeatures, str]:
    """What the EHR allows for writes, and the author Device (created once)."""
    device = factory()
    try:
        features = ehr_features(device.capabilities())
        try:
            author = ensure_author_device(device, __version__, features.create_mode)
        except FhirServerError as error:
            log.warning(
                "the EHR refused to create the author Device (%s); DetectedIssues name it all "
                "the same",
                error,
            )
            author = AUTHOR_DEVICE
    finally:
        device.close()
    return features, author


def _install_signals(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _register() -> None:
    from adapter.serve.matching import matching_extension
    from adapter.serve.mllp import mllp_extension

    EXTENSIONS.append(mllp_extension)
    EXTENSIONS.append(matching_extension)


_register()

__all__ = ["EXTENSIONS", "run"]
