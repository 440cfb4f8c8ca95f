"""Unit tests of adapter.ehr.bulk with `responses`: kick-off, status (Retry-After, X-Progress,
bounds, errors), cancel, and streamed downloads (requiresAccessToken, origins, broken transfers).
"""

from __future__ import annotations

import email.utils
import io
import itertools
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from adapter.ehr import (
    FhirClient,
    FhirResponseError,
    FhirTransientError,
    RetryPolicy,
    StaticBearerToken,
    Transport,
)
from adapter.ehr.bulk import (
    BulkClient,
    BulkExportCancelled,
    BulkExportFailed,
    BulkExportTimedOut,
    ExportRequest,
    OutputFile,
    PollPolicy,
    Status,
)
from adapter.errors import EXIT_UPSTREAM

BASE = "https://ehr.test/fhir"
STATUS = "https://ehr.test/fhir/bulk-status/job1"
FILE = "https://ehr.test/fhir/bulk-files/job1/Observation.ndjson"


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def bulk_client(fake_time: FakeTime, token: str | None = "s3cret", attempts: int = 3) -> BulkClient:
    transport = Transport(
        retry=RetryPolicy(max_attempts=attempts, max_total_seconds=60.0),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )
    auth = StaticBearerToken(token) if token else None
    return BulkClient(FhirClient(BASE, auth=auth, transport=transport), monotonic=fake_time.clock)


def outcome(code: str, text: str = "something broke") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def manifest(requires: bool | None = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transactionTime": "2026-03-02T12:00:00.000Z",
        "request": f"{BASE}/$export",
        "output": [{"type": "Observation", "url": FILE, "count": 2}],
        "error": [],
        **extra,
    }
    if requires is not None:
        body["requiresAccessToken"] = requires
    return body


def running(progress: str | None = None, retry_after: str | None = None) -> dict[str, Any]:
    headers = {}
    if progress is not None:
        headers["X-Progress"] = progress
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return {"method": "GET", "url": STATUS, "status": 202, "headers": headers}


# ------------------------------------------------------------------ kick-off


@responses.activate
def test_kick_off_asks_async_with_types_filters_and_since_and_returns_the_status_url(
    fake_time: FakeTime,
) -> None:
    responses.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": STATUS})
    request = ExportRequest(
        level="group",
        group="g1",
        types=("Condition", "Observation"),
        type_filters=("Observation?code=751-8%2C753-4", "Condition?code=hospice"),
        since="2025-01-01T00:00:00.000Z",
    )

    assert bulk_client(fake_time).kick_off(request) == STATUS

    sent = responses.calls[0].request
    assert sent.headers["Prefer"] == "respond-async"
    assert sent.headers["Authorization"] == "Bearer s3cret"
    assert parse_qsl(urlsplit(sent.url).query) == [
        ("_outputFormat", "application/fhir+ndjson"),
        ("_type", "Condition,Observation"),
        ("_since", "2025-01-01T00:00:00.000Z"),
        # the comma inside one query stays escaped: a server splitting on commas sees one query
        ("_typeFilter", "Observation?code=751-8%2C753-4"),
        ("_typeFilter", "Condition?code=hospice"),
    ]


@pytest.mark.parametrize(
    ("level", "path"),
    [("system", "/$export"), ("patient", "/Patient/$export")],
)
@responses.activate
def test_kick_off_levels(fake_time: FakeTime, level: Any, path: str) -> None:
    responses.get(f"{BASE}{path}", status=202, headers={"Content-Location": STATUS})
    assert bulk_client(fake_time).kick_off(ExportRequest(level=level)) == STATUS


@responses.activate
def test_a_refused_kick_off_names_the_request_and_the_issue_code_not_the_text(
    fake_time: FakeTime,
) -> None:
    responses.get(f"{BASE}/$export", status=400, json=outcome("not-supported", "patient Jane"))

    with pytest.raises(BulkExportFailed) as raised:
        bulk_client(fake_time).kick_off(ExportRequest())

    error = raised.value
    assert error.exit_code == EXIT_UPSTREAM and error.status == 400
    assert "refused the export" in str(error) and "error/not-supported" in str(error)
    assert "Jane" not in str(error) and "_typeFilter" not in str(error)
    assert error.issues[0].diagnostics == "patient Jane"  # kept for code that shows it on purpose


@responses.activate
def test_a_kick_off_without_content_location_is_an_upstream_error(fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/$export", status=202)
    with pytest.raises(FhirResponseError, match="Content-Location"):
        bulk_client(fake_time).kick_off(ExportRequest())


@responses.activate
def test_a_busy_server_at_kick_off_is_retried_after_its_retry_after(fake_time: FakeTime) -> None:
    responses.get(f"{BASE}/$export", status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    assert bulk_client(fake_time).kick_off(ExportRequest()) == STATUS
    assert fake_time.sleeps == [7.0]


def test_a_group_export_needs_a_plain_group_id() -> None:
    with pytest.raises(ValueError, match="Group id"):
        ExportRequest(level="group")
    with pytest.raises(ValueError, match="resource id"):
        ExportRequest(level="group", group="a/b")
    with pytest.raises(ValueError, match="Group-level"):
        ExportRequest(level="system", group="g1")


# ------------------------------------------------------------------ status


@responses.activate
def test_status_honours_retry_after_in_seconds_and_dates_and_reports_progress(
    fake_time: FakeTime,
) -> None:
    later = email.utils.formatdate(fake_time.now + 30, usegmt=True)
    responses.add(**running("collecting", "3"))
    responses.add(**running("writing 50%", later))
    responses.add(**running(None, None))  # neither: the configured interval
    responses.get(STATUS, json=manifest())
    seen: list[Status] = []

    result = bulk_client(fake_time).wait(STATUS, PollPolicy(interval=4.0), on_status=seen.append)

    assert [s.progress for s in seen] == ["collecting", "writing 50%", None]
    assert [s.polls for s in seen] == [1, 2, 3]
    waits = _waits_between_polls()
    assert waits[0] == pytest.approx(3.0)
    assert 26.0 <= waits[1] <= 27.0  # the date is 30 s after the start; this poll was at 3 s
    assert waits[2] == pytest.approx(4.0)
    assert result.output == (OutputFile("Observation", FILE, 2),)
    assert result.requires_access_token is True
    assert result.transaction_time == "2026-03-02T12:00:00.000Z"


_POLL_TIMES: list[float] = []


def _waits_between_polls() -> list[float]:
    return [b - a for a, b in itertools.pairwise(_POLL_TIMES)]


@pytest.fixture(autouse=True)
def _record_poll_times(fake_time: FakeTime) -> Any:
    """Each status request's (fake) time, to measure the waits between polls."""
    _POLL_TIMES.clear()
    original = requests.Session.request

    def recording(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(STATUS) and method == "GET":
            _POLL_TIMES.append(fake_time.now)
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = recording  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.request = original  # type: ignore[method-assign]


@responses.activate
def test_retry_after_is_clamped_to_the_policy(fake_time: FakeTime) -> None:
    responses.add(**running(retry_after="3600"))
    responses.add(**running(retry_after="0"))
    responses.get(STATUS, json=manifest())
    bulk_client(fake_time).wait(STATUS, PollPolicy(min_interval=0.5, max_interval=10.0))
    assert _waits_between_polls() == [pytest.approx(10.0), pytest.approx(0.5)]


@responses.activate
def test_polling_stops_after_max_polls(fake_time: FakeTime) -> None:
    for _ in range(5):
        responses.add(**running(retry_after="1"))
    with pytest.raises(BulkExportTimedOut, match="3 status request"):
        bulk_client(fake_time).wait(STATUS, PollPolicy(max_polls=3))
    assert len(_POLL_TIMES) == 3


@responses.activate
def test_polling_stops_before_waiting_past_max_wait(fake_time: FakeTime) -> None:
    for _ in range(10):
        responses.add(**running(retry_after="20"))
    with pytest.raises(BulkExportTimedOut) as raised:
        bulk_client(fake_time).wait(STATUS, PollPolicy(max_wait_seconds=50.0, max_interval=60))
    assert len(_POLL_TIMES) == 3  # at 0, 20, 40 s; waiting to 60 s would pass 50 s
    assert raised.value.exit_code == EXIT_UPSTREAM


@pytest.mark.parametrize("status", [500, 400])
@responses.activate
def test_a_failed_export_is_an_upstream_error_with_the_outcome(
    fake_time: FakeTime, status: int
) -> None:
    responses.add(**running("collecting", "1"))
    responses.get(STATUS, status=status, json=outcome("exception", "disk full at /data/Jane"))

    with pytest.raises(BulkExportFailed) as raised:
        bulk_client(fake_time).wait(STATUS)

    error = raised.value
    assert "export failed" in str(error) and "error/exception" in str(error)
    assert "Jane" not in str(error) and error.status == status and error.exit_code == 5


@responses.activate
def test_a_transient_polling_failure_is_polled_again(fake_time: FakeTime) -> None:
    responses.get(STATUS, status=500, json=outcome("transient", "try later"))
    responses.get(STATUS, json=manifest())
    result = bulk_client(fake_time).wait(STATUS, PollPolicy(interval=2.0))
    assert result.output and len(_POLL_TIMES) == 2
    assert _waits_between_polls() == [pytest.approx(2.0)]


@responses.activate
def test_an_unknown_export_says_so(fake_time: FakeTime) -> None:
    responses.get(STATUS, status=404, json=outcome("not-found"))
    with pytest.raises(BulkExportFailed, match="unknown to the server"):
        bulk_client(fake_time).wait(STATUS)


@responses.activate
def test_a_status_endpoint_still_unavailable_after_retries_is_transient(
    fake_time: FakeTime,
) -> None:
    for _ in range(3):
        responses.get(STATUS, status=503, headers={"Retry-After": "2"})
    with pytest.raises(FhirTransientError):
        bulk_client(fake_time).wait(STATUS)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("not json", "not JSON"),
        ([], "not a JSON object"),
        ({"output": []}, "transactionTime"),
        (manifest(output=[{"type": "Observation", "url": "ftp://x/y"}]), "http(s) URL"),
        (manifest(output=[{"url": FILE}]), "resource type"),
        (manifest(requires="yes"), "requiresAccessToken"),
    ],
)
@responses.activate
def test_an_unusable_manifest_is_named(fake_time: FakeTime, body: Any, words: str) -> None:
    if isinstance(body, str):
        responses.get(STATUS, body=body)
    else:
        responses.get(STATUS, json=body)
    with pytest.raises(FhirResponseError, match=words.replace("(", r"\(").replace(")", r"\)")):
        bulk_client(fake_time).wait(STATUS)


@responses.activate
def test_a_stop_request_ends_the_wait(fake_time: FakeTime) -> None:
    for _ in range(3):
        responses.add(**running(retry_after="30"))
    calls = {"n": 0}

    def stopped() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # seen within a few one-second steps of the first wait

    with pytest.raises(BulkExportCancelled):
        bulk_client(fake_time).wait(STATUS, stopped=stopped)
    assert len(_POLL_TIMES) == 1 and sum(fake_time.sleeps) < 30


@responses.activate
def test_the_status_url_of_another_host_gets_no_token(fake_time: FakeTime) -> None:
    with pytest.raises(FhirResponseError, match="another host"):
        bulk_client(fake_time).wait("https://elsewhere.test/status/1")
    assert not responses.calls


# ------------------------------------------------------------------ cancel


@responses.activate
def test_cancel_deletes_the_status_url_and_never_raises(fake_time: FakeTime) -> None:
    responses.delete(STATUS, status=202, json=outcome("informational"))
    responses.delete(STATUS, status=403, json=outcome("forbidden"))
    client = bulk_client(fake_time)
    assert client.cancel(STATUS) is True
    assert client.cancel(STATUS) is False
    assert [c.request.method for c in responses.calls] == ["DELETE", "DELETE"]


# ------------------------------------------------------------------ download


@responses.activate
def test_download_streams_the_file_with_the_token_when_required(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    body = b'{"resourceType":"Observation","id":"a"}\n{"resourceType":"Observation","id":"b"}'
    responses.get(FILE, body=body, content_type="application/fhir+ndjson")
    path = tmp_path / "0001-Observation.ndjson"

    done = bulk_client(fake_time).download(
        OutputFile("Observation", FILE), path, requires_access_token=True
    )

    assert responses.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    assert responses.calls[0].request.headers["Accept"] == "application/fhir+ndjson"
    assert path.read_bytes() == body + b"\n"  # an unterminated last line is ended
    assert (done.lines, done.bytes) == (2, len(body))
    assert list(tmp_path.iterdir()) == [path]  # no partial file left


@responses.activate
def test_download_without_required_token_sends_none_even_to_another_host(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    url = "https://files.elsewhere.test/job1/Observation.ndjson"
    responses.get(url, body=b"{}\n")
    bulk_client(fake_time).download(
        OutputFile("Observation", url), tmp_path / "a.ndjson", requires_access_token=False
    )
    assert "Authorization" not in responses.calls[0].request.headers


@responses.activate
def test_a_file_needing_the_token_on_another_host_is_refused(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    url = "https://files.elsewhere.test/job1/Observation.ndjson"
    with pytest.raises(FhirResponseError, match="another host"):
        bulk_client(fake_time).download(
            OutputFile("Observation", url), tmp_path / "a.ndjson", requires_access_token=True
        )
    assert not responses.calls


class _BreaksOff(io.RawIOBase):
    """A response body that sends its first bytes, then the connection is reset."""

    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent:
            raise ConnectionResetError("connection reset by peer")
        self.sent = True
        head = b'{"resourceType":"Observation"}\n{"resou'
        buffer[: len(head)] = head
        return len(head)


def broken() -> io.BufferedReader:
    return io.BufferedReader(_BreaksOff())


@responses.activate
def test_a_broken_transfer_starts_again_and_gives_up_within_the_attempts(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    responses.get(FILE, body=broken())
    responses.get(FILE, body=b'{"resourceType":"Observation"}\n')
    path = tmp_path / "a.ndjson"
    done = bulk_client(fake_time).download(
        OutputFile("Observation", FILE), path, requires_access_token=True
    )
    assert done.lines == 1 and len(responses.calls) == 2

    responses.reset()
    for _ in range(3):
        responses.get(FILE, body=broken())
    with pytest.raises(FhirTransientError, match="broke off 3 time"):
        bulk_client(fake_time).download(
            OutputFile("Observation", FILE), tmp_path / "b.ndjson", requires_access_token=True
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ndjson"]


@responses.activate
def test_a_missing_file_is_an_upstream_error(fake_time: FakeTime, tmp_path: Path) -> None:
    responses.get(FILE, status=404, json=outcome("not-found"))
    with pytest.raises(Exception) as raised:
        bulk_client(fake_time).download(
            OutputFile("Observation", FILE), tmp_path / "a.ndjson", requires_access_token=True
        )
    assert getattr(raised.value, "status", None) == 404
    assert getattr(raised.value, "exit_code", None) == EXIT_UPSTREAM
    assert json.dumps(str(raised.value))  # one line
    assert not list(tmp_path.iterdir())
