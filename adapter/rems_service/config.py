"""The program's windows and limits, from mappings/rems-program.toml (never literals in code).

The file's layout is a typed pydantic model (`_Program`): every table and key is required, unknown
ones are errors, and an error names the file and the key (``rules.toml: [psf.psf_window_days]
must be a whole number of days >= 0``)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from adapter.errors import ConfigurationError

FREQUENCIES = ("three-times-weekly", "weekly", "every-2-weeks", "monthly")
DEFAULT_RULES_RESOURCE = "rems-program.toml"

DischargeMode = Literal["fixed", "monitoring-frequency"]


class ConfigError(ConfigurationError, ValueError):
    """The program file is missing a value or holds a wrong one; the message names file and key."""


@dataclass(frozen=True)
class ProgramRules:
    source: str
    effective: date
    time_zone: ZoneInfo
    accept_as_of: bool
    validate_npi_check_digit: bool
    baseline_window_days: int
    psf_window_days: int
    rationale_anc_below_general: float
    rationale_anc_below_ben: float
    override_limit: int
    override_window_days: int
    override_limit_applies_to: frozenset[str]
    override_anc_grace_days: int
    override_requires_anc_at_or_above_threshold: bool
    monitoring_interval_days: Mapping[str, int]
    discharge_mode: DischargeMode
    discharge_limit_days: int
    discharge_limit_by_frequency_days: Mapping[str, int]


def load_rules(path: str | Path | None = None) -> ProgramRules:
    """Read the program file; None means the packaged mappings/rems-program.toml."""
    if path is None:
        resource = resources.files("adapter.mappings").joinpath(DEFAULT_RULES_RESOURCE)
        where, text = DEFAULT_RULES_RESOURCE, resource.read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{where}: cannot read the rules file: {reason}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    return _rules_from(where, data)


NonEmpty = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]
Days = Annotated[StrictInt, Field(ge=0)]
Number = Annotated[float, Field(ge=0, strict=True)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _PerFrequency(_Table):
    three_times_weekly: Days = Field(alias="three-times-weekly")
    weekly: Days
    every_2_weeks: Days = Field(alias="every-2-weeks")
    monthly: Days

    def as_mapping(self) -> Mapping[str, int]:
        return MappingProxyType(
            {name: getattr(self, name.replace("-", "_")) for name in FREQUENCIES}
        )


class _Meta(_Table):
    source: NonEmpty
    effective: date


class _Clock(_Table):
    time_zone: NonEmpty


class _Api(_Table):
    accept_as_of: StrictBool


class _Certification(_Table):
    validate_npi_check_digit: StrictBool


class _Enrollment(_Table):
    baseline_window_days: Days


class _Psf(_Table):
    psf_window_days: Days
    rationale_anc_below_general: Number
    rationale_anc_below_ben: Number


class _Override(_Table):
    override_limit: Days
    override_window_days: Days
    limit_applies_to: list[Literal["inpatient", "outpatient"]]
    anc_grace_days: Days
    require_anc_at_or_above_rationale_threshold: StrictBool


class _Discharge(_Table):
    mode: DischargeMode
    discharge_limit_days: Days
    limit_by_frequency_days: _PerFrequency


class _Program(_Table):
    """The file's layout (mappings/rems-program.toml); unknown tables and keys are errors."""

    meta: _Meta
    clock: _Clock
    api: _Api
    certification: _Certification
    enrollment: _Enrollment
    psf: _Psf
    override: _Override
    monitoring_interval_days: _PerFrequency
    discharge: _Discharge


_EXPECTED = {
    "int": "a whole number of days >= 0",
    "float": "a number >= 0",
    "bool": "true or false",
    "str": "a non-empty string",
    "date": "a YYYY-MM-DD date",
    "literal": "one of",
}


_NUMBERS = frozenset({"rationale_anc_below_general", "rationale_anc_below_ben"})


def _expected(kind: str, ctx: Mapping[str, Any], given: object = None, field: str = "") -> str:
    if kind.startswith("int"):
        return _EXPECTED["int"]
    if kind.startswith("greater_than"):
        return (
            _EXPECTED["float"]
            if isinstance(given, float) or field in _NUMBERS
            else _EXPECTED["int"]
        )
    for prefix in ("float", "bool", "string", "date"):
        if kind.startswith(prefix):
            return _EXPECTED["str" if prefix == "string" else prefix]
    if kind == "literal_error":
        return f"one of {ctx.get('expected', '')}"
    if kind == "extra_forbidden":
        return "a known key (this one is not)"
    if kind in ("model_type", "dict_type"):
        return "a table"
    if kind == "list_type":
        return "a list"
    return "valid"


def _rules_from(where: str, data: dict[str, Any]) -> ProgramRules:
    try:
        program = _Program.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        dotted = ".".join(str(part) for part in first["loc"])
        kind = first["type"]
        if kind == "missing":
            raise ConfigError(f"{where}: missing [{dotted}]") from None
        if first["loc"][:2] == ("override", "limit_applies_to"):
            dotted = "override.limit_applies_to"
            what = 'a list of "inpatient" / "outpatient"'
        elif first["loc"][:1] == ("monitoring_interval_days",) or first["loc"][:2] == (
            "discharge",
            "limit_by_frequency_days",
        ):
            what = f"a table with exactly {', '.join(FREQUENCIES)}"
            if kind not in ("extra_forbidden", "model_type", "dict_type"):
                what = _expected(
                    kind, first.get("ctx") or {}, first.get("input"), str(first["loc"][-1])
                )
        else:
            what = _expected(
                kind, first.get("ctx") or {}, first.get("input"), str(first["loc"][-1])
            )
        raise ConfigError(f"{where}: [{dotted}] must be {what}") from None
    try:
        zone = ZoneInfo(program.clock.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: [clock.time_zone] must be an IANA time zone name") from exc
    override = program.override
    return ProgramRules(
        source=program.meta.source,
        effective=program.meta.effective,
        time_zone=zone,
        accept_as_of=program.api.accept_as_of,
        validate_npi_check_digit=program.certification.validate_npi_check_digit,
        baseline_window_days=program.enrollment.baseline_window_days,
        psf_window_days=program.psf.psf_window_days,
        rationale_anc_below_general=float(program.psf.rationale_anc_below_general),
        rationale_anc_below_ben=float(program.psf.rationale_anc_below_ben),
        override_limit=override.override_limit,
        override_window_days=override.override_window_days,
        override_limit_applies_to=frozenset(override.limit_applies_to),
        override_anc_grace_days=override.anc_grace_days,
        override_requires_anc_at_or_above_threshold=(
            override.require_anc_at_or_above_rationale_threshold
        ),
        monitoring_interval_days=program.monitoring_interval_days.as_mapping(),
        discharge_mode=program.discharge.mode,
        discharge_limit_days=program.discharge.discharge_limit_days,
        discharge_limit_by_frequency_days=program.discharge.limit_by_frequency_days.as_mapping(),
    )
