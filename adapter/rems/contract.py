"""The REMS contract as the client sees it: the JSON Schemas of profiles/rems/.

The reference service validates with the same files; the client checks what it sends (before
sending) and what it receives (before trusting it). Problems name schema paths and keywords only:
the instances carry patient identity.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# The files refer to each other by relative name; this base only gives them a common root.
_BASE_URI = "https://rems-adapter.github.io/schemas/rems/"
_PACKAGE = "adapter.profiles"
_FOLDER = "rems"

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


class RemsSchemas:
    """Every schema of profiles/rems/, loaded once (instantiate at start-up, not at import)."""

    def __init__(self) -> None:
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
        # The date-time and date patterns in common.schema.json do the format checking, so no
        # optional format-checker dependency decides whether an instant is checked.
        self._validators = {
            name: Draft202012Validator({"$ref": _BASE_URI + name}, registry=registry)
            for name in documents
        }

    def problems(self, schema: str, instance: Any) -> list[str]:
        """Where and how `instance` breaks `schema`, e.g. "$.patient.birthDate: fails 'pattern'"."""
        found = {
            f"{error.json_path}: fails '{error.validator}'"
            for error in self._validators[schema].iter_errors(instance)
        }
        return sorted(found)
