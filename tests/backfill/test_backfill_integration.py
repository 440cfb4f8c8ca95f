"""`rems-adapter backfill` against stock sekmet-fhir 0.1.1's `$export` on 127.0.0.1 (no search
parameters registered: `search_parameters=False`).

The demo data (adapter/demo/data: 31 patients, every kind of case the demo shows) is PUT into a
fresh server under its own ids; backfill must then decide exactly what `run` decides over the
same files. The one normalisation: a withdrawn DetectedIssue is the EHR's resource updated, so
it carries the server's `meta.versionId` and `meta.lastUpdated` (the server assigns them on
PUT), where `run` echoes the ones written in the file.

What sekmet 0.1.1's `$export` does (bulk/server.py, read before writing these tests): system,
Patient and Group levels by GET or POST with `Prefer: respond-async`; `_type`, `_since` (compared
as strings with `meta.lastUpdated`), `_typeFilter` (split on commas, each applied as a search;
several for one type narrow each other), `_outputFormat`; kick-off 202 + Content-Location;
status 202 + `X-Progress` + `Retry-After: 1` while running (a job lasts at least a second), 200 +
manifest (`requiresAccessToken` true unless the server runs without auth), 500 + OperationOutcome
when the job failed, 404 unknown; DELETE cancels and removes the files; files under
`/fhir/bulk-files/{job}/{Type}.ndjson`, behind the same auth as the API.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.backfill.command import backfill_options, run_backfill
from adapter.batch.run import BatchSettings
from adapter.cli import main
from adapter.ehr import FhirClient, SmartBackendServices, Transport
from adapter.mappings_loader import load_reference_data
from adapter.settings import load_settings
from tests.conftest import SmartKey
from tests.fhir_server import SekmetServer, SmartClientRegistration, ensure_sekmet, start_sekmet

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parent.parent.parent / "adapter" / "demo" / "data"
AS_OF = "2026-03-02T12:00:00Z"  # the demo's clock
OUTPUTS = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")
GROUP = ("demo-21", "demo-23", "demo-24", "demo-28", "demo-30")


def demo_resources() -> list[dict[str, Any]]:
    resources = [json.loads(line) for line in (DEMO / "demo.ndjson").open() if line.strip()]
    bundle = json.loads((DEMO / "demo-bundle.json").read_text())
    resources += [entry["resource"] for entry in bundle["entry"]]
    # two Observations come in two versions: the server keeps the last one PUT
    return sorted(resources, key=lambda r: int((r.get("meta") or {}).get("versionId") or 0))


def load(server: SekmetServer, resources: list[dict[str, Any]], token: str | None = None) -> None:
    """PUT each resource under its own id, in transaction Bundles."""
    headers = {"Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for start in range(0, len(resources), 200):
        entries = [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources[start : start + 200]
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = requests.post(server.base_url, json=bundle, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text[:500]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    server = start_sekmet(
        workdir=tmp_path_factory.mktemp("sekmet-backfill"), search_parameters=False
    )
    try:
        load(server, demo_resources())
        group = {
            "resourceType": "Group",
            "id": "backfill-group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in GROUP],
        }
        load(server, [group])
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[SekmetServer]:
    server = start_sekmet(workdir=tmp_path / "sekmet", search_parameters=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def batch_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["run", "--source", str(DEMO), "--out", str(out), "--as-of", AS_OF]) == 0
    return out


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_server_meta(issue: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in issue.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**issue, "meta": meta}


def assert_same_decisions(backfilled: Path, batch: Path, patients: set[str] | None = None) -> None:
    """status, authorizations and psf byte for byte; DetectedIssues too, but for the server's
    meta on the withdrawn ones (the EHR's own resources, updated)."""
    for name in OUTPUTS:
        ours = backfilled / name
        theirs = batch / name
        if patients is None and name != "DetectedIssue.ndjson":
            assert ours.read_bytes() == theirs.read_bytes(), name
            continue
        wanted = [
            line
            for line in lines(theirs)
            if patients is None or _patient(line) in {f"Patient/{p}" for p in patients}
        ]
        got = lines(ours)
        if name != "DetectedIssue.ndjson":
            assert got == wanted, name
            continue
        assert [without_server_meta(i) for i in got] == [without_server_meta(i) for i in wanted]
        differing = [(a["id"], b["id"]) for a, b in zip(got, wanted, strict=True) if a != b]
        withdrawn = [i["id"] for i in wanted if i["status"] != "final"]
        assert [a for a, _ in differing] == withdrawn  # only the EHR's own, updated resources


def _patient(line: dict[str, Any]) -> str:
    value = line["patient"]
    return value["reference"] if isinstance(value, dict) else value


def backfill(server: SekmetServer, out: Path, *extra: str) -> int:
    argv = ["backfill", "--fhir-base", server.base_url, "--out", str(out), "--as-of", AS_OF]
    return main([*argv, *extra])


# ------------------------------------------------------------------ decisions as in batch mode


def test_a_system_export_decides_exactly_as_batch_mode_over_the_same_data(
    demo_server: SekmetServer,
    batch_outputs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    assert backfill(demo_server, tmp_path / "out", "--work-dir", str(work)) == 0

    assert_same_decisions(tmp_path / "out", batch_outputs)
    issues = lines(tmp_path / "out" / "DetectedIssue.ndjson")
    assert len([i for i in issues if i["status"] != "final"]) == 2  # the demo's two withdrawals
    said = capsys.readouterr().out
    assert "31 patients on clozapine" in said and "Exported files kept in" in said
    # what was asked for: the types batch mode reads, Observations narrowed to the lab codes
    manifest = json.loads((work / "manifest.json").read_text())
    request = requests.utils.unquote(manifest["request"])
    assert "_type=Condition,DetectedIssue," in request and "Observation?code=" in request
    exported = {p.name.split("-", 1)[1] for p in (work / "export").iterdir()}
    assert "Patient.ndjson" not in exported and "Practitioner.ndjson" not in exported
    assert {"Observation.ndjson", "MedicationDispense.ndjson", "DetectedIssue.ndjson"} <= exported


def test_patient_and_group_exports_decide_as_batch_mode_for_their_patients(
    demo_server: SekmetServer, batch_outputs: Path, tmp_path: Path
) -> None:
    assert backfill(demo_server, tmp_path / "patient", "--level", "patient") == 0
    assert_same_decisions(tmp_path / "patient", batch_outputs)

    assert backfill(demo_server, tmp_path / "group", "--group", "backfill-group") == 0
    assert_same_decisions(tmp_path / "group", batch_outputs, set(GROUP))
    status = lines(tmp_path / "group" / "status.ndjson")
    assert {s["patient"] for s in status} == {f"Patient/{p}" for p in GROUP}


def test_rerunning_replaces_the_outputs_and_the_kept_files(
    demo_server: SekmetServer, batch_outputs: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    for _ in range(2):
        assert backfill(demo_server, tmp_path / "out", "--work-dir", str(work)) == 0
    assert_same_decisions(tmp_path / "out", batch_outputs)
    assert len(list((work / "export").iterdir())) == len(
        json.loads((work / "manifest.json").read_text())["output"]
    )


# ------------------------------------------------------------------ --since


def _observation(oid: str, patient: str, value: int, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "/uL",
            "system": "http://unitsofmeasure.org",
            "code": "/uL",
        },
    }


def test_since_exports_only_what_changed_and_decides_it(
    fresh_server: SekmetServer, tmp_path: Path
) -> None:
    older = [
        {"resourceType": "Patient", "id": "p-old"},
        _observation("obs-old", "p-old", 700, "2026-02-01T09:00:00Z"),
    ]
    load(fresh_server, older)
    time.sleep(0.05)  # a later meta.lastUpdated (milliseconds) for what follows
    newer = [
        {"resourceType": "Patient", "id": "p-new"},
        _observation("obs-new", "p-new", 800, "2026-03-01T09:00:00Z"),
    ]
    load(fresh_server, newer)
    stored = {
        r["id"]: requests.get(
            f"{fresh_server.base_url}/{r['resourceType']}/{r['id']}", timeout=10
        ).json()
        for r in older + newer
    }
    stamps = {rid: resource["meta"]["lastUpdated"] for rid, resource in stored.items()}
    since = min(stamps["p-new"], stamps["obs-new"])
    assert max(stamps["p-old"], stamps["obs-old"]) < since

    work = tmp_path / "work"
    out = tmp_path / "out"
    assert backfill(fresh_server, out, "--since", since, "--work-dir", str(work)) == 0

    exported = [lines(p) for p in (work / "export").iterdir()]
    assert [r["id"] for file in exported for r in file] == ["obs-new"]
    assert "_since=" + since in requests.utils.unquote(
        json.loads((work / "manifest.json").read_text())["request"]
    )
    issues = lines(out / "DetectedIssue.ndjson")
    assert [(i["patient"]["reference"], i["code"]["coding"][-1]["code"]) for i in issues] == [
        ("Patient/p-new", "anc-moderate-neutropenia")
    ]
    # the same decisions as batch mode over the same (changed) resources, as the server holds
    # them (its meta.versionId is among the inputs a decision's identifier is derived from)
    source = tmp_path / "changed.ndjson"
    source.write_text("".join(json.dumps(stored[r["id"]]) + "\n" for r in newer))
    assert (
        main(["run", "--source", str(source), "--out", str(tmp_path / "run"), "--as-of", AS_OF])
        == 0
    )
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name

    # without --since both are there
    assert backfill(fresh_server, tmp_path / "all") == 0
    codes = [i["patient"]["reference"] for i in lines(tmp_path / "all" / "DetectedIssue.ndjson")]
    assert codes == ["Patient/p-new", "Patient/p-old"]


# ------------------------------------------------------------------ --write-back


def server_issues(server: SekmetServer) -> dict[str, dict[str, Any]]:
    """Every DetectedIssue on the server, by its decision identifier."""
    out: dict[str, dict[str, Any]] = {}
    url: str | None = f"{server.base_url}/DetectedIssue?_count=500"
    for _ in range(100):  # bounded paging
        if url is None:
            break
        page = requests.get(url, timeout=30).json()
        for entry in page.get("entry", []):
            issue = entry["resource"]
            (ident,) = [i["value"] for i in issue["identifier"] if i["system"] == DECISIONS]
            assert ident not in out, f"duplicate decision {ident}"
            out[ident] = issue
        url = next((x["url"] for x in page.get("link", []) if x["relation"] == "next"), None)
    return out


DECISIONS = "https://rems-adapter.github.io/fhir/sid/decision"


def test_write_back_writes_every_decision_once_and_a_replay_writes_nothing(
    fresh_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(fresh_server, demo_resources())
    before = server_issues(fresh_server)

    assert backfill(fresh_server, tmp_path / "out", "--write-back") == 0

    said = capsys.readouterr().out
    written = lines(tmp_path / "out" / "DetectedIssue.ndjson")
    finals = [i for i in written if i["status"] == "final"]
    withdrawn = [i for i in written if i["status"] != "final"]
    assert f"Written back to the EHR: {len(finals)} created, 0 already there, 2 withdrawn." in said
    held = server_issues(fresh_server)
    assert set(held) == set(before) | {i["identifier"][0]["value"] for i in finals}
    for issue in finals:
        on_server = held[issue["identifier"][0]["value"]]
        assert without_server_meta(on_server)["meta"].get("profile") == issue["meta"]["profile"]
        for key in ("status", "code", "severity", "patient", "detail", "author", "implicated"):
            assert on_server.get(key) == issue.get(key), key
        # stock sekmet allows client-assigned ids: PUT under the deterministic id (watch's mode)
        assert on_server["id"] == issue["id"]
    for issue in withdrawn:  # the EHR's own resources, updated with If-Match
        on_server = held[issue["identifier"][0]["value"]]
        assert on_server["id"] == issue["id"] and on_server["status"] == issue["status"]
        assert int(on_server["meta"]["versionId"]) == int(issue["meta"]["versionId"]) + 1
    assert requests.get(f"{fresh_server.base_url}/Device/rems-adapter", timeout=10).ok

    # a replay (the EHR now holds the decisions) decides the same and writes nothing
    assert backfill(fresh_server, tmp_path / "again", "--write-back") == 0
    said = capsys.readouterr().out
    # the withdrawals stand in the outputs as the EHR holds them (the record of decisions)
    there = len(finals) + len(withdrawn)
    assert f"Written back to the EHR: 0 created, {there} already there, 0 withdrawn." in said
    assert server_issues(fresh_server) == held
    again = lines(tmp_path / "again" / "DetectedIssue.ndjson")
    again_finals = [i for i in again if i["status"] == "final"]
    assert [without_server_meta(i) for i in again_finals] == [
        without_server_meta(i) for i in finals
    ]
    standing = [i for i in again if i["status"] != "final"]
    assert sorted(i["id"] for i in standing) == sorted(i["id"] for i in withdrawn)
    assert all(i["status"] == held[i["identifier"][0]["value"]]["status"] for i in standing)


# ------------------------------------------------------------------ exports that fail


def test_an_export_the_server_refuses_is_one_line_exit_5(
    fresh_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = backfill(fresh_server, tmp_path / "out", "--group", "no-such-group")
    err = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 5
    assert len(err) == 1 and "refused the export" in err[0] and "HTTP 404" in err[0]
    assert "error/not-found" in err[0] and "Traceback" not in err[0]


def test_an_export_that_fails_on_the_server_is_one_line_exit_5(
    fresh_server: SekmetServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(fresh_server, [{"resourceType": "Patient", "id": "p1"}])
    # The server cannot write its export files (a file where its bulk folder should be): the
    # job fails after the kick-off was accepted, and the status endpoint says so.
    bulk = fresh_server.workdir / "data" / "bulk"
    shutil.rmtree(bulk, ignore_errors=True)
    bulk.parent.mkdir(parents=True, exist_ok=True)
    bulk.write_text("not a folder")
    try:
        code = backfill(fresh_server, tmp_path / "out")
    finally:
        bulk.unlink()
    err = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 5
    assert len(err) == 1 and "the server reports that the export failed" in err[0]
    assert "HTTP 500" in err[0] and "error/exception" in err[0]
    assert not (tmp_path / "out" / "status.ndjson").exists()


def test_interrupting_a_running_export_cancels_it_on_the_server(
    fresh_server: SekmetServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load(fresh_server, [{"resourceType": "Patient", "id": "p1"}])

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt  # the user presses Ctrl-C while backfill waits for the export

    loaded = load_settings(flags={"fhir.base_url": fresh_server.base_url})
    data = load_reference_data(None)
    settings = BatchSettings(sources=(), out=tmp_path / "out", as_of=datetime.now(UTC), site_tz=UTC)
    client = FhirClient(fresh_server.base_url, transport=Transport(sleep=ctrl_c))
    caplog.set_level(logging.INFO, logger="adapter")

    with pytest.raises(KeyboardInterrupt):
        run_backfill(
            loaded,
            backfill_options(loaded, data, UTC, identities=False),
            settings,
            data,
            client=client,
        )

    started = next(r.getMessage() for r in caplog.records if "status at" in r.getMessage())
    status_url = re.search(r"status at (\S+)", started).group(1)  # type: ignore[union-attr]
    assert any("cancelling the export" in r.getMessage() for r in caplog.records)
    assert requests.get(status_url, timeout=10).status_code == 404  # the job is gone
    assert not list((fresh_server.workdir / "data" / "bulk").glob("*/*.ndjson"))
    assert not (tmp_path / "out").exists()


def test_ctrl_c_on_the_command_cancels_the_export_and_exits_130(
    demo_server: SekmetServer, tmp_path: Path
) -> None:
    """A real process and a real SIGINT: sekmet's job over the demo data runs for seconds (its
    status says so), and the signal is sent as soon as the first status answer is logged."""
    argv = [sys.executable, "-m", "adapter", "backfill", "--fhir-base", demo_server.base_url]
    argv += ["--out", str(tmp_path / "out"), "--as-of", AS_OF]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen: list[str] = []
    try:
        for line in process.stderr:  # bounded: the process ends (timeout below)
            seen.append(line)
            if "export running" in line:
                process.send_signal(signal.SIGINT)
                break
        code = process.wait(timeout=60)
        seen += process.stderr.readlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = "".join(seen)
    assert code == 130, text
    assert "cancelling the export on the server" in text and "Traceback" not in text
    status_url = re.search(r"status at (\S+)", text).group(1)  # type: ignore[union-attr]
    assert requests.get(status_url, timeout=10).status_code == 404  # cancelled: gone
    assert not (tmp_path / "out" / "status.ndjson").exists()


# ------------------------------------------------------------------ SMART Backend Services


def test_smart_backend_services_with_files_requiring_the_token(
    smart_keys: dict[str, SmartKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = smart_keys["ES384"]
    server = start_sekmet(
        smart_clients=[SmartClientRegistration(key.client_id, key.public_jwk)],
        workdir=tmp_path / "sekmet",
        search_parameters=False,
    )
    try:
        auth = SmartBackendServices(
            client_id=key.client_id,
            private_key_pem=key.private_pem,
            algorithm="ES384",
            scope="system/*.*",
        )
        transport = Transport()
        token = auth.headers(transport, server.base_url)["Authorization"].split(" ", 1)[1]
        transport.close()
        subset = [r for r in demo_resources() if _owner(r) in {"demo-21", "demo-28"}]
        load(server, subset, token=token)
        assert requests.get(f"{server.base_url}/Patient", timeout=10).status_code == 401
        key_file = tmp_path / "key.pem"
        key_file.write_bytes(key.private_pem)
        monkeypatch.setenv("REMS_ADAPTER_FHIR_AUTH", "smart")
        monkeypatch.setenv("REMS_ADAPTER_SMART_CLIENT_ID", key.client_id)
        monkeypatch.setenv("REMS_ADAPTER_SMART_KEY_FILE", str(key_file))
        work = tmp_path / "work"

        assert backfill(server, tmp_path / "out", "--work-dir", str(work)) == 0

        assert json.loads((work / "manifest.json").read_text())["requiresAccessToken"] is True
        source = tmp_path / "subset.ndjson"
        source.write_text("".join(json.dumps(r) + "\n" for r in subset))
        run = tmp_path / "run"
        assert main(["run", "--source", str(source), "--out", str(run), "--as-of", AS_OF]) == 0
        assert_same_decisions(tmp_path / "out", run)
        assert lines(tmp_path / "out" / "status.ndjson")
        assert "Traceback" not in capsys.readouterr().err
    finally:
        server.stop()


class BearerSekmet(SekmetServer):
    """sekmet with static bearer tokens only (its `server_auth.types = ["bearer"]`)."""

    token: str = "static-backfill-token"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "server_auth": {"types": ["bearer"], "tokens": [self.token]}}


def test_a_static_bearer_token_goes_with_the_kick_off_status_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = BearerSekmet(
        python=ensure_sekmet(), workdir=tmp_path / "sekmet", search_parameters=False
    ).start()
    try:
        subset = [r for r in demo_resources() if _owner(r) in {"demo-23", "demo-24"}]
        load(server, subset, token=BearerSekmet.token)
        assert requests.get(f"{server.base_url}/Patient", timeout=10).status_code == 401
        monkeypatch.setenv("REMS_ADAPTER_FHIR_AUTH", "bearer")
        work = tmp_path / "work"

        monkeypatch.setenv("REMS_ADAPTER_FHIR_TOKEN", "wrong-token")
        assert (
            backfill(server, tmp_path / "refused") == 5
        )  # 401 at the kick-off: no token, no export

        monkeypatch.setenv("REMS_ADAPTER_FHIR_TOKEN", BearerSekmet.token)
        assert backfill(server, tmp_path / "out", "--work-dir", str(work)) == 0
        assert json.loads((work / "manifest.json").read_text())["requiresAccessToken"] is True
        source = tmp_path / "subset.ndjson"
        source.write_text("".join(json.dumps(r) + "\n" for r in subset))
        run = tmp_path / "run"
        assert main(["run", "--source", str(source), "--out", str(run), "--as-of", AS_OF]) == 0
        assert_same_decisions(tmp_path / "out", run)
    finally:
        server.stop()


def _owner(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
            return str(ref["reference"]).removeprefix("Patient/")
    return None
