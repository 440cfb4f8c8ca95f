"""The composition root of ``rems-adapter backfill``: export, download, decide, (write back).

    rems-adapter backfill --fhir-base URL --out DIR [--since INSTANT] [--group ID | --level L]
                          [--as-of DATETIME] [--work-dir DIR] [--write-back]

1. a Bulk Data ``$export`` (adapter.ehr.bulk) of what batch mode reads (adapter.backfill.plan),
   followed to its manifest; Ctrl-C or SIGTERM while it runs cancels it on the server (DELETE);
2. every output file streamed to a working folder (a temporary one unless ``--work-dir``);
3. batch mode (adapter.batch.run) over that folder: the same outputs as ``run``;
4. with ``--write-back``, the DetectedIssues written to the EHR as ``watch`` writes them
   (adapter.watch.writeback).

Errors propagate to the CLI guard (adapter.cli.main): one line and the exit code of their kind.
Logs name counts, sizes, resource types and URL paths, never patient data.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from adapter.backfill.plan import (
    Scope,
    decisions_request,
    export_request,
    group_members,
    read_since,
)
from adapter.backfill.writeback import WriteBackReport, write_back
from adapter.batch.run import BatchResult, BatchSettings, Progress, plural, run_batch
from adapter.core.model import WITHDRAWING_STATUSES
from adapter.core.reference import ReferenceData
from adapter.ehr import FhirClient
from adapter.ehr.bulk import (
    BulkClient,
    BulkExportCancelled,
    BulkExportTimedOut,
    Downloaded,
    ExportRequest,
    Manifest,
    PollPolicy,
    Status,
    outcome_issues,
)
from adapter.ehr.errors import OutcomeIssue, redact_url
from adapter.errors import UsageError
from adapter.fhir.read import reference
from adapter.settings import Loaded
from adapter.watch.cli import build_client
from adapter.watch.config import _fhir as fhir_settings

log = logging.getLogger("adapter.backfill")

EXPORT_FOLDER = "export"
ERRORS_FOLDER = "errors"


@dataclass(frozen=True)
class BackfillOptions:
    request: ExportRequest
    poll: PollPolicy
    work_dir: Path | None
    write_back: bool
    #: as watch writes: batch Bundles ([watch] use_bundles) of write_batch_size writes
    use_bundles: bool = True
    write_batch_size: int = 100


def backfill_options(
    loaded: Loaded, data: ReferenceData, site_tz: tzinfo, *, identities: bool
) -> BackfillOptions:
    """The checked options from the effective settings (types and bounds in adapter.settings;
    what needs several keys here)."""
    settings = loaded.settings.backfill
    group = settings.group
    level = settings.level
    if group is not None:
        group = group.removeprefix("Group/")
        if not group or "/" in group or "?" in group or len(group) > 64:
            raise loaded.error("backfill.group", f"{settings.group!r} is not a Group id")
        if level == "patient":
            raise loaded.error("backfill.level", "'patient' does not go with a Group")
        level = "group"
    elif level == "group":
        raise loaded.error("backfill.level", "'group' needs a Group id (--group)")
    since = None
    if settings.since is not None:
        try:
            since = read_since(settings.since, site_tz)
        except ValueError as error:
            raise loaded.error("backfill.since", str(error)) from error
    work_dir = Path(settings.work_dir) if settings.work_dir else None
    if work_dir is not None and work_dir.exists() and not work_dir.is_dir():
        raise loaded.error("backfill.work_dir", f"{work_dir} exists and is not a folder")
    poll = PollPolicy(
        interval=settings.poll_interval_seconds,
        min_interval=min(0.5, settings.poll_interval_seconds),
        max_interval=max(settings.max_poll_interval_seconds, settings.poll_interval_seconds),
        max_polls=settings.max_polls,
        max_wait_seconds=settings.max_wait_seconds,
    )
    return BackfillOptions(
        request=export_request(data, Scope(level, group), since, identities=identities),
        poll=poll,
        work_dir=work_dir,
        write_back=settings.write_back,
        use_bundles=loaded.settings.watch.use_bundles,
        write_batch_size=loaded.settings.watch.write_batch_size,
    )


@dataclass
class BackfillResult:
    manifest: Manifest
    files: list[Downloaded] = field(default_factory=list)
    server_issues: tuple[OutcomeIssue, ...] = ()
    status_requests: int = 0
    export_seconds: float = 0.0
    batch: BatchResult | None = None
    batch_seconds: float = 0.0
    kept_in: Path | None = None
    written: WriteBackReport | None = None

    def summary(self, out: Path, seconds: float) -> str:
        exported = sum(f.lines for f in self.files)
        megabytes = sum(f.bytes for f in self.files) / 1e6
        lines = [
            f"Exported {plural(exported, 'resource')} in {plural(len(self.files), 'file')} "
            f"({megabytes:.1f} MB; the export took {self.export_seconds:.1f} s, "
            f"{plural(self.status_requests, 'status request')}).",
        ]
        if self.server_issues:
            lines.append(
                f"The server reported {plural(len(self.server_issues), 'issue')} "
                "with the export (on stderr)."
            )
        if self.kept_in is not None:
            lines.append(f"Exported files kept in {self.kept_in}")
        if self.batch is not None:
            lines.append(self.batch.summary(out, self.batch_seconds))
        if self.written is not None:
            lines.append(self.written.summary())
        lines.append(f"Backfill done in {seconds:.1f} s.")
        return "\n".join(lines)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the command like Ctrl-C does (KeyboardInterrupt), so that a running
    export is cancelled on the server and temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _working_folder(work_dir: Path | None) -> tuple[Path, Callable[[], None]]:
    if work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="rems-adapter-backfill-")
        return Path(temporary.name), temporary.cleanup
    try:
        for sub in ("", EXPORT_FOLDER, ERRORS_FOLDER):
            (work_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create {work_dir}: {error.strerror}", where="--work-dir"
        ) from error
    # export/ and errors/ are this command's: emptied, so that batch mode reads this export
    # only; at the top, only the manifest is replaced (a rerun replaces, never appends)
    for sub in (EXPORT_FOLDER, ERRORS_FOLDER):
        for stale in (work_dir / sub).iterdir():
            if stale.is_file() and stale.name.endswith((".ndjson", ".json", ".jsonl", ".part")):
                stale.unlink()
    (work_dir / "manifest.json").unlink(missing_ok=True)
    return work_dir, lambda: None


class _StatusLog:
    """The export's progress: logged when X-Progress changes (INFO), each poll at DEBUG."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.polls = 0

    def __call__(self, status: Status) -> None:
        self.polls = status.polls
        shown = status.progress or "in progress"
        level = logging.INFO if shown != self.last else logging.DEBUG
        log.log(level, "export running: %s (%.0f s)", shown, status.elapsed)
        self.last = shown


def run_backfill(
    loaded: Loaded,
    options: BackfillOptions,
    batch: BatchSettings,
    data: ReferenceData,
    progress: Progress | None = None,
    *,
    client: FhirClient | None = None,
) -> BackfillResult:
    client = client or build_client(fhir_settings(loaded))
    try:
        with _sigterm_interrupts():
            return _run(client, options, batch, data, progress)
    finally:
        client.close()


def _run(
    client: FhirClient,
    options: BackfillOptions,
    batch: BatchSettings,
    data: ReferenceData,
    progress: Progress | None,
) -> BackfillResult:
    bulk = BulkClient(client)
    started = time.monotonic()
    status_url, manifest, polls = _follow(bulk, options.request, options.poll)
    result = BackfillResult(
        manifest=manifest,
        status_requests=polls,
        export_seconds=time.monotonic() - started,
    )
    folder, cleanup = _working_folder(options.work_dir)
    try:
        (folder / "manifest.json").write_text(
            json.dumps(dict(manifest.raw), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        export_dir = folder / EXPORT_FOLDER
        export_dir.mkdir(exist_ok=True)
        try:
            result.files = _download(bulk, manifest, export_dir, "output")
            result.server_issues = _server_issues(bulk, manifest, folder / ERRORS_FOLDER)
        finally:
            # The files are ours now (or no longer wanted): the server may remove them.
            bulk.cancel(status_url, done=True)
        if options.request.level != "system" and not any(
            f.type == "DetectedIssue" for f in manifest.output
        ):
            result.files += _our_decisions(client, bulk, options, export_dir, len(result.files))
        decided = time.monotonic()
        result.batch = run_batch(replace(batch, sources=(str(export_dir),)), data, progress)
        result.batch_seconds = time.monotonic() - decided
        if options.write_back:
            result.written = write_back(
                client,
                _issues(batch.out / "DetectedIssue.ndjson"),
                use_bundles=options.use_bundles,
                batch_size=options.write_batch_size,
                withdrawn_already=_withdrawn_on_server(result.files),
            )
        if options.work_dir is not None:
            result.kept_in = folder
        return result
    finally:
        cleanup()


def _withdrawn_on_server(files: Iterable[Downloaded]) -> set[str]:
    """Ids of the exported DetectedIssues that are withdrawn already (cancelled or entered in
    error): what a replay must not write again."""
    withdrawn: set[str] = set()
    for downloaded in files:
        if downloaded.file.type != "DetectedIssue":
            continue
        for issue in _issues(downloaded.path):
            if issue.get("status") in WITHDRAWING_STATUSES:
                withdrawn.add(str(issue.get("id")))
    return withdrawn


def _issues(path: Path) -> Iterator[dict[str, Any]]:
    """The DetectedIssues batch mode wrote, one at a time (the file can be large)."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def _follow(
    bulk: BulkClient, request: ExportRequest, poll: PollPolicy
) -> tuple[str, Manifest, int]:
    """Kick the export off and follow it to its manifest; on Ctrl-C, SIGTERM or the polling
    bounds it is cancelled on the server. Returns (status URL, manifest, status requests)."""
    status_url = bulk.kick_off(request)
    status = _StatusLog()
    try:
        manifest = bulk.wait(status_url, poll, on_status=status)
    except (KeyboardInterrupt, BulkExportCancelled):
        log.warning("interrupted: cancelling the export on the server")
        bulk.cancel(status_url)
        raise KeyboardInterrupt from None
    except BulkExportTimedOut:
        bulk.cancel(status_url)
        raise
    return status_url, manifest, status.polls + 1


def _download(
    bulk: BulkClient, manifest: Manifest, folder: Path, what: str, start: int = 0
) -> list[Downloaded]:
    files = manifest.output if what == "output" else manifest.error
    out = []
    for index, item in enumerate(files, 1):
        path = folder / f"{start + index:04d}-{item.type}.ndjson"
        done = bulk.download(item, path, requires_access_token=manifest.requires_access_token)
        log.info(
            "downloaded %s file %d of %d (%s, %.1f MB) from %s",
            item.type,
            index,
            len(files),
            plural(done.lines, "line"),
            done.bytes / 1e6,
            redact_url(item.url),
        )
        out.append(done)
    return out


def _our_decisions(
    client: FhirClient,
    bulk: BulkClient,
    options: BackfillOptions,
    folder: Path,
    already: int,
) -> list[Downloaded]:
    """Our DetectedIssues from a system-level export (plan.decisions_request), kept for the
    exported patients only (a Group's members)."""
    log.info(
        "the %s export held no DetectedIssue: exporting ours at the system level (earlier "
        "decisions and the mitigations people added)",
        options.request.level,
    )
    status_url, manifest, _ = _follow(bulk, decisions_request(options.request.since), options.poll)
    members = None
    if options.request.group is not None:
        members = group_members(client.read("Group", options.request.group))
    try:
        downloaded = _download(bulk, manifest, folder, "output", start=already)
    finally:
        bulk.cancel(status_url, done=True)
    if members is None:
        return downloaded
    kept = []
    for done in downloaded:
        lines = 0
        narrowed = done.path.with_name(f".{done.path.name}.members")
        with done.path.open("rb") as source, narrowed.open("wb") as target:
            for line in source:
                if not line.strip():
                    continue
                try:
                    parsed = orjson.loads(line)
                    patient = reference(parsed.get("patient")) if isinstance(parsed, dict) else None
                    keep = patient in members
                except orjson.JSONDecodeError:
                    keep = True  # malformed: kept, for batch mode to report
                if keep:
                    target.write(line)
                    lines += 1
        narrowed.replace(done.path)
        kept.append(replace(done, lines=lines, bytes=done.path.stat().st_size))
    return kept


def _server_issues(bulk: BulkClient, manifest: Manifest, folder: Path) -> tuple[OutcomeIssue, ...]:
    """The OperationOutcomes of the manifest's `error` files, logged by severity and code (the
    servers' free text may quote resources: it stays in the files)."""
    if not manifest.error:
        return ()
    folder.mkdir(exist_ok=True)
    issues: list[OutcomeIssue] = []
    for done in _download(bulk, manifest, folder, "error"):
        with done.path.open("rb") as handle:
            issues.extend(outcome_issues(handle.readlines()))
    for issue in issues:
        log.warning("the server reported with the export: %s", issue.describe())
    return tuple(issues)
