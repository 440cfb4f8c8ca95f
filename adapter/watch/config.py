"""Watch configuration: the checked values the watcher runs with, from `adapter.settings`.

Types, bounds and precedence (flag > environment > file > default) are the settings model's;
this module adds what needs several keys or the file system (a bearer token for auth =
"bearer", the SMART key file, the state path, Group or patient list). Every bad setting is a
``ConfigError`` naming the key as the user wrote it, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapter.fhir.values import ValueProblem, read_clock
from adapter.settings import Loaded, SettingsError, load_settings, read_config_file

ENV_TOKEN = "REMS_ADAPTER_FHIR_TOKEN"
ENV_SMART_KEY_FILE = "REMS_ADAPTER_SMART_KEY_FILE"
ENV_SMART_CLIENT_ID = "REMS_ADAPTER_SMART_CLIENT_ID"


#: A setting is missing or unusable; ``key`` names it as the user wrote it.
ConfigError = SettingsError


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


# ------------------------------------------------------------------ checks


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
    return read_config_file(path)


def overrides_as_flags(overrides: Overrides) -> dict[str, Any]:
    """The command line's values by dotted setting key (None: not given)."""
    return {
        "fhir.base_url": overrides.fhir_base,
        "watch.state": str(overrides.state) if overrides.state is not None else None,
        "watch.interval_seconds": overrides.interval_seconds,
        "watch.group": overrides.group,
        "watch.patients": overrides.patients or None,
        "evaluation.site_tz": overrides.site_tz,
        "evaluation.mappings": str(overrides.mappings) if overrides.mappings else None,
        "evaluation.derive_anc": False if overrides.no_derive_anc else None,
    }


def load_config(
    data: Mapping[str, Any],
    overrides: Overrides,
    environ: Mapping[str, str],
    *,
    config_file: Path | None = None,
) -> WatchConfig:
    """The watch configuration from a parsed TOML file, the environment and the flags."""
    loaded = load_settings(
        file_data=data,
        config_file=config_file,
        environ=environ,
        flags=overrides_as_flags(overrides),
    )
    return watch_config(loaded, overrides.as_of)


def watch_config(loaded: Loaded, as_of: str | None = None) -> WatchConfig:
    """The checked watch configuration from the effective settings (cross-field rules here;
    types and bounds in adapter.settings)."""
    return WatchConfig(
        fhir=_fhir(loaded),
        watch=_watch(loaded),
        evaluation=_evaluation(loaded, as_of),
    )


def _fhir(loaded: Loaded) -> FhirSettings:
    fhir = loaded.settings.fhir
    if fhir.base_url is None:
        raise ConfigError("fhir.base_url", "required (or give --fhir-base)")
    base = http_url(fhir.base_url, loaded.name("fhir.base_url"))
    token = fhir.token.get_secret_value() if fhir.token is not None else None
    if fhir.auth == "bearer" and not token:
        raise loaded.error("fhir.auth", f"'bearer' needs the token in {ENV_TOKEN}")
    smart = _smart(loaded) if fhir.auth == "smart" else None
    verify: bool | str = fhir.verify_tls
    if fhir.ca_bundle is not None:
        if not fhir.verify_tls:
            raise loaded.error("fhir.ca_bundle", "makes no sense with verify_tls = false")
        if not Path(fhir.ca_bundle).is_file():
            raise loaded.error("fhir.ca_bundle", f"no such file: {fhir.ca_bundle}")
        verify = fhir.ca_bundle
    return FhirSettings(
        base_url=base,
        auth=fhir.auth,
        token=token,
        smart=smart,
        verify_tls=verify,
        connect_timeout=fhir.connect_timeout,
        read_timeout=fhir.read_timeout,
        max_attempts=fhir.max_attempts,
        max_retry_seconds=fhir.max_retry_seconds,
    )


def _smart(loaded: Loaded) -> SmartSettings:
    smart = loaded.settings.fhir.smart
    if not smart.client_id:
        raise ConfigError(
            "fhir.smart.client_id", f"required for auth = 'smart' (or {ENV_SMART_CLIENT_ID})"
        )
    if not smart.key_file:
        raise ConfigError(
            "fhir.smart.key_file", f"required for auth = 'smart' (or {ENV_SMART_KEY_FILE})"
        )
    if not Path(smart.key_file).is_file():
        raise loaded.error("fhir.smart.key_file", f"no such file: {smart.key_file}")
    endpoint = smart.token_endpoint
    if endpoint is not None:
        endpoint = http_url(endpoint, loaded.name("fhir.smart.token_endpoint"))
    return SmartSettings(
        client_id=smart.client_id,
        key_file=Path(smart.key_file),
        algorithm=smart.algorithm,
        scope=smart.scope,
        key_id=smart.key_id,
        token_endpoint=endpoint,
    )


def _watch(loaded: Loaded) -> WatchSettings:
    watch = loaded.settings.watch
    state = Path(watch.state)
    if state.exists() and not state.is_file():
        raise loaded.error("watch.state", f"{state} exists and is not a file")
    group = watch.group
    if group is not None:
        group = group if group.startswith("Group/") else f"Group/{group}"
        if "/" in group[len("Group/") :] or group == "Group/":
            raise loaded.error("watch.group", f"{group!r} is not a Group id")
    patients = tuple(_patient_ref(value, loaded.name("watch.patients")) for value in watch.patients)
    if group and patients:
        raise loaded.error("watch.group", "give either a Group or a patient list, not both")
    return WatchSettings(
        state=state,
        interval_seconds=watch.interval_seconds,
        overlap_seconds=watch.overlap_seconds,
        page_size=watch.page_size,
        max_pages_per_cycle=watch.max_pages_per_cycle,
        write_batch_size=watch.write_batch_size,
        use_bundles=watch.use_bundles,
        use_include=watch.use_include,
        link_dispense=watch.link_dispense,
        group=group,
        patients=patients,
    )


def _evaluation(loaded: Loaded, as_of: str | None) -> EvaluationSettings:
    evaluation = loaded.settings.evaluation
    site_tz = zone(evaluation.site_tz, loaded.name("evaluation.site_tz"))
    mappings = Path(evaluation.mappings) if evaluation.mappings else None
    if mappings is not None and not mappings.is_dir():
        raise loaded.error("evaluation.mappings", f"not a folder: {mappings}")
    return EvaluationSettings(
        site_tz=site_tz,
        derive_anc=evaluation.derive_anc,
        mappings=mappings,
        as_of=parse_as_of(as_of, site_tz) if as_of else None,
    )
