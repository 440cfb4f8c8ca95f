"""Loads and validates ``mappings/`` (the clinical data) and the finding CodeSystem URL.

Every problem is reported as a :class:`MappingError` naming the file and the entry, so a site that
edits a threshold learns exactly what is wrong before anything is decided with it.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, cast

from adapter.core.protocol import (
    CATEGORIES,
    FREQUENCIES,
    SETTINGS,
    Band,
    Category,
    Frequency,
    Interval,
    LabCodes,
    OverridePolicy,
    PopulationRules,
    Protocol,
    Sanity,
    ScheduleStep,
    Setting,
    Timing,
    UnitTable,
    fold_unit,
)
from adapter.core.reference import (
    DesignationCodes,
    DispenseCodes,
    MedicationCodes,
    ReferenceData,
)
from adapter.errors import ConfigurationError
from adapter.hl7v2.tables import Hl7v2Tables, LocalCode

FINDING_CODESYSTEM_FILE = "CodeSystem-finding.json"


class MappingError(ConfigurationError, ValueError):
    """A mappings file is missing, unreadable or inconsistent."""

    def __init__(self, file: str, entry: str, message: str) -> None:
        super().__init__(message, where=f"{file}: {entry}")
        self.file = file
        self.entry = entry


class _File:
    """One TOML file with helpers that name the entry in every error."""

    def __init__(self, name: str, data: dict[str, Any], label: str | None = None) -> None:
        self.name = name
        self.label = label or f"mappings/{name}"  # the user's own file when it overlays ours
        self.data = data
        meta = data.get("meta")
        if not isinstance(meta, dict) or not meta.get("source") or not meta.get("effective"):
            self.fail(
                "meta", "needs 'source' and 'effective' (where the data comes from, and when)"
            )

    def fail(self, entry: str, message: str) -> NoReturn:
        raise MappingError(self.label, entry, message)

    def table(self, *path: str) -> dict[str, Any]:
        node: Any = self.data
        for depth, key in enumerate(path):
            if not isinstance(node, dict) or key not in node:
                self.fail(".".join(path[: depth + 1]), "missing")
            node = node[key]
        if not isinstance(node, dict):
            self.fail(".".join(path), "must be a table")
        return cast(dict[str, Any], node)

    def integer(self, table: dict[str, Any], key: str, entry: str, minimum: int = 0) -> int:
        value = table.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(f"{entry}.{key}", f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def text(self, table: dict[str, Any], key: str, entry: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value:
            self.fail(f"{entry}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, table: dict[str, Any], key: str, entry: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            self.fail(f"{entry}.{key}", f"must be true or false, got {value!r}")
        return value

    def frequency(self, value: object, entry: str) -> Frequency:
        if value not in FREQUENCIES:
            self.fail(entry, f"unknown frequency {value!r}; known: {', '.join(FREQUENCIES)}")
        return value

    def settings(self, value: object, entry: str) -> frozenset[Setting]:
        if not isinstance(value, list) or any(item not in SETTINGS for item in value):
            self.fail(entry, f"must list settings among {', '.join(SETTINGS)}, got {value!r}")
        return frozenset(cast(list[Setting], value))

    def strings(self, value: object, entry: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(entry, f"must be a list of non-empty strings, got {value!r}")
        return cast(list[str], value)


#: The files a site's --mappings folder may hold; each one present replaces the bundled file of
#: the same name (a partial folder overlays the bundled one), anything else there is an error.
MAPPING_FILES = (
    "protocol.toml",
    "units.toml",
    "lab-codes.toml",
    "clozapine.toml",
    "designations.toml",
    "dispense.toml",
    "hl7v2.toml",
)


def _check_overlay(directory: Path) -> None:
    if not directory.is_dir():
        raise MappingError(str(directory), "folder", "not a folder (--mappings)")
    entries = sorted(directory.iterdir())
    if not any(entry.name in MAPPING_FILES for entry in entries):
        # a folder that overrides nothing is almost surely the wrong folder
        raise MappingError(
            str(directory),
            "folder",
            f"holds none of the mappings files ({', '.join(MAPPING_FILES)})",
        )
    for entry in entries:
        if entry.suffix == ".toml" and entry.name not in (*MAPPING_FILES, "rems-program.toml"):
            raise MappingError(
                str(entry),
                "file",
                f"not a mappings file (expected one of {', '.join(MAPPING_FILES)})",
            )


def _read(directory: Path | None, name: str) -> _File:
    own = directory / name if directory is not None else None
    label = str(own) if own is not None and own.is_file() else f"mappings/{name}"
    try:
        if own is not None and own.is_file():
            raw = own.read_text(encoding="utf-8")
        else:
            raw = resources.files("adapter.mappings").joinpath(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise MappingError(label, "file", f"cannot be read: {reason}") from error
    try:
        return _File(name, tomllib.loads(raw), label)
    except tomllib.TOMLDecodeError as error:
        raise MappingError(label, "syntax", str(error)) from error


# ------------------------------------------------------------------ protocol.toml


def _bands(f: _File, population: str) -> tuple[Band, ...]:
    rows = f.table("population", population).get("band")
    entry = f"population.{population}.band"
    if not isinstance(rows, list) or not rows:
        f.fail(entry, "needs at least one band")
    bands: list[Band] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        where = f"{entry}[{index}]"
        if not isinstance(row, dict):
            f.fail(where, "must be a table")
        category = row.get("category")
        if category not in CATEGORIES:
            f.fail(f"{where}.category", f"unknown category {category!r}")
        if category in seen:
            f.fail(f"{where}.category", f"{category} appears twice")
        seen.add(cast(str, category))
        treatment = row.get("treatment")
        if treatment not in ("continue", "interrupt"):
            f.fail(f"{where}.treatment", f"must be continue or interrupt, got {treatment!r}")
        frequency = row.get("frequency")
        freq = (
            None if frequency == "normal-schedule" else f.frequency(frequency, f"{where}.frequency")
        )
        bands.append(
            Band(
                category=cast(Category, category),
                min=f.integer(row, "min", where),
                interrupts=treatment == "interrupt",
                hematology_consult=bool(row.get("hematology_consult", False)),
                ends_in_rechallenge=bool(row.get("ends_in_rechallenge", False)),
                frequency=freq,
            )
        )
    for index in range(1, len(bands)):
        if bands[index].min >= bands[index - 1].min:
            f.fail(
                f"{entry}[{index}]",
                f"bands must be sorted by min, highest first (no overlap): {bands[index].min} "
                f"follows {bands[index - 1].min}",
            )
    if bands[-1].min != 0:
        f.fail(f"{entry}[{len(bands) - 1}].min", "the lowest band must start at 0 (no gap)")
    if bands[0].category != "normal" or bands[0].frequency is not None:
        f.fail(f"{entry}[0]", "the highest band must be 'normal' on the normal-range schedule")
    return tuple(bands)


def _population(f: _File, name: str) -> PopulationRules:
    table = f.table("population", name)
    entry = f"population.{name}"
    bands = _bands(f, name)
    default = table.get("baseline_default")
    if default is not None and (not isinstance(default, int) or default < 0):
        f.fail(f"{entry}.baseline_default", f"must be a whole number, got {default!r}")
    rules = PopulationRules(
        bands=bands,
        initiation_min=f.integer(table, "initiation_min", entry),
        initiation_baselines=f.integer(table, "initiation_baselines", entry, minimum=1),
        confirm_below=f.integer(table, "confirm_below", entry),
        rechallenge_min=f.integer(table, "rechallenge_min", entry),
        resume_min=f.integer(table, "resume_min", entry),
        psf_rationale_below=f.integer(table, "psf_rationale_below", entry),
        weekly_after_recovery_weeks=f.integer(table, "weekly_after_recovery_weeks", entry),
        baseline_default=default,
    )
    if len(bands) < 2 or bands[1].frequency is None:
        f.fail(f"{entry}.band[1]", "the first band below normal needs an excursion frequency")
    return rules


def _protocol(f: _File) -> Protocol:
    intervals: dict[Frequency, Interval] = {}
    table = f.table("interval")
    for name in FREQUENCIES:
        row = table.get(name)
        if not isinstance(row, dict):
            f.fail(f"interval.{name}", "missing")
        days = f.integer(row, "days", f"interval.{name}") if "days" in row else 0
        months = f.integer(row, "months", f"interval.{name}") if "months" in row else 0
        if days + months == 0:
            f.fail(f"interval.{name}", "needs days or months > 0")
        intervals[name] = Interval(days=days, months=months)
    for key in table:
        f.frequency(key, f"interval.{key}")

    steps_raw = f.data.get("normal_schedule")
    if not isinstance(steps_raw, list) or not steps_raw:
        f.fail("normal_schedule", "needs at least one step")
    steps = tuple(
        ScheduleStep(
            from_month=f.integer(row, "from_month", f"normal_schedule[{i}]"),
            frequency=f.frequency(row.get("frequency"), f"normal_schedule[{i}].frequency"),
            after=f.boolean(row, "after", f"normal_schedule[{i}]"),
        )
        for i, row in enumerate(cast(list[dict[str, Any]], steps_raw))
    )
    if steps[0].from_month != 0:
        f.fail("normal_schedule[0].from_month", "the schedule must start at month 0 (no gap)")
    for i in range(1, len(steps)):
        if steps[i].from_month <= steps[i - 1].from_month:
            f.fail(f"normal_schedule[{i}].from_month", "steps must be sorted, without repeats")

    timing_table = f.table("timing")
    comparator = timing_table.get("interruption_comparator")
    if comparator not in (">=", ">"):
        f.fail("timing.interruption_comparator", f"must be '>=' or '>', got {comparator!r}")
    timing = Timing(
        grace_days=f.integer(timing_table, "grace_days", "timing"),
        confirm_within_hours=f.integer(timing_table, "confirm_within_hours", "timing", 1),
        baseline_window_days=f.integer(timing_table, "baseline_window_days", "timing", 1),
        interruption_days=f.integer(timing_table, "interruption_days", "timing", 1),
        interruption_inclusive=comparator == ">=",
    )

    limits_table = f.table("supply_limit")
    limits = {
        name: f.integer(limits_table, name, "supply_limit", minimum=1) for name in FREQUENCIES
    }
    override_table = f.table("override")
    psf_table = f.table("psf", "frequency")
    psf = {name: f.frequency(psf_table.get(name), f"psf.frequency.{name}") for name in FREQUENCIES}
    sanity_table = f.table("sanity")
    sanity = Sanity(
        min_per_ul=f.integer(sanity_table, "min_per_ul", "sanity"),
        max_per_ul=f.integer(sanity_table, "max_per_ul", "sanity", minimum=1),
        fraction_implies_thousands_below=f.integer(
            sanity_table, "fraction_implies_thousands_below", "sanity"
        ),
    )
    if sanity.max_per_ul <= sanity.min_per_ul:
        f.fail("sanity.max_per_ul", "must be above min_per_ul")
    return Protocol(
        general=_population(f, "general"),
        ben=_population(f, "ben"),
        intervals=intervals,
        normal_schedule=steps,
        hospice_frequency=f.frequency(f.table("hospice").get("frequency"), "hospice.frequency"),
        timing=timing,
        supply_limit_settings=f.settings(limits_table.get("settings"), "supply_limit.settings"),
        supply_limit_days=limits,
        override=OverridePolicy(
            limit=f.integer(override_table, "limit", "override"),
            window_days=f.integer(override_table, "window_days", "override", 1),
            limited_settings=f.settings(
                override_table.get("limited_settings"), "override.limited_settings"
            ),
        ),
        psf_frequency=psf,
        sanity=sanity,
    )


# ------------------------------------------------------------------ other files


def _units(f: _File) -> UnitTable:
    def factors(section: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, value in f.table(section).items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                f.fail(f"{section}.{key}", f"factor must be a positive whole number, got {value!r}")
            out[key] = value
        return out

    alias: dict[str, int] = {}
    for key, value in factors("alias").items():
        folded = fold_unit(key)
        if folded in alias and alias[folded] != value:
            f.fail(f"alias.{key}", "conflicts with another alias that differs only in case/space")
        alias[folded] = value
    percent = f.table("percent")
    return UnitTable(
        ucum_system=f.text(f.table("meta"), "ucum_system", "meta"),
        ucum=factors("ucum"),
        alias=alias,
        percent_ucum=frozenset(f.strings(percent.get("ucum"), "percent.ucum")),
        percent_alias=frozenset(
            fold_unit(v) for v in f.strings(percent.get("alias"), "percent.alias")
        ),
    )


def _lab_codes(f: _File) -> LabCodes:
    sets: dict[str, frozenset[str]] = {}
    owner: dict[str, str] = {}
    for section in ("anc", "not_anc", "wbc", "neutrophil_pct", "segs_pct", "band_pct"):
        codes = frozenset(f.table(section))
        for code in codes:
            if code in owner:
                f.fail(f"{section}.{code}", f"also listed under {owner[code]}")
            owner[code] = section
        sets[section] = codes
    if not sets["anc"]:
        f.fail("anc", "needs at least one code")
    return LabCodes(system=f.text(f.table("meta"), "system", "meta"), **sets)


def _clozapine(f: _File) -> MedicationCodes:
    codes: set[tuple[str, str]] = set()
    for section in ("rxnorm", "ndc"):
        table = f.table(section)
        system = f.text(table, "system", section)
        codes.update((system, code) for code in f.table(section, "codes"))
    words = tuple(w.lower() for w in f.strings(f.table("names").get("words"), "names.words"))
    if not codes:
        f.fail("rxnorm.codes", "needs at least one code")
    return MedicationCodes(frozenset(codes), words)


def _designations(f: _File, finding_system: str) -> DesignationCodes:
    def codes(section: str) -> frozenset[tuple[str | None, str]]:
        table = f.table(section)
        project = f.text(table, "project_code", section)
        out: set[tuple[str | None, str]] = {(None, project), (finding_system, project)}
        for index, row in enumerate(table.get("coding", [])):
            where = f"{section}.coding[{index}]"
            out.add((f.text(row, "system", where), f.text(row, "code", where)))
        return frozenset(out)

    return DesignationCodes(ben=codes("ben"), hospice=codes("hospice"))


def _dispense(f: _File) -> DispenseCodes:
    meta = f.table("meta")
    default = meta.get("default_setting")
    if default not in SETTINGS:
        f.fail("meta.default_setting", f"must be one of {', '.join(SETTINGS)}")
    category = f.table("category")
    codes = f.strings(category.get("codes"), "category.codes")
    for code in codes:
        if code not in SETTINGS:
            f.fail(f"category.codes.{code}", f"must be one of {', '.join(SETTINGS)}")
    status = f.table("status")
    limits = f.table("limits")
    return DispenseCodes(
        default_setting=cast(Setting, default),
        category_systems=frozenset(f.strings(category.get("systems"), "category.systems")),
        category_codes=frozenset(codes),
        completed=frozenset(f.strings(status.get("completed"), "status.completed")),
        awaiting_decision=frozenset(
            f.strings(status.get("awaiting_decision"), "status.awaiting_decision")
        ),
        entered_in_error=frozenset(
            f.strings(status.get("entered_in_error"), "status.entered_in_error")
        ),
        withdrawn=frozenset(f.strings(status.get("withdrawn"), "status.withdrawn")),
        max_days_supply=f.integer(limits, "max_days_supply", "limits", minimum=1),
    )


def _hl7v2(f: _File) -> Hl7v2Tables:
    message = f.table("message")
    types = f.strings(message.get("types"), "message.types")
    for index, name in enumerate(types):
        parts = name.split("^")
        if len(parts) != 2 or not all(part.isalnum() and part.isupper() for part in parts):
            f.fail(f"message.types[{index}]", f"must be CODE^EVENT (e.g. ORU^R01), got {name!r}")
    charsets: list[tuple[str, str]] = []
    for key, codec in f.table("message", "charsets").items():
        if not isinstance(codec, str):
            f.fail(f"message.charsets.{key}", "must name a codec")
        try:
            "".encode(codec)
        except LookupError:
            f.fail(f"message.charsets.{key}", f"unknown codec {codec!r}")
        charsets.append((key.upper(), codec))
    if not any(key == "" for key, _ in charsets):
        f.fail("message.charsets", 'needs "" (the codec of a message without MSH-18)')
    known_status = {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
    status: list[tuple[str, str]] = []
    for key, value in f.table("status").items():
        if len(key) != 1 or not key.isupper():
            f.fail(f"status.{key}", "an OBX-11 code is one upper-case letter (table 0085)")
        if value not in known_status:
            f.fail(f"status.{key}", f"not an Observation.status: {value!r}")
        status.append((key, value))
    types_table = f.table("value_types")
    comparators = f.strings(types_table.get("comparators"), "value_types.comparators")
    for item in comparators:
        if item not in ("<", "<=", ">=", ">"):
            f.fail("value_types.comparators", f"{item!r} is not a FHIR Quantity.comparator")
    systems: list[tuple[str, str]] = []
    for key, uri in f.table("coding_systems").items():
        if not isinstance(uri, str) or ":" not in uri:
            f.fail(f"coding_systems.{key}", f"must be a URI, got {uri!r}")
        systems.append((key, uri))
    if not any(uri == "http://loinc.org" for _, uri in systems):
        f.fail("coding_systems", "needs the LOINC system name (LN)")
    rows = f.data.get("local_code", [])
    if not isinstance(rows, list):
        f.fail("local_code", "must be a list of tables ([[local_code]])")
    local: list[LocalCode] = []
    for index, row in enumerate(rows):
        where = f"local_code[{index}]"
        if not isinstance(row, dict):
            f.fail(where, "must be a table")
        unknown = set(row) - {"code", "loinc", "system", "sender"}
        if unknown:
            f.fail(f"{where}.{sorted(unknown)[0]}", "unknown key (code, loinc, system, sender)")
        for optional in ("system", "sender"):
            if optional in row:
                f.text(row, optional, where)
        local.append(
            LocalCode(
                code=f.text(row, "code", where),
                loinc=f.text(row, "loinc", where),
                system=row.get("system"),
                sender=row.get("sender"),
            )
        )
    return Hl7v2Tables(
        message_types=frozenset(types),
        versions=frozenset(f.strings(message.get("versions"), "message.versions")),
        charsets=tuple(charsets),
        status=tuple(status),
        numeric=frozenset(f.strings(types_table.get("numeric"), "value_types.numeric")),
        structured_numeric=frozenset(
            f.strings(types_table.get("structured_numeric"), "value_types.structured_numeric")
        ),
        comparators=frozenset(comparators),
        coding_systems=tuple(systems),
        local_codes=tuple(local),
    )


def load_hl7v2_tables(mappings_dir: Path | None = None) -> Hl7v2Tables:
    """``mappings/hl7v2.toml`` (or the site's copy in `mappings_dir`), validated."""
    return _hl7v2(_read(mappings_dir, "hl7v2.toml"))


def finding_system_url(profiles_dir: Path | None = None) -> str:
    """The finding CodeSystem's canonical URL, defined once: in the CodeSystem resource."""
    name = FINDING_CODESYSTEM_FILE
    try:
        if profiles_dir is not None:
            raw = (profiles_dir / name).read_text(encoding="utf-8")
        else:
            raw = resources.files("adapter.profiles").joinpath(name).read_text(encoding="utf-8")
        url = json.loads(raw)["url"]
    except (OSError, ValueError, KeyError) as error:
        raise MappingError(f"profiles/{name}", "url", f"cannot be read: {error}") from error
    if not isinstance(url, str) or not url:
        raise MappingError(f"profiles/{name}", "url", "must be a non-empty string")
    return url


def load_reference_data(
    mappings_dir: Path | None = None, profiles_dir: Path | None = None
) -> ReferenceData:
    """Load and validate everything; ``None`` means the copies installed with the package.
    A `mappings_dir` may hold only some of the files: the others are the bundled ones, and an
    error names the site's own file."""
    if mappings_dir is not None:
        _check_overlay(mappings_dir)
    finding_system = finding_system_url(profiles_dir)
    return ReferenceData(
        protocol=_protocol(_read(mappings_dir, "protocol.toml")),
        units=_units(_read(mappings_dir, "units.toml")),
        lab_codes=_lab_codes(_read(mappings_dir, "lab-codes.toml")),
        clozapine=_clozapine(_read(mappings_dir, "clozapine.toml")),
        designations=_designations(_read(mappings_dir, "designations.toml"), finding_system),
        dispense=_dispense(_read(mappings_dir, "dispense.toml")),
        finding_system=finding_system,
    )
