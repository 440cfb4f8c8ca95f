"""Every command with each kind of bad argument: no traceback, the documented exit code, and one
line naming the flag, variable or file at fault (adapter.errors: 2 usage, 3 configuration,
4 unreadable input, 5 upstream or state; 1 an unexpected defect)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adapter import cli
from adapter.cli import main
from adapter.errors import EXIT_CODES

DEMO_DATA = Path(__file__).parent.parent / "adapter" / "demo" / "data"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[fhir\n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("[evaluation]\nsite_tzz = 'UTC'\n")
    bad_json = tmp_path / "seed.json"
    bad_json.write_text("{not json")
    corrupt_db = tmp_path / "corrupt.sqlite"
    corrupt_db.write_bytes(b"this is not an SQLite database" * 100)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "units.toml").write_text("[meta\n")
    source = tmp_path / "source.ndjson"
    source.write_text('{"resourceType": "Patient", "id": "p1"}\n')
    return {
        "file": a_file,
        "bad_toml": bad_toml,
        "unknown_key": unknown_key,
        "bad_json": bad_json,
        "corrupt_db": corrupt_db,
        "mappings": mappings,
        "source": source,
        "tmp": tmp_path,
    }


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own usage errors
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.err


# (argv with {placeholders}, environment, exit code, words the one line must hold)
CASES: list[tuple[str, dict[str, str], int, list[str]]] = [
    # run
    ("run --source {tmp}/missing.ndjson --out {tmp}/o", {}, 4, ["missing.ndjson"]),
    ("run --source {source} --out {file}", {}, 2, ["--out", "a-file", "not a folder"]),
    ("run --source {source} --out {file}/below", {}, 2, ["--out", "cannot create"]),
    ("run --source {source} --out {tmp}/o --as-of yesterday", {}, 2, ["--as-of", "ISO 8601"]),
    ("run --source {source} --out {tmp}/o --site-tz Mars/Base", {}, 2, ["--site-tz", "Mars"]),
    ("run --source {source} --out {tmp}/o --rems ftp://x", {}, 2, ["--rems", "http(s)"]),
    ("run --source {source} --out {tmp}/o --rems-attempts 0", {}, 2, ["--rems-attempts"]),
    ("run --source {source} --out {tmp}/o --rems-timeout soon", {}, 2, ["--rems-timeout"]),
    ("run --source {source} --out {tmp}/o --mappings {file}", {}, 3, ["a-file", "not a folder"]),
    ("run --source {source} --out {tmp}/o --mappings {mappings}", {}, 3, ["units.toml"]),
    ("run --source {source} --out {tmp}/o --config {tmp}/none.toml", {}, 3, ["--config"]),
    ("run --source {source} --out {tmp}/o --config {bad_toml}", {}, 3, ["bad.toml", "TOML"]),
    (
        "run --source {source} --out {tmp}/o --config {unknown_key}",
        {},
        3,
        ["evaluation.site_tzz", "unknown setting", "unknown.toml"],
    ),
    (
        "run --source {source} --out {tmp}/o",
        {"REMS_ADAPTER_REMS_ATTEMPTS": "many"},
        3,
        ["REMS_ADAPTER_REMS_ATTEMPTS", "integer"],
    ),
    (
        "run --source {source} --out {tmp}/o",
        {"REMS_ADAPTER_EVALUATION_SITE_TZ": "Nowhere"},
        3,
        ["REMS_ADAPTER_EVALUATION_SITE_TZ"],
    ),
    ("run --source {source} --out {tmp}/o --log-level chatty", {}, 2, ["--log-level"]),
    ("run --source {source} --out {tmp}/o --log-format xml", {}, 2, ["--log-format"]),
    ("run --source {source}", {}, 2, ["--out"]),
    ("run --source {source} --out {tmp}/o --frobnicate", {}, 2, ["--frobnicate"]),
    # demo
    ("demo --format xml", {}, 2, ["--format"]),
    ("demo --out {file}", {}, 2, ["--out", "not a folder"]),
    ("demo --out {tmp}/d --site-tz Mars/Base", {}, 2, ["--site-tz"]),
    ("demo --out {tmp}/d", {"REMS_ADAPTER_DEMO_FORMAT": "xml"}, 3, ["REMS_ADAPTER_DEMO_FORMAT"]),
    # rems-server (none of these may start serving)
    ("rems-server --port 99999", {}, 2, ["--port", "65535"]),
    ("rems-server --port http", {}, 2, ["--port"]),
    ("rems-server --host 10.1.2.3 --port 0", {}, 2, ["--host", "loopback", "TOKEN"]),
    (
        "rems-server --host nohost.invalid --port 0",
        {"REMS_ADAPTER_REMS_SERVER_TOKEN": "t", "REMS_ADAPTER_REMS_SERVER_ADMIN_TOKEN": "a"},
        3,
        ["--host", "nohost.invalid"],
    ),
    ("rems-server --port 0 --db {corrupt_db}", {}, 5, ["corrupt.sqlite"]),
    ("rems-server --port 0 --db {tmp}", {}, 5, ["REMS database"]),
    ("rems-server --port 0 --db {tmp}/r.sqlite --seed {tmp}/no.json", {}, 2, ["--seed"]),
    ("rems-server --port 0 --db {tmp}/r.sqlite --seed {bad_json}", {}, 4, ["seed.json"]),
    ("rems-server --port 0 --db {tmp}/r.sqlite --rules {tmp}/no.toml", {}, 2, ["--rules"]),
    ("rems-server --port 0 --db {tmp}/r.sqlite --rules {bad_toml}", {}, 3, ["bad.toml"]),
    ("rems-server --config {bad_toml}", {}, 3, ["bad.toml"]),
    # watch
    ("watch --once", {}, 3, ["fhir.base_url", "--fhir-base"]),
    ("watch --once --fhir-base localhost:8080", {}, 2, ["--fhir-base", "http(s)"]),
    ("watch --once --fhir-base http://127.0.0.1:9/fhir --interval 0", {}, 2, ["--interval"]),
    ("watch --once --fhir-base http://127.0.0.1:9/fhir --patient a/b", {}, 2, ["--patient"]),
    ("watch --once --fhir-base http://127.0.0.1:9/fhir --state {tmp}", {}, 2, ["--state"]),
    ("watch --once --fhir-base http://127.0.0.1:9/fhir --site-tz X", {}, 2, ["--site-tz"]),
    ("watch --once --fhir-base http://127.0.0.1:9/fhir --as-of soon", {}, 2, ["--as-of"]),
    (
        "watch --once --fhir-base http://127.0.0.1:9/fhir",
        {"REMS_ADAPTER_FHIR_AUTH": "bearer"},
        3,
        ["REMS_ADAPTER_FHIR_AUTH", "REMS_ADAPTER_FHIR_TOKEN"],
    ),
    ("watch --once --config {bad_toml}", {}, 3, ["bad.toml"]),
    # backfill (none of these may reach a server: port 9 is discard, nothing listens)
    ("backfill --out {tmp}/o", {}, 3, ["fhir.base_url", "--fhir-base"]),
    ("backfill --fhir-base localhost:8080 --out {tmp}/o", {}, 2, ["--fhir-base", "http(s)"]),
    ("backfill --fhir-base http://127.0.0.1:9/fhir", {}, 2, ["--out"]),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {file}",
        {},
        2,
        ["--out", "not a folder"],
    ),
    ("backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --since soon", {}, 2, ["--since"]),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o",
        {"REMS_ADAPTER_BACKFILL_SINCE": "2025-13-01"},
        3,
        ["REMS_ADAPTER_BACKFILL_SINCE", "ISO 8601"],
    ),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --level group",
        {},
        2,
        ["--level"],
    ),
    ("backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --group a/b", {}, 2, ["--group"]),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --level patient --group g",
        {},
        2,
        ["--level", "Group"],
    ),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --work-dir {file}",
        {},
        2,
        ["--work-dir"],
    ),
    ("backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o --as-of soon", {}, 2, ["--as-of"]),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o",
        {"REMS_ADAPTER_FHIR_AUTH": "bearer"},
        3,
        ["REMS_ADAPTER_FHIR_AUTH", "REMS_ADAPTER_FHIR_TOKEN"],
    ),
    (
        "backfill --fhir-base http://127.0.0.1:9/fhir --out {tmp}/o",
        {"REMS_ADAPTER_FHIR_MAX_ATTEMPTS": "1", "REMS_ADAPTER_FHIR_CONNECT_TIMEOUT": "0.5"},
        5,
        ["$export", "could not connect"],
    ),
    ("frobnicate", {}, 2, ["frobnicate"]),
]


@pytest.mark.parametrize(("argv", "env", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_arguments_get_one_line_and_the_documented_exit_code(
    argv: str,
    env: dict[str, str],
    code: int,
    words: list[str],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("REMS_ADAPTER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(files["tmp"])
    got, err = _run(argv.format(**{k: str(v) for k, v in files.items()}).split(), capsys)
    assert "Traceback" not in err
    assert got == code, err
    for word in words:
        assert word in err, err
    errors = [line for line in err.splitlines() if " ERROR " in line or "error:" in line]
    assert errors, err
    assert all(len(line.splitlines()) == 1 for line in errors)


def test_a_port_in_use_is_one_line_exit_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "adapter", "rems-server", "--port", str(port), "--db",
             str(tmp_path / "r.sqlite"), "--insecure-admin"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert f"--port: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_an_unexpected_defect_is_one_line_exit_1_with_the_trace_only_at_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("Jane Doe 1961-04-02")  # the text of a defect may carry anything

    monkeypatch.setattr(cli, "run_batch", broken)
    argv = ["run", "--source", str(DEMO_DATA), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error: unexpected KeyError" in err
    assert "Traceback" not in err and "Jane" not in err
    assert main([*argv, "--log-level", "DEBUG"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"], ["watch", "--help"], ["rems-server", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out
        for code, meaning in EXIT_CODES:
            assert f"  {code}  {meaning}" in " ".join(out.split("\n")) or f"{code}  " in out


def test_check_config_prints_effective_settings_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "watch.toml"
    config.write_text('[fhir]\nbase_url = "http://127.0.0.1:9/fhir"\n[watch]\npage_size = 50\n')
    monkeypatch.setenv("REMS_ADAPTER_FHIR_TOKEN", "s3cret-token")
    monkeypatch.setenv("REMS_ADAPTER_WATCH_PAGE_SIZE", "70")
    argv = ["watch", "--config", str(config), "--check-config", "--interval", "9"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "s3cret-token" not in out
    assert 'token = "********"  # REMS_ADAPTER_FHIR_TOKEN' in out
    assert f'base_url = "http://127.0.0.1:9/fhir"  # {config}' in out
    assert "page_size = 70  # REMS_ADAPTER_WATCH_PAGE_SIZE" in out
    assert "interval_seconds = 9.0  # --interval" in out
    assert "[rems_server]" not in out  # only the sections watch uses


def test_outputs_honour_the_umask_and_problems_are_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.ndjson"
    source.write_text("\n".join(["{broken"] * 60 + ['{"id": 1}'] * 5) + "\n")
    old = os.umask(0o022)
    try:
        assert main(["run", "--source", str(source), "--out", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    captured = capsys.readouterr()
    for name in ("DetectedIssue.ndjson", "status.ndjson", "problems.ndjson"):
        assert stat.S_IMODE((tmp_path / "o" / name).stat().st_mode) == 0o644
    shown = [line for line in captured.err.splitlines() if "input problem: " in line]
    assert len(shown) == 50
    assert "15 more input problems" in captured.err
    assert "10 x not valid JSON" in captured.err and "5 x not a FHIR resource" in captured.err
    problems = (tmp_path / "o" / "problems.ndjson").read_text().splitlines()
    assert len(problems) == 65
    assert json.loads(problems[0]) == {"location": f"{source}:1", "message": "not valid JSON"}
    assert "Read 0 resources in " in captured.out and "65 input problems" in captured.out
    assert " WARNING " in shown[0]  # problems are logged at WARNING, with a timestamp


def test_quiet_and_json_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.ndjson"
    source.write_text("{broken\n")
    argv = ["run", "--source", str(source), "--out", str(tmp_path / "o")]
    assert main([*argv, "--quiet", "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    entry = json.loads(captured.err.splitlines()[0])
    assert entry["level"] == "WARNING" and entry["time"].endswith("Z")
    assert entry["message"] == f"input problem: {source}:1: not valid JSON"
    assert main([*argv, "--log-format", "json", "--out", str(tmp_path / "file"), "--rems", "x"])
    line = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert line["level"] == "ERROR" and "--rems" in line["message"]


def test_the_summary_uses_correct_plurals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "one.ndjson"
    source.write_text('{"resourceType": "Patient", "id": "p1"}\n{broken\n')
    assert main(["run", "--source", str(source), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "Read 1 resource in " in out and "; 1 input problem (" in out
    assert "0 patients on clozapine" in out and "0 DetectedIssues written (0 withdrawals)" in out


def test_the_readme_synopsis_names_every_flag_of_every_command() -> None:
    import argparse

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Command line")
    synopsis = readme[start : readme.index("### Exit codes", start)]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"rems-adapter {name}" in synopsis
        for action in command._actions:
            for option in action.option_strings:
                assert option in synopsis, f"{name} {option}"


def test_a_reader_that_stops_reading_is_no_configuration_error(tmp_path: Path) -> None:
    # Found by the bad-input audit: `rems-adapter run ... | head` said "configuration error:
    # Broken pipe" (exit 3). The reader going away is what a shell reports as 141.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adapter",
            "run",
            "--source",
            str(DEMO_DATA),
            "--out",
            str(tmp_path / "out"),
            "--as-of",
            "2026-03-02T12:00:00Z",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # gone before the summary is printed
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert "error" not in err.lower() and "Traceback" not in err
    assert (tmp_path / "out" / "DetectedIssue.ndjson").stat().st_size > 0  # the run was made
