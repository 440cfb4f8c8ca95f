"""FHIR Bulk Data Access (`$export`) client: kick-off, status polling, NDJSON downloads, cancel.

https://hl7.org/fhir/uv/bulkdata/export.html. The only code that sees the status codes of the
export flow:

- kick-off ``GET [base]/$export`` (system), ``[base]/Patient/$export`` or
  ``[base]/Group/{id}/$export`` with ``Prefer: respond-async``: 202 and ``Content-Location`` (the
  status URL); any error status is the server refusing the export (its OperationOutcome issues
  are kept on the error);
- status ``GET {status URL}``: 202 while running (``X-Progress`` shown, ``Retry-After`` honoured
  within bounds), 200 and the manifest when done, an error status (and OperationOutcome) when
  the export failed, unless every issue is `transient` (a polling failure, not the job's: poll
  again); polling is bounded in count and in time;
- ``DELETE {status URL}`` cancels (best effort: the answer is reported, never raised);
- each output file is streamed to disk (never held in memory), with the access token only when
  the manifest says ``requiresAccessToken`` and only to the FHIR server's own origin.

Errors are the EHR client's (`adapter.ehr.errors`); messages carry the request's method and URL
path (never a query: a `_typeFilter` names codes, but other servers' status URLs may carry
anything), the status and the OperationOutcome issue codes, never the servers' free text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from adapter.http.retry import parse_retry_after

from .client import FhirClient
from .errors import (
    EhrConfigurationError,
    FhirError,
    FhirNotFoundError,
    FhirResponseError,
    FhirServerError,
    FhirTransientError,
    OutcomeIssue,
    issues_from_outcome,
    redact_url,
)

log = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
Level = Literal["system", "patient", "group"]
#: The bytes read from a download at a time (the file is written as it arrives).
CHUNK_BYTES = 1 << 20


class BulkExportFailed(FhirServerError):
    """The server accepted the export and then reported that it failed (status endpoint error),
    or refused it at kick-off. `issues` holds the OperationOutcome the server sent."""


class BulkExportTimedOut(FhirTransientError):
    """The export was still running after the polling bounds (count or time)."""


class BulkExportCancelled(FhirError):
    """The caller asked to stop (Ctrl-C, SIGTERM) while the export was running."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export. `since` is a FHIR instant (sent as `_since`); `type_filters` are FHIR
    search queries (`Observation?code=...`), one `_typeFilter` parameter each."""

    level: Level = "system"
    group: str | None = None
    types: tuple[str, ...] = ()
    type_filters: tuple[str, ...] = ()
    since: str | None = None

    def __post_init__(self) -> None:
        if self.level == "group" and not self.group:
            raise EhrConfigurationError("a Group-level export needs a Group id")
        if self.level != "group" and self.group:
            raise EhrConfigurationError("a Group id needs a Group-level export")
        if self.group is not None and (
            "/" in self.group or "?" in self.group or not 0 < len(self.group) <= 64
        ):
            raise EhrConfigurationError(f"not a FHIR resource id: {self.group!r}")

    def path(self) -> tuple[str, ...]:
        if self.level == "patient":
            return ("Patient", "$export")
        if self.level == "group":
            assert self.group is not None
            return ("Group", self.group, "$export")
        return ("$export",)

    def params(self) -> list[tuple[str, str]]:
        out = [("_outputFormat", NDJSON)]
        if self.types:
            out.append(("_type", ",".join(self.types)))
        if self.since:
            out.append(("_since", self.since))
        out.extend(("_typeFilter", query) for query in self.type_filters)
        return out


@dataclass(frozen=True)
class OutputFile:
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class Manifest:
    transaction_time: str
    requires_access_token: bool
    output: tuple[OutputFile, ...]
    error: tuple[OutputFile, ...]
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class PollPolicy:
    """How the status endpoint is followed: `interval` when the server sends no Retry-After,
    every wait clamped to [`min_interval`, `max_interval`]; at most `max_polls` requests and
    `max_wait_seconds` in all, then `BulkExportTimedOut`."""

    interval: float = 5.0
    min_interval: float = 0.5
    max_interval: float = 120.0
    max_polls: int = 2000
    max_wait_seconds: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.max_polls < 1:
            raise EhrConfigurationError("max_polls must be at least 1")
        if not 0 <= self.min_interval <= self.max_interval or self.interval < 0:
            raise EhrConfigurationError("poll intervals must satisfy 0 <= min <= max")
        if self.max_wait_seconds < 0:
            raise EhrConfigurationError("max_wait_seconds must not be negative")


@dataclass(frozen=True)
class Status:
    """One answer of the status endpoint while the export runs."""

    polls: int
    elapsed: float
    progress: str | None  # X-Progress, printable and shortened


@dataclass(frozen=True)
class Downloaded:
    file: OutputFile
    path: Path
    bytes: int
    lines: int


def _printable(text: str | None, limit: int = 60) -> str | None:
    if not text:
        return None
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()
    return cleaned[:limit] or None


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname, port


class BulkClient:
    """Runs `$export` on the EHR behind `client` (its base URL, auth and transport)."""

    def __init__(
        self,
        client: FhirClient,
        *,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.transport = client.transport
        self.sleep = sleep or self.transport.sleep
        self.monotonic = monotonic

    # -- plumbing ------------------------------------------------------------------------------

    def _same_origin(self, url: str) -> bool:
        return _origin(url) == _origin(self.client.base_url)

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Sequence[tuple[str, str]] | None = None,
        authorized: bool = True,
        stream: bool = False,
    ) -> requests.Response:
        """One request (retried on 429/502/503/504 and network failures by the transport),
        re-authorised once on a 401; an error status raises the client's FhirError."""
        auth = self.client.auth if authorized else None
        if auth is not None and not self._same_origin(url):
            raise FhirResponseError(
                "the server points to another host; the access token is not sent there",
                method=method,
                url=url,
            )

        def authorize() -> Mapping[str, str]:
            return auth.headers(self.transport, self.client.base_url) if auth else {}

        response, attempts = self.transport.send(
            method,
            url,
            idempotent=True,
            params=params,
            headers=headers,
            authorize=authorize,
            stream=stream,
        )
        if response.status_code == 401 and auth is not None and auth.invalidate():
            response.close()
            log.info("%s %s -> 401; re-authorising once", method, redact_url(url))
            response, more = self.transport.send(
                method,
                url,
                idempotent=True,
                params=params,
                headers=headers,
                authorize=authorize,
                stream=stream,
            )
            attempts += more
        if 300 <= response.status_code < 400:
            response.close()
            raise FhirResponseError(
                "unexpected redirect; not followed",
                method=method,
                url=url,
                status=response.status_code,
            )
        if response.status_code >= 400:
            try:
                return_error = self.client._error_for(response, method, url, attempts)
            finally:
                response.close()
            raise return_error
        return response

    # -- kick-off ------------------------------------------------------------------------------

    def kick_off(self, request: ExportRequest) -> str:
        """Start the export; returns the status URL."""
        url = "/".join([self.client.base_url, *request.path()])
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        try:
            response = self._send("GET", url, headers=headers, params=request.params())
        except FhirServerError as error:
            raise BulkExportFailed(
                "the server refused the export", **_error_fields(error)
            ) from error
        with response:
            location = response.headers.get("Content-Location")
            if response.status_code != 202 or not location:
                raise FhirResponseError(
                    f"expected 202 Accepted with a Content-Location, got {response.status_code}"
                    + ("" if location else " without one"),
                    method="GET",
                    url=url,
                    status=response.status_code,
                )
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FhirResponseError(
                "the status URL (Content-Location) is not an http(s) URL",
                method="GET",
                url=url,
                status=202,
            )
        log.info("export started at %s; status at %s", redact_url(url), redact_url(location))
        return location

    # -- status --------------------------------------------------------------------------------

    def wait(
        self,
        status_url: str,
        policy: PollPolicy | None = None,
        *,
        on_status: Callable[[Status], None] | None = None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Manifest:
        """Poll the status URL until the manifest comes (bounded by `policy`)."""
        policy = policy or PollPolicy()
        started = self.monotonic()
        headers = {"Accept": "application/json"}
        for polls in range(1, policy.max_polls + 1):
            if stopped():
                raise BulkExportCancelled(
                    "stopped while the export ran", method="GET", url=status_url
                )
            try:
                response = self._send("GET", status_url, headers=headers)
            except FhirNotFoundError as error:
                raise BulkExportFailed(
                    "the export is unknown to the server (expired or cancelled)",
                    **_error_fields(error),
                ) from error
            except FhirServerError as error:
                if not (error.issues and all(i.code == "transient" for i in error.issues)):
                    raise BulkExportFailed(
                        "the server reports that the export failed", **_error_fields(error)
                    ) from error
                # Bulk Data: a polling failure that is not the job's says `transient`: poll
                # again later (within the same bounds)
                log.info("status request failed (%s); polling again", error)
                progress, retry_after = None, None
            else:
                with response:
                    if response.status_code == 200:
                        return self._manifest(response, status_url)
                    if response.status_code != 202:
                        raise FhirResponseError(
                            f"unexpected status {response.status_code} from the status endpoint",
                            method="GET",
                            url=status_url,
                            status=response.status_code,
                        )
                    progress = _printable(response.headers.get("X-Progress"))
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), self.transport.clock()
                    )
            elapsed = self.monotonic() - started
            if on_status is not None:
                on_status(Status(polls, elapsed, progress))
            wait = policy.interval if retry_after is None else retry_after
            wait = min(max(wait, policy.min_interval), policy.max_interval)
            if polls == policy.max_polls or elapsed + wait > policy.max_wait_seconds:
                break
            self._pause(wait, stopped, status_url)
        raise BulkExportTimedOut(
            f"the export was still running after {polls} status request(s) and "
            f"{self.monotonic() - started:.0f} s (bounds: {policy.max_polls} requests, "
            f"{policy.max_wait_seconds:.0f} s)",
            attempts=polls,
            method="GET",
            url=status_url,
        )

    def _pause(self, seconds: float, stopped: Callable[[], bool], status_url: str) -> None:
        """Sleep in short steps so that a stop request is seen within a second."""
        deadline = self.monotonic() + seconds
        for _ in range(int(seconds) + 2):  # bounded: one step a second at most
            left = deadline - self.monotonic()
            if left <= 0:
                return
            if stopped():
                raise BulkExportCancelled(
                    "stopped while the export ran", method="GET", url=status_url
                )
            self.sleep(min(1.0, left))

    def _manifest(self, response: requests.Response, status_url: str) -> Manifest:
        def bad(why: str) -> FhirResponseError:
            return FhirResponseError(
                f"the export manifest {why}", method="GET", url=status_url, status=200
            )

        try:
            body = response.json()
        except ValueError as error:
            raise bad("is not JSON") from error
        if not isinstance(body, dict):
            raise bad("is not a JSON object")

        def files(key: str) -> tuple[OutputFile, ...]:
            raw = body.get(key) or []
            if not isinstance(raw, list):
                raise bad(f"has a '{key}' that is not a list")
            out = []
            for index, item in enumerate(raw):
                if not isinstance(item, dict):
                    raise bad(f"has a '{key}[{index}]' that is not an object")
                kind, url, count = item.get("type"), item.get("url"), item.get("count")
                if not isinstance(kind, str) or not kind.isalpha():
                    raise bad(f"has no resource type at {key}[{index}].type")
                parts = urlsplit(url) if isinstance(url, str) else None
                if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                    raise bad(f"has no http(s) URL at {key}[{index}].url")
                out.append(OutputFile(kind, str(url), count if isinstance(count, int) else None))
            return tuple(out)

        requires = body.get("requiresAccessToken")
        if requires is not None and not isinstance(requires, bool):
            raise bad("has a requiresAccessToken that is not true or false")
        transaction_time = body.get("transactionTime")
        if not isinstance(transaction_time, str):
            raise bad("has no transactionTime")
        return Manifest(
            transaction_time=transaction_time,
            # absent: assume the token is needed (sent only to the FHIR server's own origin)
            requires_access_token=requires is not False,
            output=files("output"),
            error=files("error"),
            raw=body,
        )

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, status_url: str, *, done: bool = False) -> bool:
        """DELETE the export: cancel it while it runs, or (`done`) tell the server its files
        were downloaded and may be removed. True when accepted; a refusal or failure is
        logged, never raised (best effort)."""
        what = "releasing the finished export" if done else "cancelling the export"
        try:
            response = self._send("DELETE", status_url, headers={"Accept": "application/json"})
        except FhirError as error:
            log.log(logging.INFO if done else logging.WARNING, "%s failed: %s", what, error)
            return False
        with response:
            log.info("%s: HTTP %s", what, response.status_code)
        return True

    # -- download ------------------------------------------------------------------------------

    def download(self, file: OutputFile, path: Path, *, requires_access_token: bool) -> Downloaded:
        """Stream one output file to `path` (written to a temporary name, then renamed), with
        the access token only when the manifest requires it. A transfer that breaks off is
        started again, within the transport's attempt bound."""
        headers = {"Accept": NDJSON}
        attempts = self.transport.retry.max_attempts
        for attempt in range(1, attempts + 1):
            response = self._send(
                "GET", file.url, headers=headers, authorized=requires_access_token, stream=True
            )
            temporary = path.with_name(f".{path.name}.part")
            try:
                with response, temporary.open("wb") as handle:
                    size = lines = 0
                    last = b"\n"
                    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                        if not chunk:
                            continue
                        handle.write(chunk)
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                        last = chunk[-1:]
                    if last != b"\n":
                        handle.write(b"\n")  # the last line unterminated: count it, end it
                        lines += 1
                os.replace(temporary, path)
                return Downloaded(file, path, size, lines)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                temporary.unlink(missing_ok=True)
                if attempt == attempts:
                    raise FhirTransientError(
                        f"download broke off {attempts} time(s) ({type(error).__name__})",
                        attempts=attempts,
                        method="GET",
                        url=file.url,
                    ) from error
                log.info(
                    "download of a %s file broke off (%s); again (%d of %d)",
                    file.type,
                    type(error).__name__,
                    attempt + 1,
                    attempts,
                )
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def _error_fields(error: FhirError) -> dict[str, Any]:
    return {
        "method": error.method,
        "url": error.url,
        "status": error.status,
        "issues": error.issues,
    }


def outcome_issues(lines: Sequence[bytes]) -> tuple[OutcomeIssue, ...]:
    """The issues of the OperationOutcome lines of a manifest's `error` files."""
    import json

    out: list[OutcomeIssue] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except ValueError:
            continue
        out.extend(issues_from_outcome(body))
    return tuple(out)
