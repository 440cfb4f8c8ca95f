"""The program's windows and limits, from mappings/rems-program.toml (never literals in code)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    return _rules_from(_Reader(where, data))


class _Reader:
    def __init__(self, where: str, data: dict[str, Any]) -> None:
        self._where = where
        self._data = data

    def get(self, dotted: str) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{self._where}: missing [{dotted}]")
            node = node[part]
        return node

    def fail(self, dotted: str, expected: str) -> ConfigError:
        return ConfigError(f"{self._where}: [{dotted}] must be {expected}")

    def days(self, dotted: str) -> int:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(dotted, "a whole number of days >= 0")
        return value

    def number(self, dotted: str) -> float:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(dotted, "a number >= 0")
        return float(value)

    def flag(self, dotted: str) -> bool:
        value = self.get(dotted)
        if not isinstance(value, bool):
            raise self.fail(dotted, "true or false")
        return value

    def text(self, dotted: str) -> str:
        value = self.get(dotted)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(dotted, "a non-empty string")
        return value

    def per_frequency(self, dotted: str) -> Mapping[str, int]:
        table = self.get(dotted)
        if not isinstance(table, dict) or set(table) != set(FREQUENCIES):
            raise self.fail(dotted, f"a table with exactly {', '.join(FREQUENCIES)}")
        return MappingProxyType({name: self.days(f"{dotted}.{name}") for name in FREQUENCIES})


def _rules_from(read: _Reader) -> ProgramRules:
    try:
        effective = date.fromisoformat(read.text("meta.effective"))
    except ValueError as exc:
        raise read.fail("meta.effective", "a YYYY-MM-DD date") from exc
    try:
        zone = ZoneInfo(read.text("clock.time_zone"))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise read.fail("clock.time_zone", "an IANA time zone name") from exc
    applies_to = read.get("override.limit_applies_to")
    if not isinstance(applies_to, list) or not set(applies_to) <= {"inpatient", "outpatient"}:
        raise read.fail("override.limit_applies_to", 'a list of "inpatient" / "outpatient"')
    mode = read.text("discharge.mode")
    if mode not in ("fixed", "monitoring-frequency"):
        raise read.fail("discharge.mode", '"fixed" or "monitoring-frequency"')
    return ProgramRules(
        source=read.text("meta.source"),
        effective=effective,
        time_zone=zone,
        accept_as_of=read.flag("api.accept_as_of"),
        validate_npi_check_digit=read.flag("certification.validate_npi_check_digit"),
        baseline_window_days=read.days("enrollment.baseline_window_days"),
        psf_window_days=read.days("psf.psf_window_days"),
        rationale_anc_below_general=read.number("psf.rationale_anc_below_general"),
        rationale_anc_below_ben=read.number("psf.rationale_anc_below_ben"),
        override_limit=read.days("override.override_limit"),
        override_window_days=read.days("override.override_window_days"),
        override_limit_applies_to=frozenset(applies_to),
        override_anc_grace_days=read.days("override.anc_grace_days"),
        override_requires_anc_at_or_above_threshold=read.flag(
            "override.require_anc_at_or_above_rationale_threshold"
        ),
        monitoring_interval_days=read.per_frequency("monitoring_interval_days"),
        discharge_mode=cast(DischargeMode, mode),
        discharge_limit_days=read.days("discharge.discharge_limit_days"),
        discharge_limit_by_frequency_days=read.per_frequency("discharge.limit_by_frequency_days"),
    )
