"""The REMS contract as the service sees it: the loader of `adapter.rems.contract` (the same
JSON Schemas of profiles/rems/, validated in both directions) with the service's own format
checks and messages."""

from __future__ import annotations

from jsonschema import FormatChecker, ValidationError

from adapter.rems.contract import RemsSchemas

from .clock import is_date, is_instant

_KEY_NAMING_KEYWORDS = frozenset({"required", "additionalProperties"})


def _format_checker() -> FormatChecker:
    # Our own checks: jsonschema's date-time check silently passes unless an optional extra is
    # installed, and a wrongly dated ANC must never slip through.
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_instant_format)
    checker.checks("date")(_date_format)
    return checker


# A format applies to strings only; other types are the `type` keyword's business.
def _instant_format(value: object) -> bool:
    return not isinstance(value, str) or is_instant(value)


def _date_format(value: object) -> bool:
    return not isinstance(value, str) or is_date(value)


class Contract(RemsSchemas):
    """Loads every schema of profiles/rems/ once; `problems` lists what is wrong, without values."""

    def __init__(self) -> None:
        super().__init__(format_checker=_format_checker())

    def describe(self, error: ValidationError) -> str:
        """Location and failed keyword, e.g. "$.patient.birthDate: fails 'format'"; for missing or
        unexpected keys the message, which quotes property names (schema vocabulary), never
        values: instance values may be PHI."""
        if error.validator in _KEY_NAMING_KEYWORDS:
            return f"{error.json_path}: {error.message}"
        return super().describe(error)
