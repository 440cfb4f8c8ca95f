"""The HL7 v2 mapping tables (``mappings/hl7v2.toml``) as plain frozen values.

``adapter.mappings_loader.load_hl7v2_tables`` reads and validates the file; this module only
holds the shape, so the translators stay pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class LocalCode:
    """A local OBX-3 code that means a LOINC code (``[[local_code]]``)."""

    code: str
    loinc: str
    system: str | None = None  # coding-system name as sent (CWE-3/6); None: any
    sender: str | None = None  # MSH-4.1; None: any sender


@dataclass(frozen=True)
class Hl7v2Tables:
    message_types: frozenset[str]  # "ORU^R01"
    versions: frozenset[str]
    charsets: tuple[tuple[str, str], ...]  # (MSH-18, codec), the first is the default
    status: tuple[tuple[str, str], ...]  # OBX-11 -> Observation.status
    numeric: frozenset[str]
    structured_numeric: frozenset[str]
    comparators: frozenset[str]
    coding_systems: tuple[tuple[str, str], ...]  # CWE-3 name -> URI
    local_codes: tuple[LocalCode, ...] = ()

    @cached_property
    def _status(self) -> dict[str, str]:
        return dict(self.status)

    @cached_property
    def _systems(self) -> dict[str, str]:
        # coding system names (HL7 table 0396) are matched whatever their case: feeds send `ln`
        return {name.upper(): uri for name, uri in self.coding_systems}

    @cached_property
    def _charsets(self) -> dict[str, str]:
        return dict(self.charsets)

    @cached_property
    def _local(self) -> frozenset[str]:
        return frozenset(row.code for row in self.local_codes)

    def status_of(self, code: str) -> str | None:
        return self._status.get(code)

    def system_uri(self, name: str) -> str | None:
        return self._systems.get(name.strip().upper())

    def codec(self, charset: str) -> str | None:
        return self._charsets.get(charset.strip().upper() if charset else "")

    def local_loinc(self, code: str, system: str, sender: str) -> str | None:
        if code not in self._local:
            return None
        for row in self.local_codes:
            if row.code == code and row.system in (None, system) and row.sender in (None, sender):
                return row.loinc
        return None
