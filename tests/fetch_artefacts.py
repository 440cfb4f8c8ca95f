"""Fetch the official FHIR R4 artefacts into tests/.artefacts/ (run before pytest in CI).

    python tests/fetch_artefacts.py

Sources and licences: see r4_artefacts.py (Asymmetrik R4 JSON schema, MIT; HL7 R4 examples,
CC0-1.0). Exits non-zero with a message naming the package when a fetch fails.
"""

from __future__ import annotations

import sys

from r4_artefacts import ArtefactError, ensure_all


def main() -> int:
    try:
        fetched = ensure_all()
    except ArtefactError as exc:
        print(f"fetch_artefacts: {exc}", file=sys.stderr)
        return 1
    for spec, path in fetched.items():
        print(f"{spec}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
