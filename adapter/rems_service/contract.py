"""The REMS contract: JSON Schemas in profiles/rems/, validated in both directions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .clock import is_date, is_instant

# Files refer to each other by relative name; this base only gives them a common root.
SCHEMA_BASE_URI = "https://rems-adapter.github.io/schemas/rems/"
SCHEMA_PACKAGE = "adapter.profiles"
SCHEMA_FOLDER = "rems"

PRESCRIBER_CERTIFICATION = "prescriber-certification.schema.json"
DESIGNEE_ENROLLMENT = "designee-enrollment.schema.json"
PHARMACY_ENROLLMENT = "pharmacy-enrollment.schema.json"
CERTIFICATION_RESPONSE = "certification-response.schema.json"
PATIENT_ENROLLMENT = "patient-enrollment.schema.json"
PATIENT_ENROLLMENT_RESPONSE = "patient-enrollment-response.schema.json"
PATIENT_STATUS = "patient-status.schema.json"
PSF_SUBMISSION = "psf-submission.schema.json"
PSF_ACCEPTANCE = "psf-acceptance.schema.json"
DISPENSE_AUTHORIZATION_REQUEST = "dispense-authorization-request.schema.json"
DISPENSE_AUTHORIZATION_RESPONSE = "dispense-authorization-response.schema.json"
OVERRIDE_REQUEST = "override-request.schema.json"
ERROR = "error.schema.json"
HEALTH = "health.schema.json"
SEED = "seed.schema.json"


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


class Contract:
    """Loads every schema of profiles/rems/ once; `problems` lists what is wrong, without values."""

    def __init__(self) -> None:
        folder = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FOLDER)
        documents: dict[str, Any] = {}
        for entry in folder.iterdir():
            if entry.name.endswith(".schema.json"):
                documents[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
        registry: Registry[Any] = Registry().with_resources(
            (SCHEMA_BASE_URI + name, Resource.from_contents(doc, default_specification=DRAFT202012))
            for name, doc in documents.items()
        )
        checker = _format_checker()
        self._validators = {
            name: Draft202012Validator(
                {"$ref": SCHEMA_BASE_URI + name}, registry=registry, format_checker=checker
            )
            for name in documents
        }
        self.documents: Mapping[str, Any] = documents

    def problems(self, schema: str, instance: Any) -> list[str]:
        """Where and how `instance` breaks `schema`, e.g. "$.patient.birthDate: format".

        Messages name the location and the failed keyword only: instance values may be PHI.
        """
        validator = self._validators[schema]
        found = []
        for error in validator.iter_errors(instance):
            if error.validator in _KEY_NAMING_KEYWORDS:
                # These messages quote property names (schema vocabulary), never values.
                found.append(f"{error.json_path}: {error.message}")
            else:
                found.append(f"{error.json_path}: fails '{error.validator}'")
        return sorted(set(found))
