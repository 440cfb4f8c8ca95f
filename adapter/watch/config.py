"""Watch configuration: one TOML file, flags for the common keys, environment for secrets.

Precedence: flag > environment (secrets only) > file > default. Every bad setting is a
``ConfigError`` naming the key (``fhir.base_url``, ``watch.page_size``...), never a traceback.
Reading the environment happens only in ``load_config`` (nothing at import time).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapter.errors import ConfigurationError
from adapter.fhir.values import ValueProblem, read_clock

ENV_TOKEN = "REMS_ADAPTER_FHIR_TOKEN"
ENV_SMART_KEY_FILE = "REMS_ADAPTER_SMART_KEY_FILE"
ENV_SMART_CLIENT_ID = "REMS_ADAPTER_SMART_CLIENT_ID"
AUTH_KINDS = ("none", "bearer", "smart")
ALGORITHMS = ("ES384", "RS384")


class ConfigError(ConfigurationError, ValueError):
    """A setting is missing or unusable; ``key`` is its dotted name in the TOML file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message, where=key)
        self.key = key


@dataclass(frozen=True)
class SmartSettings:
    client_id: str
    key_file: Path
    algorithm: str = "ES384"
    scope: str = "system/*.rs system/DetectedIssue.cu system/MedicationDispense.u"
    key_id: str | None = None
    token_endpoint: str | None = None


@dataclass(frozen=True)
class FhirSettings:
    base_url: str
    auth: str = "none"
    token: str | None = field(default=None, repr=False)
    smart: SmartSettings | None = None
    verify_tls: bool | str = True
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    max_retry_seconds: float = 60.0


@dataclass(frozen=True)
class WatchSettings:
    state: Path = Path("rems-adapter-watch.sqlite")
    interval_seconds: float = 60.0
    overlap_seconds: float = 120.0
    page_size: int = 1000  # fewer, larger polls: measured by tests/bench/watch_bench.py
    max_pages_per_cycle: int = 1000
    write_batch_size: int = 100
    use_bundles: bool = True
    use_include: bool = True
    link_dispense: bool = False
    group: str | None = None
    patients: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationSettings:
    site_tz: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    derive_anc: bool = True
    mappings: Path | None = None
    as_of: datetime | None = None  # fixed clock (tests, replays); None: now at each cycle


@dataclass(frozen=True)
class WatchConfig:
    fhir: FhirSettings
    watch: WatchSettings
    evaluation: EvaluationSettings


# ------------------------------------------------------------------ typed readers


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table ([" + key + "])")
    return value


def _string(table: Mapping[str, Any], prefix: str, key: str, default: str | None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{prefix}.{key}", "must be a non-empty string")
    return value.strip() if isinstance(value, str) else None


def _bool(table: Mapping[str, Any], prefix: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}.{key}", "must be true or false")
    return value


def _number(
    table: Mapping[str, Any],
    prefix: str,
    key: str,
    default: float,
    *,
    minimum: float,
    integer: bool = False,
) -> float:
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        what = "must be an integer" if integer else "must be a number"
        raise ConfigError(f"{prefix}.{key}", what)
    if value < minimum:
        raise ConfigError(f"{prefix}.{key}", f"must be at least {minimum:g}")
    return float(value)


def _unknown(table: Mapping[str, Any], prefix: str, known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}" if prefix else key, "unknown setting")


def http_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(key, "must not have a query or fragment")
    return value.rstrip("/")


def zone(name: str, key: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(key, f"unknown IANA time zone {name!r}") from error


def parse_as_of(raw: str, site_tz: tzinfo, key: str = "--as-of") -> datetime:
    """The evaluation clock. A date alone means the end of that day at the site."""
    try:
        return read_clock(raw, site_tz)  # the one reading, shared with `run`
    except ValueProblem as error:
        raise ConfigError(key, f"{error.message}") from error


def _patient_ref(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, "must be a list of Patient ids or Patient/<id> references")
    ref = value.strip()
    ref = ref if ref.startswith("Patient/") else f"Patient/{ref}"
    if "/" in ref[len("Patient/") :] or ref == "Patient/":
        raise ConfigError(key, f"{value!r} is not a Patient id")
    return ref


# ------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Overrides:
    """What the command line sets; None means "not given"."""

    fhir_base: str | None = None
    state: Path | None = None
    interval_seconds: float | None = None
    site_tz: str | None = None
    mappings: Path | None = None
    no_derive_anc: bool = False
    as_of: str | None = None
    group: str | None = None
    patients: tuple[str, ...] = ()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError("--config", f"cannot read {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("--config", f"{path} is not valid TOML: {error}") from error


def load_config(
    data: Mapping[str, Any], overrides: Overrides, environ: Mapping[str, str]
) -> WatchConfig:
    _unknown(data, "", {"fhir", "watch", "evaluation"})
    fhir_table = _table(data, "fhir")
    watch_table = _table(data, "watch")
    eval_table = _table(data, "evaluation")
    return WatchConfig(
        fhir=_fhir(fhir_table, overrides, environ),
        watch=_watch(watch_table, overrides),
        evaluation=_evaluation(eval_table, overrides),
    )


def _fhir(
    table: Mapping[str, Any], overrides: Overrides, environ: Mapping[str, str]
) -> FhirSettings:
    _unknown(
        table,
        "fhir",
        {
            "base_url",
            "auth",
            "token",
            "smart",
            "verify_tls",
            "ca_bundle",
            "connect_timeout",
            "read_timeout",
            "max_attempts",
            "max_retry_seconds",
        },
    )
    base = overrides.fhir_base or _string(table, "fhir", "base_url", None)
    if base is None:
        raise ConfigError("fhir.base_url", "required (or give --fhir-base)")
    base = http_url(base, "--fhir-base" if overrides.fhir_base else "fhir.base_url")
    auth = _string(table, "fhir", "auth", "none")
    if auth not in AUTH_KINDS:
        raise ConfigError("fhir.auth", f"must be one of {', '.join(AUTH_KINDS)}, got {auth!r}")
    if "token" in table:
        # a secret in a file that is often checked in or world-readable: refuse it outright
        raise ConfigError("fhir.token", f"do not put the token in the file; set {ENV_TOKEN}")
    token = environ.get(ENV_TOKEN) or None
    if auth == "bearer" and not token:
        raise ConfigError("fhir.auth", f"'bearer' needs the token in {ENV_TOKEN}")
    smart = None
    if auth == "smart":
        smart = _smart(_table(table, "smart") if "smart" in table else {}, environ)
    elif "smart" in table:
        _table(table, "smart")  # still must be a table; ignored unless auth = "smart"
    verify: bool | str = _bool(table, "fhir", "verify_tls", True)
    ca_bundle = _string(table, "fhir", "ca_bundle", None)
    if ca_bundle is not None:
        if not verify:
            raise ConfigError("fhir.ca_bundle", "makes no sense with verify_tls = false")
        if not Path(ca_bundle).is_file():
            raise ConfigError("fhir.ca_bundle", f"no such file: {ca_bundle}")
        verify = ca_bundle
    return FhirSettings(
        base_url=base,
        auth=auth,
        token=token,
        smart=smart,
        verify_tls=verify,
        connect_timeout=_number(table, "fhir", "connect_timeout", 5.0, minimum=0.1),
        read_timeout=_number(table, "fhir", "read_timeout", 30.0, minimum=0.1),
        max_attempts=int(_number(table, "fhir", "max_attempts", 5, minimum=1, integer=True)),
        max_retry_seconds=_number(table, "fhir", "max_retry_seconds", 60.0, minimum=0),
    )


def _smart(table: Mapping[str, Any], environ: Mapping[str, str]) -> SmartSettings:
    prefix = "fhir.smart"
    known = {"client_id", "key_file", "algorithm", "scope", "key_id", "token_endpoint"}
    _unknown(table, prefix, known)
    client_id = environ.get(ENV_SMART_CLIENT_ID) or _string(table, prefix, "client_id", None)
    if client_id is None:
        raise ConfigError(
            f"{prefix}.client_id", f"required for auth = 'smart' (or {ENV_SMART_CLIENT_ID})"
        )
    key_file = environ.get(ENV_SMART_KEY_FILE) or _string(table, prefix, "key_file", None)
    if key_file is None:
        raise ConfigError(
            f"{prefix}.key_file", f"required for auth = 'smart' (or {ENV_SMART_KEY_FILE})"
        )
    if not Path(key_file).is_file():
        where = ENV_SMART_KEY_FILE if environ.get(ENV_SMART_KEY_FILE) else f"{prefix}.key_file"
        raise ConfigError(where, f"no such file: {key_file}")
    algorithm = _string(table, prefix, "algorithm", "ES384")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{prefix}.algorithm", f"must be one of {', '.join(ALGORITHMS)}")
    endpoint = _string(table, prefix, "token_endpoint", None)
    if endpoint is not None:
        endpoint = http_url(endpoint, f"{prefix}.token_endpoint")
    scope = _string(table, prefix, "scope", SmartSettings.scope)
    assert scope is not None
    return SmartSettings(
        client_id=client_id,
        key_file=Path(key_file),
        algorithm=algorithm,
        scope=scope,
        key_id=_string(table, prefix, "key_id", None),
        token_endpoint=endpoint,
    )


def _watch(table: Mapping[str, Any], overrides: Overrides) -> WatchSettings:
    prefix = "watch"
    _unknown(
        table,
        prefix,
        {
            "state",
            "interval_seconds",
            "overlap_seconds",
            "page_size",
            "max_pages_per_cycle",
            "write_batch_size",
            "use_bundles",
            "use_include",
            "link_dispense",
            "group",
            "patients",
        },
    )
    state = overrides.state or Path(_string(table, prefix, "state", str(WatchSettings.state)) or "")
    if state.exists() and not state.is_file():
        raise ConfigError("watch.state", f"{state} exists and is not a file")
    interval = (
        overrides.interval_seconds
        if overrides.interval_seconds is not None
        else _number(table, prefix, "interval_seconds", 60.0, minimum=1)
    )
    if interval < 1:
        raise ConfigError("--interval", "must be at least 1 second")
    group = overrides.group or _string(table, prefix, "group", None)
    if group is not None:
        group = group if group.startswith("Group/") else f"Group/{group}"
        if "/" in group[len("Group/") :] or group == "Group/":
            raise ConfigError("watch.group", f"{group!r} is not a Group id")
    raw_patients = list(overrides.patients) or table.get("patients", [])
    if not isinstance(raw_patients, list):
        raise ConfigError("watch.patients", "must be a list of Patient ids")
    patients = tuple(_patient_ref(value, "watch.patients") for value in raw_patients)
    if group and patients:
        raise ConfigError("watch.group", "give either a Group or a patient list, not both")
    return WatchSettings(
        state=state,
        interval_seconds=interval,
        overlap_seconds=_number(table, prefix, "overlap_seconds", 120.0, minimum=0),
        page_size=int(
            _number(table, prefix, "page_size", WatchSettings.page_size, minimum=1, integer=True)
        ),
        max_pages_per_cycle=int(
            _number(table, prefix, "max_pages_per_cycle", 1000, minimum=1, integer=True)
        ),
        write_batch_size=int(
            _number(table, prefix, "write_batch_size", 100, minimum=1, integer=True)
        ),
        use_bundles=_bool(table, prefix, "use_bundles", True),
        use_include=_bool(table, prefix, "use_include", True),
        link_dispense=_bool(table, prefix, "link_dispense", False),
        group=group,
        patients=patients,
    )


def _evaluation(table: Mapping[str, Any], overrides: Overrides) -> EvaluationSettings:
    prefix = "evaluation"
    _unknown(table, prefix, {"site_tz", "derive_anc", "mappings"})
    tz_name = overrides.site_tz or _string(table, prefix, "site_tz", "UTC") or "UTC"
    site_tz = zone(tz_name, "--site-tz" if overrides.site_tz else "evaluation.site_tz")
    mappings = overrides.mappings
    if mappings is None:
        raw = _string(table, prefix, "mappings", None)
        mappings = Path(raw) if raw else None
    if mappings is not None and not mappings.is_dir():
        key = "--mappings" if overrides.mappings else "evaluation.mappings"
        raise ConfigError(key, f"not a folder: {mappings}")
    derive = _bool(table, prefix, "derive_anc", True) and not overrides.no_derive_anc
    as_of = parse_as_of(overrides.as_of, site_tz) if overrides.as_of else None
    return EvaluationSettings(site_tz=site_tz, derive_anc=derive, mappings=mappings, as_of=as_of)
