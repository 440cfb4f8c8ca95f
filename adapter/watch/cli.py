"""``rems-adapter watch``: poll an EHR FHIR server, decide, write DetectedIssues back.

    rems-adapter watch --config FILE [--once]
    rems-adapter watch --fhir-base URL --once [--as-of DATETIME] [--reconcile]

Exit codes (adapter.errors): 0 done, 2 usage, 3 configuration (also: the state file belongs to
another EHR), 5 the EHR server failed (after retries) or the state file is unusable (corrupt).
Loop mode stops cleanly on SIGTERM/SIGINT after the current step.

"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from adapter.ehr import (
    Authorizer,
    EhrConfigurationError,
    FhirClient,
    FhirError,
    RetryPolicy,
    SmartBackendServices,
    StaticBearerToken,
    Timeouts,
    Transport,
)
from adapter.errors import EXIT_UPSTREAM
from adapter.mappings_loader import load_reference_data
from adapter.settings import Loaded
from adapter.watch.config import ConfigError, FhirSettings, watch_config
from adapter.watch.state import StateError, StateStore
from adapter.watch.watcher import Watcher, where

log = logging.getLogger("adapter.watch")


def add_parser(commands: Any, **common: Any) -> argparse.ArgumentParser:
    """The `watch` sub-command; `common` carries the shared options (--config, logging)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "watch",
        help="service mode: poll an EHR FHIR server and write decisions back",
        description="Poll an EHR FHIR R4 server for ANC results, clozapine dispenses and "
        "answers to earlier decisions; write DetectedIssues back. Settings: --config FILE "
        "(TOML), the environment (REMS_ADAPTER_<SECTION>_<KEY>), or flags for the common ones. "
        "Secrets (REMS_ADAPTER_FHIR_TOKEN) only from the environment.",
        **common,
    )
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="first restore every DetectedIssue of ours deleted or changed on the EHR",
    )
    parser.add_argument(
        "--fhir-base", metavar="URL", dest="fhir.base_url", help="FHIR base URL (fhir.base_url)"
    )
    parser.add_argument(
        "--state", metavar="FILE", dest="watch.state", help="state file (watch.state)"
    )
    parser.add_argument(
        "--interval",
        metavar="SECONDS",
        dest="watch.interval_seconds",
        type=float,
        help="seconds between cycles (watch.interval_seconds)",
    )
    parser.add_argument("--as-of", default=None, help="fixed evaluation clock (default: now)")
    parser.add_argument(
        "--group", metavar="GROUP_ID", dest="watch.group", help="per-patient mode: a Group id"
    )
    parser.add_argument(
        "--patient",
        metavar="PATIENT_ID",
        dest="watch.patients",
        action="append",
        default=None,
        help="per-patient mode: a Patient id (repeatable; watch.patients)",
    )
    parser.add_argument(
        "--site-tz", metavar="ZONE", dest="evaluation.site_tz", help="IANA time zone"
    )
    parser.add_argument(
        "--mappings",
        metavar="FOLDER",
        dest="evaluation.mappings",
        help="folder of site mappings files",
    )
    parser.add_argument(
        "--no-derive-anc",
        dest="evaluation.derive_anc",
        action="store_const",
        const=False,
        default=None,
        help="do not derive ANC from WBC and neutrophil %%",
    )
    return parser


def build_client(settings: FhirSettings) -> FhirClient:
    auth: Authorizer | None = None
    try:
        if settings.auth == "bearer":
            assert settings.token is not None
            auth = StaticBearerToken(settings.token)
        elif settings.auth == "smart":
            smart = settings.smart
            assert smart is not None
            try:
                pem = smart.key_file.read_bytes()
            except OSError as error:
                what = f"cannot read: {error.strerror}"
                raise ConfigError("fhir.smart.key_file", what) from error
            auth = SmartBackendServices(
                client_id=smart.client_id,
                private_key_pem=pem,
                algorithm=smart.algorithm,
                scope=smart.scope,
                key_id=smart.key_id,
                token_endpoint=smart.token_endpoint,
            )
        transport = Transport(
            timeouts=Timeouts(settings.connect_timeout, settings.read_timeout),
            verify=settings.verify_tls,
            retry=RetryPolicy(
                max_attempts=settings.max_attempts, max_total_seconds=settings.max_retry_seconds
            ),
        )
        return FhirClient(settings.base_url, auth=auth, transport=transport)
    except EhrConfigurationError as error:
        key = "fhir.smart" if settings.auth == "smart" else "fhir"
        raise ConfigError(key, str(error)) from error


class StopFlag:
    """Set by SIGTERM/SIGINT: the watcher finishes its current step, then returns."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> bool:
        return self.event.is_set()

    def handler(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current step", signum)
        self.event.set()


def run(args: argparse.Namespace, loaded: Loaded) -> int:
    """One composition root for watch. Errors propagate to the CLI guard (adapter.cli.main),
    which prints one line and exits with the code of their kind."""
    config = watch_config(loaded, args.as_of)
    data = load_reference_data(config.evaluation.mappings)
    client = build_client(config.fhir)
    try:
        store = StateStore(config.watch.state)
    except BaseException:
        client.close()
        raise
    stop = StopFlag()
    restore = _install_signals(stop) if not args.once else (lambda: None)
    try:
        watcher = Watcher(
            client,
            store,
            data,
            config.watch,
            config.evaluation,
            stop=stop,
            reconcile_all=bool(getattr(args, "reconcile", False)),
        )
        try:
            # binds the state to this EHR (another one: exit 3), reads what the server allows,
            # creates the author Device
            watcher.prepare()
        except FhirError as error:
            log.error("rems-adapter: EHR request failed: %s", error)
            return error.exit_code
        while True:
            try:
                report = watcher.cycle()
                if args.once and not loaded.settings.log.quiet:
                    print(report.summary(), flush=True)
                else:
                    log.info("%s", report.summary())
            except FhirError as error:
                # str(error) is method, URL path, status and issue codes: no query, no bodies
                log.error("rems-adapter: EHR request failed: %s", error)
                if args.once:
                    return error.exit_code
            except StateError:
                raise  # the state cannot be trusted: stop (exit 5, its path), never skip work
            except sqlite3.Error as error:
                raise StateError(
                    f"the watch state failed: {error}", where=str(config.watch.state)
                ) from error
            except Exception as error:
                # The type and place only: a message could quote a value from a resource.
                log.error("watch cycle failed: %s; trying again next cycle", where(error))
                if args.once:
                    return EXIT_UPSTREAM
            if args.once or stop.event.wait(config.watch.interval_seconds):
                return 0
    finally:
        restore()
        store.close()
        client.close()


def _install_signals(stop: StopFlag) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals can only be handled on the main thread
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
