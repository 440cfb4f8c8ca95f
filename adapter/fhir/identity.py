"""Who is who for a REMS form: Patient identity, prescriber NPI, pharmacy id (FHIR R4 JSON).

Pure translators, like `read.py`. They return None for what is missing rather than raising, so the
REMS backend can say which element it lacked; messages never quote values (they are PHI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSON = Mapping[str, Any]
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
#: FHIR administrative gender -> the REMS `sex` values (the same four codes).
_SEX = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}


@dataclass(frozen=True)
class PatientIdentity:
    family: str | None
    given: str | None
    birth_date: str | None
    sex: str | None
    postal_code: str | None
    rems_id: str | None

    def missing(self) -> tuple[str, ...]:
        """FHIR paths of what a REMS form needs and the Patient lacks."""
        needed = {
            "Patient.name.family": self.family,
            "Patient.name.given": self.given,
            "Patient.birthDate": self.birth_date,
            "Patient.gender": self.sex,
            "Patient.address.postalCode": self.postal_code,
        }
        return tuple(path for path, value in needed.items() if not value)


def identifier_value(resource: JSON, system: str) -> str | None:
    """The value of the resource's first identifier in `system` (not an old one)."""
    for item in resource.get("identifier") or []:
        if not isinstance(item, Mapping) or item.get("system") != system:
            continue
        if item.get("use") == "old":
            continue
        value = item.get("value")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _official_name(resource: JSON) -> Mapping[str, Any] | None:
    """The official name, else the usual one, else any name still in use."""
    names = [n for n in resource.get("name") or [] if isinstance(n, Mapping)]
    current = [n for n in names if n.get("use") not in ("old", "maiden")]
    for use in ("official", "usual"):
        for name in current:
            if name.get("use") == use:
                return name
    return current[0] if current else None


def _home_postal_code(resource: JSON) -> str | None:
    addresses = [a for a in resource.get("address") or [] if isinstance(a, Mapping)]
    # Current home address first; any other current address with a postal code otherwise.
    ranked = sorted(addresses, key=lambda a: (a.get("use") != "home", a.get("use") == "old"))
    for address in ranked:
        if address.get("use") == "old":
            continue
        code = address.get("postalCode")
        if isinstance(code, str) and code.strip():
            return code.strip()
    return None


def patient_identity(resource: JSON, rems_id_system: str) -> PatientIdentity:
    name = _official_name(resource) or {}
    given = [g for g in name.get("given") or [] if isinstance(g, str) and g.strip()]
    family = name.get("family")
    gender = resource.get("gender")
    birth = resource.get("birthDate")
    return PatientIdentity(
        family=family.strip() if isinstance(family, str) and family.strip() else None,
        given=given[0].strip() if given else None,
        # The REMS needs a full date; a partial FHIR date (year or year-month) is not one.
        birth_date=birth if isinstance(birth, str) and len(birth) == 10 else None,
        sex=_SEX.get(gender) if isinstance(gender, str) else None,
        postal_code=_home_postal_code(resource),
        rems_id=identifier_value(resource, rems_id_system),
    )
