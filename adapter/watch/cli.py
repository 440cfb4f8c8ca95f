"""``rems-adapter watch``: poll an EHR FHIR server, decide, write DetectedIssues back.

    rems-adapter watch --config FILE [--once]
    rems-adapter watch --fhir-base URL --once [--as-of DATETIME]

Exit codes: 0 done, 2 usage, 3 configuration, 5 the EHR server failed (after retries) or the
state file is unusable. Loop mode stops cleanly on SIGTERM/SIGINT after the current step.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
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
from adapter.mappings_loader import MappingError, load_reference_data
from adapter.watch.config import (
    ConfigError,
    FhirSettings,
    Overrides,
    WatchConfig,
    load_config,
    read_toml,
)
from adapter.watch.state import StateError, StateStore
from adapter.watch.watcher import Watcher, where

EXIT_CONFIG = 3
EXIT_EHR = 5

log = logging.getLogger("adapter.watch")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "watch",
        help="service mode: poll an EHR FHIR server and write decisions back",
        description="Poll an EHR FHIR R4 server for ANC results, clozapine dispenses and "
        "answers to earlier decisions; write DetectedIssues back. Settings: --config FILE "
        "(TOML), or flags for the common ones.",
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--fhir-base", default=None, help="FHIR base URL (fhir.base_url)")
    parser.add_argument("--state", type=Path, default=None, help="state file (watch.state)")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between cycles (watch.interval_seconds)",
    )
    parser.add_argument("--as-of", default=None, help="fixed evaluation clock (default: now)")
    parser.add_argument("--group", default=None, help="per-patient mode: a Group id (watch.group)")
    parser.add_argument(
        "--patient",
        action="append",
        default=[],
        help="per-patient mode: a Patient id (repeatable; watch.patients)",
    )
    parser.add_argument("--site-tz", default=None, help="IANA time zone (evaluation.site_tz)")
    parser.add_argument("--mappings", type=Path, default=None, help="evaluation.mappings")
    parser.add_argument(
        "--no-derive-anc", action="store_true", help="evaluation.derive_anc = false"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser


def configuration(args: argparse.Namespace, environ: dict[str, str]) -> WatchConfig:
    data = read_toml(args.config) if args.config is not None else {}
    overrides = Overrides(
        fhir_base=args.fhir_base,
        state=args.state,
        interval_seconds=args.interval,
        site_tz=args.site_tz,
        mappings=args.mappings,
        no_derive_anc=args.no_derive_anc,
        as_of=args.as_of,
        group=args.group,
        patients=tuple(args.patient),
    )
    return load_config(data, overrides, environ)


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


def run(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    _logging(args.log_level)
    try:
        config = configuration(args, dict(os.environ) if environ is None else environ)
        data = load_reference_data(config.evaluation.mappings)
        client = build_client(config.fhir)
    except (ConfigError, MappingError) as error:
        print(f"rems-adapter: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        store = StateStore(config.watch.state)
    except StateError as error:
        print(f"rems-adapter: {error}", file=sys.stderr)
        return EXIT_EHR
    stop = StopFlag()
    restore = _install_signals(stop) if not args.once else (lambda: None)
    try:
        watcher = Watcher(client, store, data, config.watch, config.evaluation, stop=stop)
        while True:
            try:
                report = watcher.cycle()
                if args.once:
                    print(report.summary(), flush=True)
                else:
                    log.info("%s", report.summary())
            except FhirError as error:
                # str(error) is method, URL path, status and issue codes: no query, no bodies
                print(f"rems-adapter: EHR request failed: {error}", file=sys.stderr)
                if args.once:
                    return EXIT_EHR
            except StateError as error:
                print(f"rems-adapter: {error}", file=sys.stderr)
                return EXIT_EHR  # the state cannot be trusted: stop, never skip work silently
            except Exception as error:
                # The type and place only: a message could quote a value from a resource.
                log.error("watch cycle failed: %s; trying again next cycle", where(error))
                if args.once:
                    print(f"rems-adapter: watch cycle failed: {where(error)}", file=sys.stderr)
                    return EXIT_EHR
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


def _logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:  # an embedding application's logging setup wins
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    logging.getLogger("adapter").setLevel(level)
