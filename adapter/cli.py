"""Command line entry points: ``rems-adapter run``, ``demo``, ``rems-server`` and ``watch``.

The composition root: settings come from flags, reference data from ``mappings/``; then the batch
service runs. Exit codes: 0 done (clinical findings never change it), 2 usage, 3 configuration
(for example a bad mappings file), 4 unreadable input; 5 (watch) the EHR server failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapter import __version__
from adapter.batch.rems_backend import (
    DEFAULT_DESIGNEE_ID,
    DEFAULT_PHARMACY_ID_SYSTEM,
    DEFAULT_REMS_ID_SYSTEM,
    RemsSettings,
)
from adapter.batch.run import BatchSettings, run_batch
from adapter.batch.sources import UnreadableInput
from adapter.fhir.values import ValueProblem, read_clock
from adapter.mappings_loader import MappingError, load_reference_data
from adapter.rems import RemsConfigurationError, RetryPolicy, Timeouts
from adapter.rems.client import check_base_url
from adapter.watch import cli as watch_cli

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNREADABLE = 4


class UsageError(ValueError):
    pass


def parse_as_of(raw: str | None, site_tz: tzinfo) -> datetime:
    """The evaluation clock. A date alone means the end of that day at the site."""
    if raw is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        return read_clock(raw, site_tz)  # the one reading, shared with watch
    except ValueProblem as error:
        raise UsageError(f"--as-of: {error.message}") from error


def site_zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise UsageError(f"--site-tz: unknown time zone '{name}'") from error


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site-tz",
        default="UTC",
        help="IANA time zone in which dates are taken (default: UTC)",
    )
    parser.add_argument(
        "--mappings",
        type=Path,
        default=None,
        help="folder with a site's own copy of mappings/ (default: the bundled one)",
    )
    parser.add_argument(
        "--no-derive-anc",
        action="store_true",
        help="do not derive ANC from WBC and neutrophil %% when no direct ANC exists",
    )


def _rems_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("REMS backend (with --rems URL)")
    group.add_argument(
        "--rems-patient-id-system",
        default=DEFAULT_REMS_ID_SYSTEM,
        help="Patient.identifier system holding the patient's REMS id (default: %(default)s)",
    )
    group.add_argument(
        "--rems-pharmacy-id-system",
        default=DEFAULT_PHARMACY_ID_SYSTEM,
        help="Organization.identifier system of the pharmacy's REMS id, read from the "
        "MedicationDispense performer (default: %(default)s)",
    )
    group.add_argument(
        "--rems-pharmacy-id",
        default=None,
        help="REMS pharmacy id used when a dispense names no pharmacy Organization with an "
        "identifier in that system (default: none)",
    )
    group.add_argument(
        "--rems-designee",
        default=DEFAULT_DESIGNEE_ID,
        help="designee id the adapter signs routine PSFs and enrollments with "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--rems-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each REMS answer (default: %(default)s)",
    )
    group.add_argument(
        "--rems-attempts",
        type=int,
        default=4,
        help="attempts per REMS request before the dispense stays pending (default: %(default)s)",
    )


def rems_settings(args: argparse.Namespace) -> RemsSettings | None:
    if args.rems == "local":
        return None
    if args.rems_timeout <= 0 or args.rems_attempts < 1:
        raise UsageError("--rems-timeout must be positive and --rems-attempts at least 1")
    try:
        url = check_base_url(args.rems)
    except RemsConfigurationError as error:
        raise UsageError(f"--rems: {error} (or 'local')") from error
    return RemsSettings(
        url=url,
        rems_id_system=args.rems_patient_id_system,
        pharmacy_id_system=args.rems_pharmacy_id_system,
        designee_id=args.rems_designee,
        pharmacy_id=args.rems_pharmacy_id,
        timeouts=Timeouts(connect=min(args.rems_timeout, 5.0), read=args.rems_timeout),
        retry=RetryPolicy(max_attempts=args.rems_attempts),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rems-adapter",
        description="Clozapine ANC monitoring and dispense decisions for FHIR R4 systems.",
    )
    parser.add_argument("--version", action="version", version=f"rems-adapter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="batch mode: decide from FHIR files, write outputs")
    run.add_argument(
        "--source",
        action="append",
        required=True,
        help="FHIR Bundle JSON, NDJSON, or a folder of them (repeatable)",
    )
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--as-of", default=None, help="evaluation clock (default: now)")
    run.add_argument(
        "--rems",
        default="local",
        help="decision backend: 'local' (label rules, default) or a REMS service URL",
    )
    _rems_options(run)
    _common(run)

    demo = commands.add_parser("demo", help="run batch mode on bundled synthetic data")
    demo.add_argument("--out", type=Path, default=None, help="output folder (default: temporary)")
    _common(demo)

    rems = commands.add_parser(
        "rems-server", help="run the reference REMS service (the 2021 Clozapine REMS rules)"
    )
    rems.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    rems.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    rems.add_argument("--seed", default=None, help="JSON file of certified actors to load")
    rems.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    rems.add_argument(
        "--rules", default=None, help="program settings TOML (default: mappings/rems-program.toml)"
    )

    watch_cli.add_parser(commands)
    return parser


def run_rems_server(args: argparse.Namespace) -> int:
    from adapter.rems_service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The admin endpoints are open unless a token is set; it comes from the environment so that
    # it never appears in a process listing.
    serve(
        args.port,
        args.db,
        args.seed,
        args.host,
        rules=args.rules,
        admin_token=os.environ.get("REMS_ADAPTER_ADMIN_TOKEN") or None,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "rems-server":
        return run_rems_server(args)
    if args.command == "watch":
        return watch_cli.run(args)
    try:
        site_tz = site_zone(args.site_tz)
        data = load_reference_data(args.mappings)
        if args.command == "demo":
            from adapter.demo.command import run_demo

            return run_demo(args.out, site_tz, data, derive_anc=not args.no_derive_anc)
        settings = BatchSettings(
            sources=tuple(args.source),
            out=args.out,
            as_of=parse_as_of(args.as_of, site_tz),
            site_tz=site_tz,
            derive_anc=not args.no_derive_anc,
            rems=rems_settings(args),
        )
        result = run_batch(settings, data)
    except UsageError as error:
        parser.exit(EXIT_USAGE, f"rems-adapter: error: {error}\n")
    except MappingError as error:
        print(f"rems-adapter: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except UnreadableInput as error:
        print(f"rems-adapter: cannot read input: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    for problem in result.problems:
        print(f"rems-adapter: input problem: {problem}", file=sys.stderr)
    for note in result.notes:
        print(f"rems-adapter: REMS: {note}", file=sys.stderr)
    print(result.summary(args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
