"""Command line entry points: ``rems-adapter run``, ``demo``, ``rems-server``, ``watch``, ``serve``.

The composition root of each command: settings come from `adapter.settings` (flag >
environment > TOML file > default), reference data from ``mappings/``; then the service runs.
`main` is the one guard between the code and the user: every failure becomes one line naming
what and where, and the exit code of its kind (`adapter.errors`); never a traceback (it is
logged at DEBUG, shown with ``--log-level DEBUG``).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time as monotonic_time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapter import __version__, logs
from adapter.batch.report import ReportBuilder
from adapter.batch.run import PROBLEMS_FILE, BatchSettings, plural, run_batch
from adapter.batch.sources import InputProblem
from adapter.decide import Backend, LocalBackend
from adapter.decide.rems import RemsDecider, RemsSettings
from adapter.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES,
    EXIT_UPSTREAM,
    AdapterError,
    ConfigurationError,
    UnreadableInputError,
    UpstreamError,
    UsageError,
    as_adapter_error,
)
from adapter.fhir.values import ValueProblem, read_clock
from adapter.listen import loopback
from adapter.mappings_loader import load_reference_data
from adapter.rems import RemsConfigurationError, RetryPolicy, Timeouts
from adapter.rems.client import check_base_url
from adapter.settings import FLAGS, Loaded, load_settings, render
from adapter.store import Store, is_postgres, open_store
from adapter.watch import cli as watch_cli

log = logging.getLogger("adapter.cli")

#: How many input problems stderr shows before it only counts them (all are in problems.ndjson).
PROBLEMS_SHOWN = 50

#: The settings sections each command uses (what --check-config prints).
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("evaluation", "rems", "log"),
    "demo": ("evaluation", "demo", "log"),
    "rems-server": ("rems_server", "log"),
    "watch": ("fhir", "watch", "evaluation", "rems", "serve", "log"),
    "serve": ("fhir", "serve", "inbound", "mllp", "watch", "evaluation", "rems", "log"),
    "outbox": ("serve", "log"),
    "audit": ("serve", "log"),
    "backfill": ("fhir", "backfill", "batch", "evaluation", "rems", "log"),
    "mllp": ("serve", "mllp", "log"),
}

EXIT_HELP = "exit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)


def parse_as_of(raw: str | None, site_tz: tzinfo) -> datetime:
    """The evaluation clock. A date alone means the end of that day at the site."""
    if raw is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        return read_clock(raw, site_tz)  # the one reading, shared with watch
    except ValueProblem as error:
        raise UsageError(error.message, where="--as-of") from error


def site_zone(loaded: Loaded) -> tzinfo:
    name = loaded.settings.evaluation.site_tz
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise loaded.error("evaluation.site_tz", f"unknown time zone '{name}'") from error


# ------------------------------------------------------------------ the parser


def _setting(parser: Any, dotted: str, help_text: str, **kwargs: Any) -> None:
    """A flag that sets `dotted` (adapter.settings.FLAGS); None when not given."""
    flag = FLAGS[dotted]
    kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    parser.add_argument(flag, dest=dotted, default=None, help=help_text, **kwargs)


def _common() -> argparse.ArgumentParser:
    """Options every command has."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("settings and output (every command)")
    group.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (README: Configuration)"
    )
    group.add_argument(
        "--check-config",
        action="store_true",
        help="print the effective settings (secrets masked, with where each came from) and exit",
    )
    _setting(
        group,
        "log.level",
        "lowest level logged: DEBUG, INFO (default), WARNING, ERROR",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    _setting(group, "log.format", "log lines as text (default) or json", choices=("text", "json"))
    group.add_argument(
        "--quiet",
        dest="log.quiet",
        action="store_const",
        const=True,
        default=None,
        help="no summary or progress; only warnings and errors",
    )
    return common


def _evaluation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    _setting(group, "evaluation.site_tz", "IANA time zone in which dates are taken (default: UTC)")
    _setting(
        group,
        "evaluation.mappings",
        "folder with a site's mappings files; each overlays the bundled file of the same name",
    )
    group.add_argument(
        "--no-derive-anc",
        dest="evaluation.derive_anc",
        action="store_const",
        const=False,
        default=None,
        help="do not derive ANC from WBC and neutrophil %% when no direct ANC exists",
    )


def _rems_options(parser: argparse.ArgumentParser) -> None:
    _setting(
        parser, "rems.backend", "decision backend: 'local' (label rules, default) or a REMS URL"
    )
    group = parser.add_argument_group(
        "REMS backend (with --rems URL; token: REMS_ADAPTER_REMS_TOKEN)"
    )
    _setting(
        group,
        "rems.patient_id_system",
        "Patient.identifier system holding the patient's REMS id",
    )
    _setting(
        group,
        "rems.pharmacy_id_system",
        "Organization.identifier system of the pharmacy's REMS id (MedicationDispense performer)",
    )
    _setting(group, "rems.pharmacy_id", "REMS pharmacy id when a dispense names no pharmacy")
    _setting(group, "rems.designee", "designee id routine PSFs and enrollments are signed with")
    _setting(group, "rems.timeout", "seconds to wait for each REMS answer (default 30)", type=float)
    _setting(group, "rems.attempts", "attempts per REMS request (default 4)", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rems-adapter",
        description="Clozapine ANC monitoring and dispense decisions for FHIR R4 systems.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rems-adapter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    common = _common()
    sub: dict[str, Any] = {
        "parents": [common],
        "epilog": EXIT_HELP,
        "formatter_class": parser.formatter_class,
    }

    run = commands.add_parser(
        "run", help="batch mode: decide from FHIR files, write outputs", **sub
    )
    run.add_argument(
        "--source",
        action="append",
        required=True,
        help="FHIR Bundle JSON, NDJSON, or a folder of them (repeatable)",
    )
    run.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    run.add_argument("--as-of", default=None, help="evaluation clock (default: now)")
    run.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a self-contained HTML report (worklist and ANC charts) to FILE",
    )
    group = run.add_argument_group("reading at scale")
    _setting(
        group,
        "batch.jobs",
        "processes, this one and its workers (default: the machine's CPUs)",
        type=int,
    )
    group.add_argument(
        "--strict",
        dest="batch.strict",
        action="store_const",
        const=True,
        default=None,
        help="parse and check every line (default: lines with no lab code or resource type "
        "the rules read are counted, not parsed)",
    )
    _rems_options(run)
    _evaluation_options(run)

    demo = commands.add_parser("demo", help="run batch mode on bundled synthetic data", **sub)
    _setting(demo, "demo.out", "output folder (default: rems-adapter/demo in the user's cache)")
    _setting(
        demo,
        "demo.format",
        "result table as table (default), csv or json",
        choices=("table", "csv", "json"),
    )
    _evaluation_options(demo)

    rems = commands.add_parser(
        "rems-server",
        help="run the reference REMS service (the 2021 Clozapine REMS rules)",
        description="Run the reference REMS service. Tokens come from the environment only: "
        "REMS_ADAPTER_REMS_SERVER_ADMIN_TOKEN (needed by /admin/* writes) and "
        "REMS_ADAPTER_REMS_SERVER_TOKEN (then needed by every other endpoint except /healthz "
        "and /metrics).",
        **sub,
    )
    _setting(rems, "rems_server.port", "TCP port to listen on (default 8771)", type=int)
    _setting(rems, "rems_server.db", "SQLite database file (default rems-service.sqlite)")
    _setting(rems, "rems_server.seed", "JSON or TOML file of certified actors to load")
    _setting(rems, "rems_server.host", "address to bind (default 127.0.0.1)")
    _setting(rems, "rems_server.rules", "program rules TOML (default: mappings/rems-program.toml)")
    rems.add_argument(
        "--insecure-admin",
        dest="rems_server.insecure_admin",
        action="store_const",
        const=True,
        default=None,
        help="allow /admin/* writes without an admin token (tests and demos only)",
    )

    watch = watch_cli.add_parser(commands, **sub)
    _rems_options(watch)

    serve = commands.add_parser(
        "serve",
        help="service mode: lab pushes, EHR polling, decisions written back (interfaces.md s.4)",
        description="Run the service: HTTP endpoints for lab pushes (POST /fhir/Observation, "
        "POST /fhir), /healthz, /readyz, /metrics; polling of the EHR (unless --no-poll); the "
        "decision backend; the durable inbox and outbox. Secrets only from the environment: "
        "REMS_ADAPTER_INBOUND_TOKEN (required to listen beyond loopback), "
        "REMS_ADAPTER_FHIR_TOKEN, REMS_ADAPTER_REMS_TOKEN.",
        **sub,
    )
    _setting(serve, "fhir.base_url", "EHR FHIR R4 base URL (fhir.base_url)", metavar="URL")
    _setting(
        serve,
        "serve.listen",
        "HOST:PORT of the HTTP endpoints (default 127.0.0.1:8770)",
        metavar="HOST:PORT",
    )
    _setting(
        serve,
        "serve.state",
        "state store: SQLite file (default rems-adapter.sqlite) or postgresql:// URL",
        metavar="DSN",
    )
    _setting(
        serve,
        "serve.mllp",
        "HOST:PORT of the HL7 v2 MLLP listener (off by default)",
        metavar="HOST:PORT",
    )
    serve.add_argument(
        "--no-poll",
        dest="serve.poll",
        action="store_const",
        const=False,
        default=None,
        help="do not poll the EHR (push, notify and MLLP only)",
    )
    _rems_options(serve)
    _evaluation_options(serve)

    outbox = commands.add_parser(
        "outbox",
        help="list, show or replay the outbox's dead letters (effects serve gave up on)",
        description="Dead letters are effects (DetectedIssue writes) the EHR refused or that "
        "failed too often. `list` shows them, `show ID` one in full, `replay ID ...` (or "
        "--all) queues them again for a running serve.",
        **sub,
    )
    outbox.add_argument("action", nargs="?", default="list", choices=("list", "show", "replay"))
    outbox.add_argument("ids", nargs="*", metavar="ID", help="effect ids (from `outbox list`)")
    outbox.add_argument("--all", action="store_true", help="replay every dead letter")
    outbox.add_argument("--pending", action="store_true", help="list the pending effects instead")
    outbox.add_argument("--json", action="store_true", help="one JSON object a line")
    _setting(outbox, "serve.state", "state store (default rems-adapter.sqlite)", metavar="DSN")

    audit = commands.add_parser(
        "audit",
        help="every decision recorded for a patient (inputs, rules, outcome, time)",
        **sub,
    )
    audit.add_argument("patient", metavar="PATIENT", help="Patient id or Patient/id")
    audit.add_argument("--json", action="store_true", help="one JSON object a line")
    _setting(audit, "serve.state", "state store (default rems-adapter.sqlite)", metavar="DSN")

    backfill = commands.add_parser(
        "backfill",
        help="batch mode over a FHIR Bulk Data $export of the EHR (optionally write back)",
        description="Run a FHIR Bulk Data $export on the EHR (what the rules need only), follow "
        "it to its end, download the NDJSON files, decide them in batch mode (the outputs of "
        "'run') and, with --write-back, write the DetectedIssues to the EHR as watch does. "
        "Ctrl-C cancels a running export on the server. EHR settings and secrets as for watch.",
        **sub,
    )
    _setting(backfill, "fhir.base_url", "EHR FHIR R4 base URL (fhir.base_url)", metavar="URL")
    backfill.add_argument("--out", required=True, type=Path, help="output folder (as for run)")
    backfill.add_argument("--as-of", default=None, help="evaluation clock (default: now)")
    export = backfill.add_argument_group("the export")
    _setting(
        export,
        "backfill.since",
        "only resources changed since this instant (_since; a date means its start)",
        metavar="INSTANT",
    )
    _setting(
        export,
        "backfill.level",
        "system (default), patient, or group (with --group)",
        choices=("system", "patient", "group"),
    )
    _setting(export, "backfill.group", "export the members of this Group", metavar="ID")
    _setting(
        export,
        "backfill.work_dir",
        "keep the downloaded files in this folder (default: a temporary one, removed)",
        metavar="DIR",
    )
    export.add_argument(
        "--write-back",
        dest="backfill.write_back",
        action="store_const",
        const=True,
        default=None,
        help="write the DetectedIssues to the EHR (as watch does)",
    )
    scale = backfill.add_argument_group("reading at scale (as for run)")
    _setting(
        scale,
        "batch.jobs",
        "processes, this one and its workers (default: the machine's CPUs)",
        type=int,
    )
    scale.add_argument(
        "--strict",
        dest="batch.strict",
        action="store_const",
        const=True,
        default=None,
        help="parse and check every line of the export",
    )
    _rems_options(backfill)
    _evaluation_options(backfill)
    mllp = commands.add_parser(
        "mllp",
        help="the HL7 v2 MLLP source of serve: results waiting for their patient",
        description="`unmatched` lists HL7 v2 results stored and acknowledged whose patient "
        "the EHR does not know yet (PID-3 under mllp.assigning_authority); they are decided "
        "once it does.",
        **sub,
    )
    mllp.add_argument("action", nargs="?", default="unmatched", choices=("unmatched", "send"))
    mllp.add_argument(
        "files", nargs="*", metavar="FILE", help="send: HL7 v2 message files (one message each)"
    )
    mllp.add_argument("--to", metavar="HOST:PORT", help="send: the MLLP listener to send to")
    mllp.add_argument("--json", action="store_true", help="one JSON object a line")
    _setting(mllp, "serve.state", "state store (default rems-adapter.sqlite)", metavar="DSN")
    return parser


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key in FLAGS}


# ------------------------------------------------------------------ the guard


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point. Returns the exit code (see EXIT_HELP)."""
    logs.configure()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        flags = flags_of(args)
        logs.configure(
            flags.get("log.level") or "INFO",
            flags.get("log.format") or "text",
            bool(flags.get("log.quiet")),
        )
        loaded = load_settings(config_file=args.config, environ=os.environ, flags=flags)
        log_settings = loaded.settings.log
        logs.configure(log_settings.level, log_settings.format, log_settings.quiet)
        if args.check_config:
            print(render(loaded, SECTIONS[args.command]))
            return 0
        return COMMANDS[args.command](args, loaded)
    except AdapterError as error:
        return report(error)
    except KeyboardInterrupt:
        log.warning("rems-adapter: interrupted")
        return 130
    except BrokenPipeError:
        # Whoever read standard output stopped (`rems-adapter run ... | head`): no
        # configuration error, and no second one when the interpreter flushes it at exit.
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # the last guard: one line, the trace only at DEBUG
        log.debug("unexpected error", exc_info=True)
        return report(_unexpected(error))


def _unexpected(error: Exception) -> AdapterError:
    if isinstance(error, OSError) and error.strerror:
        # a file-system failure nothing above anticipated: its path and reason are safe to show
        where = f" ({error.filename})" if error.filename else ""
        return ConfigurationError(f"{error.strerror}{where}")
    return as_adapter_error(error)


def report(error: AdapterError) -> int:
    log.debug("error detail", exc_info=error)
    log.error("%s", error.one_line())
    return error.exit_code


# ------------------------------------------------------------------ run


def output_folder(path: Path, flag: str) -> Path:
    """The output folder, created if needed, or a usage error naming the flag."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder", where=flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {path}: {error.strerror}", where=flag) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{path} is not writable", where=flag)
    return path


def rems_settings(loaded: Loaded) -> RemsSettings | None:
    rems = loaded.settings.rems
    if rems.backend == "local":
        return None
    try:
        url = check_base_url(rems.backend)
    except RemsConfigurationError as error:
        raise loaded.error("rems.backend", f"{error.message} (or 'local')") from error
    return RemsSettings(
        url=url,
        rems_id_system=rems.patient_id_system,
        pharmacy_id_system=rems.pharmacy_id_system,
        designee_id=rems.designee,
        pharmacy_id=rems.pharmacy_id,
        timeouts=Timeouts(connect=min(rems.timeout, 5.0), read=rems.timeout),
        retry=RetryPolicy(max_attempts=rems.attempts),
        token=rems.token.get_secret_value() if rems.token else None,
    )


class Progress:
    """A progress line on stderr while reading, only on a terminal and not with --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = monotonic_time.monotonic()
        self.shown = False

    def __call__(self, count: int) -> None:
        if not self.enabled:
            return
        seconds = max(monotonic_time.monotonic() - self.started, 1e-6)
        sys.stderr.write(
            f"\r{plural(count, 'resource')} read, {count / seconds:,.0f}/s, {seconds:.0f} s"
        )
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _progress(loaded: Loaded) -> Progress:
    return Progress(sys.stderr.isatty() and not loaded.settings.log.quiet)


def report_problems(problems: Sequence[InputProblem], out: Path) -> None:
    """The first PROBLEMS_SHOWN problems on stderr, then counts by kind; all in the file."""
    for problem in problems[:PROBLEMS_SHOWN]:
        log.warning("input problem: %s", problem)
    rest = problems[PROBLEMS_SHOWN:]
    if rest:
        counts = Counter(problem.message for problem in rest)
        by_kind = "; ".join(f"{n} x {message}" for message, n in counts.most_common())
        log.warning(
            "%d more input %s (all in %s): %s",
            len(rest),
            "problem" if len(rest) == 1 else "problems",
            out / PROBLEMS_FILE,
            by_kind,
        )


def run_command(args: argparse.Namespace, loaded: Loaded) -> int:
    started = monotonic_time.monotonic()
    site_tz = site_zone(loaded)
    evaluation = loaded.settings.evaluation
    data = load_reference_data(Path(evaluation.mappings) if evaluation.mappings else None)
    settings = BatchSettings(
        sources=tuple(args.source),
        out=args.out,
        as_of=parse_as_of(args.as_of, site_tz),
        site_tz=site_tz,
        derive_anc=evaluation.derive_anc,
        rems=rems_settings(loaded),
        strict=loaded.settings.batch.strict,
        jobs=loaded.settings.batch.jobs,
        retain=False,  # the summary needs counts only: memory stays flat on large inputs
    )
    output_folder(args.out, "--out")
    report_file = report_path(args.report) if args.report is not None else None
    progress = _progress(loaded)
    builder = ReportBuilder() if report_file is not None else None
    try:
        result = run_batch(settings, data, progress, observe=builder)
    finally:
        progress.done()
    report_problems(result.problems, args.out)
    for note in result.notes:
        log.warning("REMS: %s", note)
    summary = result.summary(args.out, monotonic_time.monotonic() - started)
    if builder is not None and report_file is not None:
        builder.write(data.protocol, report_file)
        summary += f"\nReport: {report_file}"
    _say(loaded, summary)
    return 0


def report_path(path: Path) -> Path:
    """The report file: its folder must exist and be writable; not a folder itself."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a file", where="--report")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"folder {folder} does not exist", where="--report")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"folder {folder} is not writable", where="--report")
    return path


def _say(loaded: Loaded, text: str) -> None:
    """The command's result on stdout, unless --quiet."""
    if not loaded.settings.log.quiet:
        print(text, flush=True)


# ------------------------------------------------------------------ demo


def demo_folder(loaded: Loaded) -> Path:
    configured = loaded.settings.demo.out
    if configured:
        return output_folder(Path(configured), loaded.name("demo.out"))
    from platformdirs import user_cache_path

    return output_folder(user_cache_path("rems-adapter") / "demo", "the demo cache folder")


def demo_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.demo.command import run_demo

    started = monotonic_time.monotonic()
    site_tz = site_zone(loaded)
    evaluation = loaded.settings.evaluation
    data = load_reference_data(Path(evaluation.mappings) if evaluation.mappings else None)
    folder = demo_folder(loaded)
    result, text = run_demo(
        folder,
        site_tz,
        data,
        derive_anc=evaluation.derive_anc,
        output_format=loaded.settings.demo.format,
    )
    report_problems(result.problems, folder)
    if loaded.settings.demo.format == "table":
        _say(loaded, text + "\n\n" + result.summary(folder, monotonic_time.monotonic() - started))
    else:
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
    return 0


# ------------------------------------------------------------------ rems-server


def rems_server_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.rems_service.server import ServerOptions, serve_options

    settings = loaded.settings.rems_server
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    token = settings.token.get_secret_value() if settings.token else None
    host_name = loaded.name("rems_server.host")
    if not loopback(settings.host) and not (token and (admin_token or settings.insecure_admin)):
        raise loaded.error(
            "rems_server.host",
            f"refusing to listen on {settings.host} (not a loopback address) without tokens: "
            "set REMS_ADAPTER_REMS_SERVER_TOKEN and REMS_ADAPTER_REMS_SERVER_ADMIN_TOKEN",
        )
    if admin_token is None and not settings.insecure_admin:
        log.warning(
            "no admin token (REMS_ADAPTER_REMS_SERVER_ADMIN_TOKEN): /admin/* writes are "
            "refused; pass --insecure-admin to allow them without one"
        )
    for key in ("rems_server.seed", "rems_server.rules"):
        value = loaded.settings.rems_server.seed if key.endswith("seed") else settings.rules
        if value is not None and not Path(value).is_file():
            raise loaded.error(key, f"no such file: {value}")
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigurationError(
            f"cannot resolve '{settings.host}': {error}", where=host_name
        ) from error
    serve_options(
        ServerOptions(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            seed=settings.seed,
            rules=settings.rules,
            admin_token=admin_token,
            token=token,
            insecure_admin=settings.insecure_admin,
            where={key: loaded.name(f"rems_server.{key}") for key in ("host", "port", "db")},
        )
    )
    return 0


# ------------------------------------------------------------------ watch


def watch_command(args: argparse.Namespace, loaded: Loaded) -> int:
    """`watch` is `serve` with only the poll source (no HTTP endpoints), same flags as ever."""
    from adapter.serve.command import run_watch

    return run_watch(
        loaded,
        decision_backend(loaded),
        once=args.once,
        as_of=args.as_of,
        reconcile=bool(getattr(args, "reconcile", False)),
    )


# ------------------------------------------------------------------ serve


def serve_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.serve.command import run as serve

    return serve(loaded, decision_backend(loaded))


def decision_backend(loaded: Loaded) -> Backend:
    """The backend --rems names: local (the core) or a REMS service."""
    settings = rems_settings(loaded)
    if settings is None:
        return LocalBackend()
    mappings = loaded.settings.evaluation.mappings
    data = load_reference_data(Path(mappings) if mappings else None)
    return RemsDecider(settings, data.protocol, site_zone(loaded))


def _existing_store(loaded: Loaded) -> Store:
    dsn = loaded.settings.serve.state
    if not is_postgres(dsn) and not Path(dsn).is_file():
        raise UnreadableInputError(f"no state store at {dsn}", where=loaded.name("serve.state"))
    return open_store(dsn)


def outbox_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.serve import operator

    store = _existing_store(loaded)
    try:
        if args.action == "list":
            state = "pending" if args.pending else "dead"
            return operator.outbox_list(store, sys.stdout, state=state, as_json=args.json)
        if args.action == "show":
            if not args.ids:
                raise UsageError("name the effect to show (an ID from `outbox list`)", where="ID")
            return operator.outbox_show(store, args.ids, sys.stdout)
        return operator.outbox_replay(store, args.ids, sys.stdout, every=args.all)
    finally:
        store.close()


def audit_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.serve import operator

    store = _existing_store(loaded)
    try:
        return operator.audit(store, args.patient, sys.stdout, as_json=args.json)
    finally:
        store.close()


# ------------------------------------------------------------------ backfill


def backfill_command(args: argparse.Namespace, loaded: Loaded) -> int:
    from adapter.backfill.command import backfill_options, run_backfill

    started = monotonic_time.monotonic()
    site_tz = site_zone(loaded)
    evaluation = loaded.settings.evaluation
    data = load_reference_data(Path(evaluation.mappings) if evaluation.mappings else None)
    rems = rems_settings(loaded)
    options = backfill_options(loaded, data, site_tz, identities=rems is not None)
    settings = BatchSettings(
        sources=(),
        out=args.out,
        as_of=parse_as_of(args.as_of, site_tz),
        site_tz=site_tz,
        derive_anc=evaluation.derive_anc,
        rems=rems,
        strict=loaded.settings.batch.strict,
        jobs=loaded.settings.batch.jobs,
        retain=False,  # the summary needs counts only: memory stays flat on large exports
    )
    output_folder(args.out, "--out")
    progress = _progress(loaded)
    try:
        result = run_backfill(loaded, options, settings, data, progress)
    finally:
        progress.done()
    if result.batch is not None:
        report_problems(result.batch.problems, args.out)
        for note in result.batch.notes:
            log.warning("REMS: %s", note)
    _say(loaded, result.summary(args.out, monotonic_time.monotonic() - started))
    if result.written is not None and result.written.refused_count:
        raise UpstreamError(
            f"the EHR refused {plural(result.written.refused_count, 'DetectedIssue write')} "
            "(the outputs are complete; run backfill --write-back again once the cause is fixed)",
            where="--write-back",
        )
    return 0


# ------------------------------------------------------------------ mllp


def mllp_send(args: argparse.Namespace) -> int:
    """Send each file as one message; print MSA-1 and MSA-2 of its ACK (exit 5 unless every
    message was accepted)."""
    from adapter.mllp.client import MllpClient

    if not args.to or not args.files:
        raise UsageError("send needs --to HOST:PORT and at least one FILE", where="--to")
    host, sep, port = args.to.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"'{args.to}' is not HOST:PORT", where="--to")
    payloads = []
    for name in args.files:
        try:
            payloads.append((name, Path(name).read_bytes()))
        except OSError as error:
            raise UnreadableInputError(error.strerror or "cannot be read", where=name) from error
    accepted = True
    with MllpClient(host.strip("[]"), int(port)) as client:
        for name, payload in payloads:
            ack = client.send(payload).decode("utf-8", "replace")
            msa = next((line for line in ack.split("\r") if line.startswith("MSA")), "MSA")
            fields = [*msa.split("|"), "", ""]
            code, control = fields[1], fields[2]
            accepted = accepted and code in ("AA", "CA")
            print(f"{name}: {code or '?'} {control}")
    return 0 if accepted else EXIT_UPSTREAM


def mllp_command(args: argparse.Namespace, loaded: Loaded) -> int:
    import json

    from adapter.pipeline.mllp_source import unmatched

    if args.action == "send":
        return mllp_send(args)

    store = _existing_store(loaded)
    try:
        rows = unmatched(store)
    finally:
        store.close()
    for row in rows:
        received = datetime.fromtimestamp(row.received_at, UTC).isoformat(timespec="seconds")
        if args.json:
            identifier = {"system": row.identifier_system, "value": row.identifier_value}
            record = {"received": received, "identifier": identifier, "code": row.code}
            print(json.dumps({**record, "key": row.key}))
        else:
            print(
                f"{received}  {row.identifier_system}|{row.identifier_value}  {row.code}  {row.key}"
            )
    if not args.json:
        print(
            f"{len(rows)} result{'s' if len(rows) != 1 else ''} waiting for their patient",
            file=sys.stderr,
        )
    return 0


COMMANDS: Mapping[str, Callable[[argparse.Namespace, Loaded], int]] = {
    "run": run_command,
    "demo": demo_command,
    "rems-server": rems_server_command,
    "watch": watch_command,
    "serve": serve_command,
    "outbox": outbox_command,
    "audit": audit_command,
    "backfill": backfill_command,
    "mllp": mllp_command,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
