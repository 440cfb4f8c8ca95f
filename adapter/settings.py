"""One configuration model for every command (pydantic-settings).

Where a value comes from, highest first::

    flag  >  environment (REMS_ADAPTER_<SECTION>_<KEY>)  >  TOML file (--config)  >  default

- The TOML file has one table per section (``[fhir]``, ``[watch]``...); a nested table
  (``[fhir.smart]``) is its own section for the environment: ``REMS_ADAPTER_SMART_CLIENT_ID``.
- Secrets (`secret=True` below: tokens) come only from the environment: a secret in the file is
  refused, and no flag sets one. `--check-config` prints them masked.
- Every bad value is a `SettingsError` naming the key as the user wrote it (the flag, the
  environment variable, or ``section.key`` and the file).

Adding a section (e.g. for ``serve``): write a `Section` subclass with typed, documented fields
(`Field(description=..., examples=[a, b])`, two distinct valid examples used by the tests) and
add it as a field of `Settings`. The environment names, the README table, `--check-config`
and the precedence tests follow from the model. A flag is declared by `FLAGS` (dotted key ->
flag), read by the command's parser.

This module reads the environment and files only inside `load_settings`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictInt, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapter.errors import ConfigurationError, Kind

ENV_PREFIX = "REMS_ADAPTER_"
MASK = "********"
UNSET = "(not set)"


class SettingsError(ConfigurationError, ValueError):
    """A setting is missing or unusable. `key` is its name as the user wrote it: a flag
    (``--fhir-base``), an environment variable, or the dotted key (``watch.page_size``), in
    which case `file` names the TOML file it came from."""

    def __init__(
        self, key: str, message: str, *, file: str | None = None, kind: Kind | None = None
    ) -> None:
        self.key = key
        self.file = file
        shown = f"{message} (in {file})" if file else message
        if kind is None and key.startswith("--"):
            kind = Kind.USAGE  # a bad flag is a usage error; a bad file or variable is not
        super().__init__(shown, where=key, kind=kind)


def secret(description: str) -> Any:
    """A secret field: environment only, masked when shown."""
    return Field(default=None, description=description, json_schema_extra={"secret": True})


class Section(BaseModel):
    """Base of a settings table: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ sections


class SmartSection(Section):
    """``[fhir.smart]``: SMART Backend Services (``fhir.auth = "smart"``)."""

    client_id: str | None = Field(
        None,
        description="SMART Backend Services client id (required for fhir.auth = smart)",
        examples=["a", "b"],
    )
    key_file: str | None = Field(
        None,
        description="PEM private key file signing the client assertion (required for smart)",
        examples=["k1", "k2"],
    )
    algorithm: Literal["ES384", "RS384"] = Field(
        "ES384",
        description="client assertion algorithm: ES384 or RS384",
        examples=["RS384", "ES384"],
    )
    scope: str = Field(
        "system/*.rs system/DetectedIssue.cu system/MedicationDispense.u",
        description="scopes requested",
        examples=["system/*.rs", "system/*.cruds"],
    )
    key_id: str | None = Field(
        None, description="JWT kid (default: the key's RFC 7638 thumbprint)", examples=["k1", "k2"]
    )
    token_endpoint: str | None = Field(
        None,
        description="token URL (default: from .well-known/smart-configuration)",
        examples=["https://a.example/token", "https://b.example/token"],
    )


class FhirSection(Section):
    """``[fhir]``: the EHR FHIR R4 server (watch, serve)."""

    base_url: str | None = Field(
        None,
        description="EHR FHIR R4 base URL (http/https, no query); required by watch",
        examples=["http://127.0.0.1:1/fhir", "http://127.0.0.1:2/fhir"],
    )
    auth: Literal["none", "bearer", "smart"] = Field(
        "none",
        description="none, bearer (token from the environment) or smart",
        examples=["smart", "none"],
    )
    token: SecretStr | None = secret("static bearer token (fhir.auth = bearer)")
    verify_tls: StrictBool = Field(
        True, description="verify the server's TLS certificate", examples=[False, True]
    )
    ca_bundle: str | None = Field(
        None,
        description="CA bundle file to trust instead of the system CAs",
        examples=["ca1.pem", "ca2.pem"],
    )
    connect_timeout: float = Field(
        5.0, ge=0.1, description="HTTP connect timeout, seconds", examples=[1.5, 2.5]
    )
    read_timeout: float = Field(
        30.0, ge=0.1, description="HTTP read timeout, seconds", examples=[10.0, 20.0]
    )
    max_attempts: StrictInt = Field(
        5,
        ge=1,
        description="attempts per request (429/502/503/504, network; Retry-After honoured)",
        examples=[2, 3],
    )
    max_retry_seconds: float = Field(
        60.0,
        ge=0,
        description="bound on the total retry time of one request, seconds",
        examples=[1.0, 2.0],
    )
    smart: SmartSection = SmartSection()


class WatchSection(Section):
    """``[watch]``: the polling cycle."""

    state: str = Field(
        "rems-adapter-watch.sqlite",
        description="SQLite state file (watermarks, what was seen and written)",
        examples=["a.sqlite", "b.sqlite"],
    )
    interval_seconds: float = Field(
        60.0, ge=1, description="seconds between cycles (at least 1)", examples=[5.0, 7.0]
    )
    overlap_seconds: float = Field(
        120.0,
        ge=0,
        description="subtracted from each _lastUpdated watermark when polling",
        examples=[10.0, 20.0],
    )
    page_size: StrictInt = Field(1000, ge=1, description="_count per poll", examples=[10, 20])
    max_pages_per_cycle: StrictInt = Field(
        1000, ge=1, description="page bound per search per cycle", examples=[10, 20]
    )
    write_batch_size: StrictInt = Field(
        100, ge=1, description="writes per batch Bundle", examples=[10, 20]
    )
    use_bundles: StrictBool = Field(
        True,
        description="write in batch Bundles (false: one request per write)",
        examples=[False, True],
    )
    use_include: StrictBool = Field(
        True,
        description="_include Medications with dispenses and requests",
        examples=[False, True],
    )
    link_dispense: StrictBool = Field(
        False,
        description="set MedicationDispense.detectedIssue to its decision (watch and serve)",
        examples=[True, False],
    )
    group: str | None = Field(
        None, description="per-patient mode: poll the members of this Group", examples=["g1", "g2"]
    )
    patients: tuple[str, ...] = Field(
        (),
        description="per-patient mode: these Patient ids (not with group; env: comma-separated)",
        examples=[("p1",), ("p2", "p3")],
    )


class BackfillSection(Section):
    """``[backfill]``: a FHIR Bulk Data ``$export`` from the EHR, decided in batch mode."""

    level: Literal["system", "patient", "group"] = Field(
        "system",
        description="export level: system ([base]/$export), patient or group (with group)",
        examples=["patient", "group"],
    )
    group: str | None = Field(
        None, description="Group id of a Group-level export (sets the level)", examples=["g1", "g2"]
    )
    since: str | None = Field(
        None,
        description="only resources changed since this instant (_since; a date: its start)",
        examples=["2025-01-01T00:00:00Z", "2025-06-01"],
    )
    work_dir: str | None = Field(
        None,
        description="folder the NDJSON files are downloaded to and kept in (default: a "
        "temporary folder, removed afterwards)",
        examples=["w1", "w2"],
    )
    write_back: StrictBool = Field(
        False,
        description="also write the DetectedIssues to the EHR, as watch does",
        examples=[True, False],
    )
    poll_interval_seconds: float = Field(
        5.0,
        ge=0.1,
        description="seconds between status requests when the server sends no Retry-After",
        examples=[1.0, 2.0],
    )
    max_poll_interval_seconds: float = Field(
        120.0,
        ge=0.1,
        description="upper bound on a server's Retry-After between status requests",
        examples=[10.0, 20.0],
    )
    max_polls: StrictInt = Field(
        2000, ge=1, description="status requests before giving up", examples=[10, 20]
    )
    max_wait_seconds: float = Field(
        21600.0,
        ge=0,
        description="seconds to wait for the export before giving up (and cancelling it)",
        examples=[60.0, 120.0],
    )


class EvaluationSection(Section):
    """``[evaluation]``: how results are read and decided (run, demo, watch, serve)."""

    site_tz: str = Field(
        "UTC",
        description="IANA zone in which collection dates, due dates and today are taken",
        examples=["America/Chicago", "Europe/Paris"],
    )
    derive_anc: StrictBool = Field(
        True,
        description="derive ANC = WBC x (neutrophil% [+ band%]) / 100 without a direct ANC",
        examples=[False, True],
    )
    mappings: str | None = Field(
        None,
        description="folder of a site's mappings files; each replaces the bundled file of its name",
        examples=["m1", "m2"],
    )


class RemsSection(Section):
    """``[rems]``: the decision backend (run, serve)."""

    backend: str = Field(
        "local",
        description="'local' (label rules) or a REMS service base URL",
        examples=["http://127.0.0.1:1", "http://127.0.0.1:2"],
    )
    patient_id_system: str = Field(
        "https://rems-adapter.github.io/fhir/sid/rems-patient-id",
        description="Patient.identifier system holding the REMS patient id",
        examples=["urn:a", "urn:b"],
    )
    pharmacy_id_system: str = Field(
        "https://rems-adapter.github.io/fhir/sid/rems-pharmacy-id",
        description="Organization.identifier system of the pharmacy's REMS id",
        examples=["urn:a", "urn:b"],
    )
    pharmacy_id: str | None = Field(
        None, description="pharmacy REMS id when a dispense names none", examples=["P1", "P2"]
    )
    designee: str = Field(
        "rems-adapter",
        description="designee id routine PSFs and enrollments are signed with",
        examples=["d1", "d2"],
    )
    timeout: float = Field(
        30.0, gt=0, description="seconds to wait for each REMS answer", examples=[3.0, 4.0]
    )
    attempts: StrictInt = Field(
        4, ge=1, description="attempts per REMS request before pending", examples=[2, 3]
    )
    token: SecretStr | None = secret("bearer token sent to the REMS service")


class RemsServerSection(Section):
    """``[rems_server]``: the reference REMS service (`rems-server`)."""

    host: str = Field(
        "127.0.0.1", description="address to bind", examples=["127.0.0.2", "127.0.0.3"]
    )
    port: StrictInt = Field(
        8771, ge=0, le=65535, description="TCP port (0: any free port)", examples=[1, 2]
    )
    db: str = Field(
        "rems-service.sqlite",
        description="SQLite database (created if missing)",
        examples=["a.sqlite", "b.sqlite"],
    )
    seed: str | None = Field(
        None, description="JSON/TOML file of certified actors to load", examples=["s1", "s2"]
    )
    rules: str | None = Field(
        None,
        description="program rules TOML (default: mappings/rems-program.toml)",
        examples=["r1", "r2"],
    )
    insecure_admin: StrictBool = Field(
        False, description="allow /admin/* writes without an admin token", examples=[True, False]
    )
    admin_token: SecretStr | None = secret("bearer token required by /admin/*")
    token: SecretStr | None = secret("bearer token required by every other endpoint")


class ServeSection(Section):
    """``[serve]``: the long-running service (`serve`; `watch` is serve with only polling)."""

    listen: str = Field(
        "127.0.0.1:8770",
        description="HOST:PORT of the HTTP endpoints (beyond loopback only with an inbound token)",
        examples=["127.0.0.1:1", "127.0.0.1:2"],
    )
    state: str = Field(
        "rems-adapter.sqlite",
        description="state store: a SQLite file, or a postgresql:// URL",
        examples=["a.sqlite", "b.sqlite"],
    )
    poll: StrictBool = Field(
        True,
        description="poll the EHR (the watch cycle); --no-poll: push only",
        examples=[False, True],
    )
    mllp: str | None = Field(
        None,
        description="HOST:PORT of the HL7 v2 MLLP listener (off when unset)",
        examples=["127.0.0.1:1", "127.0.0.1:2"],
    )
    workers: StrictInt = Field(
        2, ge=1, le=64, description="threads deciding patients", examples=[1, 3]
    )
    performers: StrictInt = Field(
        2,
        ge=1,
        le=64,
        description="threads performing outbox effects (EHR writes)",
        examples=[1, 3],
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="how long a claim lasts before another worker may take it over",
        examples=[10.0, 20.0],
    )
    forward: StrictBool = Field(
        True,
        description="write pushed Observations to the EHR (conditional create on identifier)",
        examples=[False, True],
    )
    hydrate: StrictBool = Field(
        True,
        description="read the history of a patient first seen through a push from the EHR",
        examples=[False, True],
    )
    history_max_pages: StrictInt = Field(
        5,
        ge=1,
        description="page bound per search when reading a patient's history",
        examples=[1, 2],
    )
    retry_first_seconds: float = Field(
        1.0,
        gt=0,
        description="first delay before an effect is tried again (then doubled)",
        examples=[0.5, 2.0],
    )
    retry_max_seconds: float = Field(
        300.0,
        gt=0,
        description="longest delay between two attempts of an effect",
        examples=[30.0, 60.0],
    )
    max_attempts: StrictInt = Field(
        60,
        ge=1,
        description="attempts before an effect becomes a dead letter",
        examples=[5, 6],
    )


class MllpSection(Section):
    """``[mllp]``: the HL7 v2 MLLP listener of `serve` (on with ``serve.mllp`` / ``--mllp``)."""

    assigning_authority: str | None = Field(
        None,
        description="PID-3 assigning authority whose identifiers name the patient (CX-4 "
        "namespace id or universal id); required with --mllp",
        examples=["NORTH", "2.16.840.1.113883.19.5"],
    )
    patient_identifier_system: str | None = Field(
        None,
        description="FHIR Patient.identifier.system of those identifiers (default urn:oid: + "
        "the authority's OID)",
        examples=["urn:oid:1.2.3", "https://north.example/mrn"],
    )
    processing_ids: tuple[str, ...] = Field(
        ("P",),
        description="MSH-11 processing ids accepted (others get AR; env: comma-separated)",
        examples=[("P", "T"), ("T",)],
    )
    allow_remote: StrictBool = Field(
        False,
        description="listen on a non-loopback address (MLLP has no authentication: a private "
        "network or a TLS tunnel only)",
        examples=[True, False],
    )
    max_connections: StrictInt = Field(
        32, ge=1, le=1024, description="MLLP connections at once", examples=[4, 8]
    )
    idle_timeout: float = Field(
        300.0, gt=0, description="seconds a connection may stay idle", examples=[10.0, 20.0]
    )
    message_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds one message may take to arrive once started",
        examples=[5.0, 6.0],
    )
    max_message_bytes: StrictInt = Field(
        1_048_576,
        ge=1024,
        description="largest message accepted (AR beyond)",
        examples=[2048, 4096],
    )
    match_interval: float = Field(
        30.0,
        gt=0,
        description="seconds between passes matching parked results (HL7 v2, and pushed results "
        "naming their patient by identifier) to EHR Patients",
        examples=[1.0, 2.0],
    )
    enhanced_acks: StrictBool = Field(
        False,
        description="honour MSH-15/16 enhanced acknowledgement (commit ACKs CA/CE/CR, none when "
        "the sender asks for none); off: one AA/AE/AR per message",
        examples=[True, False],
    )


class InboundSection(Section):
    """``[inbound]``: what serve accepts on its HTTP endpoints."""

    token: SecretStr | None = secret(
        "bearer token every request must carry (not /healthz, /readyz, /metrics)"
    )
    max_body_bytes: StrictInt = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="largest request body (413 above it)",
        examples=[2048, 4096],
    )
    rate_per_second: float = Field(
        200.0,
        ge=0,
        description="requests per second per client address (0: no limit)",
        examples=[10.0, 20.0],
    )
    rate_burst: StrictInt = Field(
        400,
        ge=1,
        description="requests a client may send at once above the rate",
        examples=[10, 20],
    )
    max_bundle_entries: StrictInt = Field(
        1000, ge=1, description="entries in one pushed Bundle", examples=[10, 20]
    )


class LogSection(Section):
    """``[log]``: logging, for every command."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="lowest level logged", examples=["DEBUG", "ERROR"]
    )
    format: Literal["text", "json"] = Field(
        "text", description="text, or json (one object a line)", examples=["json", "text"]
    )
    quiet: StrictBool = Field(
        False,
        description="no summary or progress; warnings and errors only",
        examples=[True, False],
    )


class BatchSection(Section):
    """``[batch]``: batch mode at scale (`run`)."""

    jobs: StrictInt | None = Field(
        None,
        ge=1,
        description=(
            "processes reading the input, the adapter's and its workers"
            " (default: the machine's CPUs)"
        ),
        examples=[1, 2],
    )
    strict: StrictBool = Field(
        False,
        description="parse and check every line (default: skip lines nothing reads, unchecked)",
        examples=[True, False],
    )


class DemoSection(Section):
    """``[demo]``: the bundled demo."""

    out: str | None = Field(
        None,
        description="output folder (default: rems-adapter/demo under the user's cache)",
        examples=["d1", "d2"],
    )
    format: Literal["table", "csv", "json"] = Field(
        "table", description="how the result table is printed", examples=["csv", "json"]
    )


class SubscriptionsSection(Section):
    """``[subscriptions]``: FHIR Subscription notifications at ``/notify`` (serve)."""

    enabled: StrictBool = Field(
        False,
        description="receive notifications at /notify and keep the Subscriptions on the EHR",
        examples=[True, False],
    )
    kind: Literal["rest-hook", "backport"] = Field(
        "rest-hook",
        description="R4 rest-hook (criteria) or the R5 Backport IG (topic-based)",
        examples=["backport", "rest-hook"],
    )
    endpoint: str | None = Field(
        None,
        description="URL the EHR notifies (default: http://<serve.listen>/notify)",
        examples=["http://127.0.0.1:1/notify", "http://127.0.0.1:2/notify"],
    )
    observation_criteria: str | None = Field(
        None,
        description="Observation?params the EHR matches (default: the lab codes of mappings/)",
        examples=["Observation?code=http://loinc.org|751-8", "Observation?category=laboratory"],
    )
    observation_topic: str | None = Field(
        None,
        description="topic canonical for Observations (backport; default: the adapter's own)",
        examples=["https://a.example/topic", "https://b.example/topic"],
    )
    create_topic: StrictBool = Field(
        False,
        description="create the adapter's topic on the EHR as a backported Basic (backport)",
        examples=[True, False],
    )
    content: Literal["full-resource", "id-only", "empty"] = Field(
        "full-resource",
        description="payload asked for: full-resource, id-only (backport) or empty",
        examples=["id-only", "empty"],
    )
    heartbeat_seconds: StrictInt = Field(
        60,
        ge=0,
        description="backport heartbeat period (0: none); silent 2 periods -> polling fallback",
        examples=[10, 20],
    )
    manage: StrictBool = Field(
        True,
        description="create, check and re-activate the Subscriptions on the EHR",
        examples=[False, True],
    )
    maintain_seconds: float = Field(
        60.0,
        ge=1,
        description="seconds between Subscription checks on the EHR",
        examples=[5.0, 7.0],
    )
    fallback_seconds: float = Field(
        60.0,
        ge=1,
        description="seconds between re-queries while a Subscription is silent",
        examples=[5.0, 7.0],
    )
    overlap_seconds: float = Field(
        120.0,
        ge=0,
        description="subtracted from the re-query watermark (_lastUpdated)",
        examples=[10.0, 20.0],
    )
    gap_grace_seconds: float = Field(
        5.0,
        ge=0,
        description="how long a missing event may still arrive before it is recovered (0: at once)",
        examples=[1.0, 2.0],
    )
    secret_header: str = Field(
        "X-Rems-Adapter-Notify-Secret",
        description="header carrying the shared secret on every notification",
        examples=["X-A", "X-B"],
    )
    secret: SecretStr | None = secret(
        "shared secret the EHR sends in secret_header (channel.header); checked on /notify"
    )


class Settings(BaseSettings):
    """Every setting of every command. Build it with `load_settings`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    evaluation: EvaluationSection = EvaluationSection()
    rems: RemsSection = RemsSection()
    fhir: FhirSection = FhirSection()
    watch: WatchSection = WatchSection()
    serve: ServeSection = ServeSection()
    inbound: InboundSection = InboundSection()
    backfill: BackfillSection = BackfillSection()
    mllp: MllpSection = MllpSection()
    subscriptions: SubscriptionsSection = SubscriptionsSection()
    rems_server: RemsServerSection = RemsServerSection()
    batch: BatchSection = BatchSection()
    demo: DemoSection = DemoSection()
    log: LogSection = LogSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load_settings hands over (already merged, with origins): no implicit
        # .env or secrets directory, no environment read behind the caller's back.
        return (init_settings,)


#: Flags that set a setting (dotted key -> flag). The commands' parsers declare them.
FLAGS: dict[str, str] = {
    "evaluation.site_tz": "--site-tz",
    "evaluation.mappings": "--mappings",
    "evaluation.derive_anc": "--no-derive-anc",
    "rems.backend": "--rems",
    "rems.patient_id_system": "--rems-patient-id-system",
    "rems.pharmacy_id_system": "--rems-pharmacy-id-system",
    "rems.pharmacy_id": "--rems-pharmacy-id",
    "rems.designee": "--rems-designee",
    "rems.timeout": "--rems-timeout",
    "rems.attempts": "--rems-attempts",
    "fhir.base_url": "--fhir-base",
    "watch.state": "--state",
    "watch.interval_seconds": "--interval",
    "watch.group": "--group",
    "watch.patients": "--patient",
    "serve.listen": "--listen",
    "serve.state": "--state",
    "serve.poll": "--no-poll",
    "serve.mllp": "--mllp",
    "backfill.level": "--level",
    "backfill.group": "--group",
    "backfill.since": "--since",
    "backfill.work_dir": "--work-dir",
    "backfill.write_back": "--write-back",
    "rems_server.host": "--host",
    "rems_server.port": "--port",
    "rems_server.db": "--db",
    "rems_server.seed": "--seed",
    "rems_server.rules": "--rules",
    "rems_server.insecure_admin": "--insecure-admin",
    "batch.jobs": "--jobs",
    "batch.strict": "--strict",
    "demo.out": "--out",
    "demo.format": "--format",
    "log.level": "--log-level",
    "log.format": "--log-format",
    "log.quiet": "--quiet",
}


# ------------------------------------------------------------------ the fields, flattened


@dataclass(frozen=True)
class Key:
    """One setting: where it lives and what it is called in each source."""

    dotted: str  # "fhir.smart.client_id"
    path: tuple[str, ...]  # ("fhir", "smart", "client_id")
    env: str  # "REMS_ADAPTER_SMART_CLIENT_ID"
    info: FieldInfo

    @property
    def secret(self) -> bool:
        extra = self.info.json_schema_extra
        return isinstance(extra, dict) and bool(extra.get("secret"))

    @property
    def flag(self) -> str | None:
        return FLAGS.get(self.dotted)

    @property
    def default(self) -> Any:
        return self.info.get_default(call_default_factory=True)


def _section_model(info: FieldInfo) -> type[Section] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    return None


def keys(model: type[BaseModel] = Settings, path: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every leaf setting, in model order."""
    for name, info in model.model_fields.items():
        sub = _section_model(info)
        if sub is not None:
            yield from keys(sub, (*path, name))
            continue
        full = (*path, name)
        env = f"{ENV_PREFIX}{path[-1].upper()}_{name.upper()}"
        yield Key(".".join(full), full, env, info)


def _scalar_type(annotation: Any) -> Any:
    """The type an environment string is parsed as (Optional and Annotated stripped)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not Literal and get_origin(annotation) is not tuple:
        return _scalar_type(args[0])
    return annotation


def _from_env(key: Key, raw: str) -> Any:
    """An environment string as the field's type; left as is when it does not parse (the
    model then reports it, naming the variable)."""
    target = _scalar_type(key.info.annotation)
    if target is SecretStr or target is str:
        return raw
    if get_origin(target) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    for scalar in (bool, int, float):
        if target is scalar or (isinstance(target, type) and issubclass(target, scalar)):
            try:
                return TypeAdapter(scalar).validate_python(raw)
            except PydanticValidationError:
                return raw
    return raw


# ------------------------------------------------------------------ loading


class Origins:
    """Where each effective value came from, to name it in errors and in --check-config."""

    def __init__(self, config_file: Path | None) -> None:
        self.file = str(config_file) if config_file else None
        self._by_key: dict[str, str] = {}

    def set(self, dotted: str, origin: str) -> None:
        self._by_key[dotted] = origin

    def of(self, dotted: str) -> str:
        """'--flag', 'REMS_ADAPTER_…', 'file', or 'default'."""
        return self._by_key.get(dotted, "default")

    def error(self, dotted: str, message: str) -> SettingsError:
        """An error about a setting, naming it as the user wrote it. A bad flag is a usage
        error (exit 2); a bad file or environment value a configuration error (exit 3)."""
        origin = self.of(dotted)
        if origin == "file":
            return SettingsError(dotted, message, file=self.file)
        if origin == "default":
            return SettingsError(dotted, message)
        return SettingsError(origin, message)


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    origins: Origins

    def error(self, dotted: str, message: str) -> SettingsError:
        return self.origins.error(dotted, message)

    def name(self, dotted: str) -> str:
        """The setting's name as given: its flag, its environment variable or its key."""
        origin = self.origins.of(dotted)
        return dotted if origin in ("file", "default") else origin


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except IsADirectoryError as error:
        raise SettingsError(
            "--config", f"{path} is a folder, not a TOML file", kind=Kind.CONFIGURATION
        ) from error
    except OSError as error:
        raise SettingsError(
            "--config", f"cannot read {path}: {error.strerror}", kind=Kind.CONFIGURATION
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(
            "--config", f"{path} is not valid TOML: {error}", kind=Kind.CONFIGURATION
        ) from error


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _walk(tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk(value, (*path, name))
        else:
            yield ".".join((*path, name)), value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(name), dict):
            _merge(base[name], value)
        else:
            base[name] = value
    return base


def load_settings(
    *,
    file_data: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Loaded:
    """The effective settings. `config_file` is read when `file_data` is not given; `flags`
    maps dotted keys to values the command line gave (None: not given); `environ` defaults to
    no environment (the composition root passes os.environ)."""
    if file_data is None:
        file_data = read_config_file(config_file) if config_file is not None else {}
    origins = Origins(config_file)
    all_keys = {key.dotted: key for key in keys()}
    merged: dict[str, Any] = {}
    for dotted, _value in _walk(file_data):
        key = all_keys.get(dotted)
        if key is not None and key.secret:
            raise SettingsError(
                dotted, f"do not put a secret in the file; set {key.env}", file=origins.file
            )
        parts = dotted.split(".")
        for end in range(1, len(parts) + 1):  # "extra" too, for an unknown table
            origins.set(".".join(parts[:end]), "file")
    _merge(merged, _plain(file_data))
    for key in all_keys.values():
        raw = (environ or {}).get(key.env)
        if raw is not None and raw != "":
            _put(merged, key.path, _from_env(key, raw))
            origins.set(key.dotted, key.env)
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        key = all_keys[dotted]  # a defect if a command passes an undeclared flag
        if key.secret:  # pragma: no cover - no flag is declared for a secret
            raise AssertionError(f"{dotted} is a secret")
        _put(merged, key.path, value)
        origins.set(dotted, key.flag or dotted)
    try:
        settings = Settings(**merged)
    except PydanticValidationError as error:
        raise _first_error(error, origins) from None
    return Loaded(settings, origins)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the TOML tree (tomllib gives dicts; the merge edits in place)."""
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in data.items()}


_MESSAGES = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "extra_forbidden": "unknown setting",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}


def _first_error(error: PydanticValidationError, origins: Origins) -> SettingsError:
    first = error.errors(include_url=False)[0]
    dotted = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        message = f"must be {'at least' if kind == 'greater_than_equal' else 'more than'} {bound}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected', '')}".replace("'", "")
    else:
        message = _MESSAGES.get(kind, str(first.get("msg", "invalid")))
    return origins.error(dotted, message)


# ------------------------------------------------------------------ showing


def _shown(key: Key, value: Any) -> str:
    if key.secret:
        return '"' + MASK + '"' if value is not None else UNSET
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_of(settings: BaseModel, key: Key) -> Any:
    node: Any = settings
    for part in key.path:
        node = getattr(node, part)
    return node


def render(loaded: Loaded, sections: tuple[str, ...]) -> str:
    """`--check-config`: the effective settings of `sections` as TOML, secrets masked, each
    value followed by where it came from."""
    lines: list[str] = []
    current: tuple[str, ...] | None = None
    for key in keys():
        if key.path[0] not in sections:
            continue
        table = key.path[:-1]
        if table != current:
            lines.append(("\n" if lines else "") + f"[{'.'.join(table)}]")
            current = table
        origin = loaded.origins.of(key.dotted)
        origin = (loaded.origins.file or "file") if origin == "file" else origin
        shown = _shown(key, value_of(loaded.settings, key))
        if shown == UNSET:
            lines.append(f"# {key.path[-1]} = (not set)  # {origin}")
        else:
            lines.append(f"{key.path[-1]} = {shown}  # {origin}")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's settings table (kept equal to it by a test)."""
    rows = [
        "| key | environment | flag | default | what |",
        "|---|---|---|---|---|",
    ]
    for key in keys():
        default = "(secret: environment only)" if key.secret else _shown(key, key.default)
        default = "" if default == UNSET else default.replace("|", "\\|")
        flag = f"`{key.flag}`" if key.flag else ""
        description = (key.info.description or "").replace("|", "\\|")
        rows.append(f"| `{key.dotted}` | `{key.env}` | {flag} | {default} | {description} |")
    return "\n".join(rows)


def section(loaded: Loaded, name: str) -> Section:
    return cast(Section, getattr(loaded.settings, name))
