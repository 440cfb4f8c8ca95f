"""Watch configuration: every bad setting is an error naming its key; flags and env override."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapter.cli import main
from adapter.watch.config import (
    ENV_SMART_KEY_FILE,
    ENV_TOKEN,
    ConfigError,
    Overrides,
    WatchConfig,
    load_config,
)

BASE = 'base_url = "https://ehr.example.org/fhir/r4"\n'
W = f"[fhir]\n{BASE}[watch]\n"
E = f"[fhir]\n{BASE}[evaluation]\n"


def load(text: str, env: dict[str, str] | None = None, **flags: Any) -> WatchConfig:
    return load_config(tomllib.loads(text), Overrides(**flags), env or {})


def test_flags_alone_make_a_working_configuration() -> None:
    config = load("", fhir_base="http://127.0.0.1:8080/fhir/")
    assert config.fhir.base_url == "http://127.0.0.1:8080/fhir"
    assert config.fhir.auth == "none" and config.fhir.verify_tls is True
    assert config.watch.overlap_seconds == 120 and config.watch.page_size == 1000
    assert config.watch.state == Path("rems-adapter-watch.sqlite")
    assert config.evaluation.as_of is None and config.evaluation.derive_anc is True


def test_flags_win_over_the_file_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    text = f"""
[fhir]
{BASE}auth = "bearer"
[watch]
interval_seconds = 300
state = "{tmp_path / "file.sqlite"}"
[evaluation]
site_tz = "America/Chicago"
"""
    config = load(
        text,
        {ENV_TOKEN: "s3cret"},
        interval_seconds=5,
        state=tmp_path / "flag.sqlite",
        as_of="2025-08-12",
    )
    assert config.fhir.token == "s3cret"
    assert "s3cret" not in repr(config)  # the token never shows in a repr or a log line
    assert config.watch.interval_seconds == 5
    assert config.watch.state == tmp_path / "flag.sqlite"
    assert config.evaluation.as_of is not None
    assert config.evaluation.as_of.isoformat() == "2025-08-12T23:59:59-05:00"


def test_smart_key_file_from_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not read here")
    text = f'[fhir]\n{BASE}auth = "smart"\n[fhir.smart]\nclient_id = "adapter"\n'
    config = load(text, {ENV_SMART_KEY_FILE: str(key)})
    assert config.fhir.smart is not None and config.fhir.smart.key_file == key
    assert config.fhir.smart.algorithm == "ES384"


@pytest.mark.parametrize(
    ("text", "env", "flags", "key", "says"),
    [
        ("", {}, {}, "fhir.base_url", "required"),
        ('[fhir]\nbase_url = "ftp://x/fhir"', {}, {}, "fhir.base_url", "http(s) URL"),
        ("", {}, {"fhir_base": "localhost:8080"}, "--fhir-base", "http(s) URL"),
        (f'[fhir]\n{BASE}auth = "basic"', {}, {}, "fhir.auth", "one of none, bearer or smart"),
        (f'[fhir]\n{BASE}token = "abc"', {}, {}, "fhir.token", ENV_TOKEN),
        (f'[fhir]\n{BASE}auth = "bearer"', {}, {}, "fhir.auth", ENV_TOKEN),
        (f'[fhir]\n{BASE}auth = "smart"', {}, {}, "fhir.smart.client_id", "required"),
        (
            f'[fhir]\n{BASE}auth = "smart"\n[fhir.smart]\nclient_id = "a"',
            {},
            {},
            "fhir.smart.key_file",
            "required",
        ),
        (
            f'[fhir]\n{BASE}auth = "smart"\n[fhir.smart]\nclient_id = "a"\nkey_file = "/nope.pem"',
            {},
            {},
            "fhir.smart.key_file",
            "no such file",
        ),
        (
            f'[fhir]\n{BASE}auth = "smart"\n[fhir.smart]\nclient_id = "a"\nkey_file = "/nope"',
            {ENV_SMART_KEY_FILE: "/also/nope.pem"},
            {},
            ENV_SMART_KEY_FILE,
            "no such file",
        ),
        (f"[fhir]\n{BASE}verify_tls = 0", {}, {}, "fhir.verify_tls", "true or false"),
        (f'[fhir]\n{BASE}ca_bundle = "/no/ca.pem"', {}, {}, "fhir.ca_bundle", "no such file"),
        (f"[fhir]\n{BASE}read_timeout = 0", {}, {}, "fhir.read_timeout", "at least"),
        (f"[fhir]\n{BASE}max_attempts = 1.5", {}, {}, "fhir.max_attempts", "integer"),
        (f"[fhir]\n{BASE}proxy = 1", {}, {}, "fhir.proxy", "unknown setting"),
        (
            f"{W}overlap_seconds = -1",
            {},
            {},
            "watch.overlap_seconds",
            "at least",
        ),
        (f"{W}page_size = 0", {}, {}, "watch.page_size", "at least 1"),
        (f'{W}page_size = "50"', {}, {}, "watch.page_size", "integer"),
        (f"{W}interval_seconds = 0.5", {}, {}, "watch.interval_seconds", "1"),
        (f"{W}link_dispense = 1", {}, {}, "watch.link_dispense", "true or"),
        (f'{W}patients = "1"', {}, {}, "watch.patients", "list"),
        (f'{W}patients = ["a/b"]', {}, {}, "watch.patients", "not a Patient"),
        (
            f'{W}group = "g"\npatients = ["1"]',
            {},
            {},
            "watch.group",
            "either",
        ),
        (
            f'{E}site_tz = "Mars/Base"',
            {},
            {},
            "evaluation.site_tz",
            "zone",
        ),
        (
            f'{E}mappings = "/no/dir"',
            {},
            {},
            "evaluation.mappings",
            "folder",
        ),
        (f"{E}derive_anc = 1", {}, {}, "evaluation.derive_anc", "true"),
        (f"{E}clock = 1", {}, {}, "evaluation.clock", "unknown"),
        (f"[fhir]\n{BASE}[extra]\na = 1", {}, {}, "extra", "unknown setting"),
        ("fhir = 1", {}, {}, "fhir", "table"),
        (f"[fhir]\n{BASE}", {}, {"as_of": "yesterday"}, "--as-of", "ISO 8601"),
        (f"[fhir]\n{BASE}", {}, {"site_tz": "Nowhere"}, "--site-tz", "zone"),
        (f"[fhir]\n{BASE}", {}, {"mappings": Path("/no/dir")}, "--mappings", "not a folder"),
    ],
)
def test_every_bad_setting_names_its_key(
    text: str, env: dict[str, str], flags: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text, env, **flags)
    assert caught.value.key == key
    assert says in str(caught.value)


def test_the_command_exits_3_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watch.toml"
    config.write_text(f"{W}page_size = 0\n")
    assert main(["watch", "--config", str(config), "--once"]) == 3
    assert "configuration error: watch.page_size: must be at least 1" in capsys.readouterr().err

    config.write_text("[fhir\n")
    assert main(["watch", "--config", str(config), "--once"]) == 3
    assert "is not valid TOML" in capsys.readouterr().err

    assert main(["watch", "--config", str(tmp_path / "missing.toml"), "--once"]) == 3
    assert "--config: cannot read" in capsys.readouterr().err

    assert main(["watch", "--once"]) == 3
    assert "fhir.base_url: required (or give --fhir-base)" in capsys.readouterr().err


def test_an_unreachable_server_exits_5_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watch.toml"
    # port 9 (discard) on loopback: nothing listens; one attempt, no backoff
    config.write_text(
        '[fhir]\nbase_url = "http://127.0.0.1:9/fhir"\nmax_attempts = 1\nconnect_timeout = 1\n'
        f'[watch]\nstate = "{tmp_path / "state.sqlite"}"\n'
    )
    assert main(["watch", "--config", str(config), "--once"]) == 5
    err = capsys.readouterr().err
    assert "EHR request failed: GET http://127.0.0.1:9/fhir/" in err
    assert "Traceback" not in err
