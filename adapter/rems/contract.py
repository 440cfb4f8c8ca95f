"""The REMS contract as the client sees it: the JSON Schemas of profiles/rems/.

The reference service validates with the same files and this same loader (adding its own format
checks); the client checks what it sends (before sending) and what it receives (before trusting
it). Problems name schema paths and keywords only:
the instances carry patient identity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# The files refer to each other by relative name; this base only gives them a common root.
_BASE_URI = "https://rems-adapter.github.io/schemas/rems/"
_PACKAGE = "adapter.profiles"
_FOLDER = "rems"

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


class RemsSchemas:
    """Every schema of profiles/rems/, loaded once (instantiate at start-up, not at import).

    `format_checker` None leaves formats to the date-time and date patterns of common.schema.json,
    so no optional format-checker dependency decides whether an instant is checked.
    """

    def __init__(self, *, format_checker: FormatChecker | None = None) -> None:
        folder = resources.files(_PACKAGE).joinpath(_FOLDER)
        documents: dict[str, Any] = {
            entry.name: json.loads(entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir()
            if entry.name.endswith(".schema.json")
        }
        registry: Registry[Any] = Registry().with_resources(
            (_BASE_URI + name, Resource.from_contents(doc, default_specification=DRAFT202012))
            for name, doc in documents.items()
        )
        self._validators = {
            name: Draft202012Validator(
                {"$ref": _BASE_URI + name}, registry=registry, format_checker=format_checker
            )
            for name in documents
        }
        self.documents: Mapping[str, Any] = documents

    def problems(self, schema: str, instance: Any) -> list[str]:
        """Where and how `instance` breaks `schema`, e.g. "$.patient.birthDate: fails 'pattern'"."""
        found = {self.describe(error) for error in self._validators[schema].iter_errors(instance)}
        return sorted(found)

    def describe(self, error: ValidationError) -> str:
        """One problem: its location and the failed keyword, never the instance's values."""
        return f"{error.json_path}: fails '{error.validator}'"
