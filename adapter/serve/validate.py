"""Edge validation of pushed resources with `fhir.resources.R4B` (interfaces.md s.1).

A problem is an `UnprocessableError` whose `expression` is the FHIR path at fault
(``Observation.valueQuantity.value``, ``Bundle.entry[2].resource.subject``). Messages name the
path and what is wrong, never the value (it may be a person's data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from adapter.errors import UnprocessableError
from adapter.pipeline.gather import subject_of
from adapter.pipeline.matching import identifier_key

#: What a lab may push, in a Bundle or (Observation) alone.
PUSHABLE = ("Observation", "Patient", "Specimen", "DiagnosticReport")


def _model(kind: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # imported when serve starts

    return get_fhir_model_class(kind)


def fhir_path(root: str, loc: Sequence[int | str]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "__root__":
            continue
        else:
            path += f".{part}"
    return path


_WHAT = {
    "missing": "is required",
    "extra_forbidden": "is not an element of this resource",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "bool_type": "must be true or false",
}


def validate_resource(
    resource: object, *, prefix: str = "", allowed: Sequence[str] = PUSHABLE
) -> dict[str, Any]:
    """The resource, checked; raises UnprocessableError naming the first FHIR path at fault.
    `prefix` is where the resource sits (``Bundle.entry[2].resource``)."""
    at = prefix or "resource"
    if not isinstance(resource, dict):
        raise UnprocessableError(f"{at}: must be a JSON object", expression=[prefix or "Resource"])
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or kind not in allowed:
        raise UnprocessableError(
            f"{at}.resourceType: must be one of {', '.join(allowed)}",
            expression=[f"{prefix}.resourceType" if prefix else "Resource.resourceType"],
        )
    root = prefix or kind
    try:
        _model(kind).model_validate(resource)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        path = fhir_path(root, first["loc"])
        what = _WHAT.get(first["type"], "is not valid FHIR R4")
        problems = len(error.errors())
        more = f" ({problems - 1} more problems)" if problems > 1 else ""
        raise UnprocessableError(f"{path} {what}{more}", expression=[path]) from None
    except (ValueError, TypeError, RecursionError):
        raise UnprocessableError(f"{root} is not valid FHIR R4", expression=[root]) from None
    if kind == "Observation":
        _observation(resource, root)
    return resource


#: FHIR R4 ObservationStatus (a required binding: R4B's model takes any string, and what is
#: pushed is forwarded to the EHR, so a code outside it is refused here, by its path).
OBSERVATION_STATUSES = frozenset(
    {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)


def _observation(resource: dict[str, Any], root: str) -> None:
    for element in ("status", "code"):
        if element not in resource:
            path = f"{root}.{element}"
            raise UnprocessableError(f"{path} is required", expression=[path])
    if resource["status"] not in OBSERVATION_STATUSES:
        path = f"{root}.status"
        raise UnprocessableError(
            f"{path} must be an ObservationStatus code ({', '.join(sorted(OBSERVATION_STATUSES))})",
            expression=[path],
        )
    subject = resource.get("subject")
    if not isinstance(subject, dict) or not (
        isinstance(subject.get("reference"), str) or identifier_key(resource) is not None
    ):
        path = f"{root}.subject"
        raise UnprocessableError(
            f"{path} must reference the Patient the result is about (a reference, or an "
            "identifier with system and value)",
            expression=[path],
        )


def check_subject(resource: dict[str, Any], root: str) -> None:
    """An Observation (references resolved) must name a Patient: ``Patient/id`` (relative or
    absolute), or an identifier the EHR's Patient carries (matched later, never guessed).
    Anything else (a Group, a Device, an unresolved ``urn:``) would wait for ever."""
    if resource.get("resourceType") != "Observation":
        return
    subject = resource.get("subject")
    if isinstance(subject, dict) and "reference" not in subject and identifier_key(resource):
        return
    if subject_of(resource) is None:
        path = f"{root}.subject"
        raise UnprocessableError(
            f"{path} must name a Patient: Patient/id, a Patient entry of the Bundle, or an "
            "identifier (system and value)",
            expression=[path],
        )
