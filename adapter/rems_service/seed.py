"""Seed files: certifications loaded at start (JSON, or TOML with the same structure)."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from adapter.errors import UnreadableInputError
from adapter.rems import contract

from . import registry
from .config import ProgramRules
from .contract import Contract
from .store import Store

_SECTIONS = (
    ("prescribers", registry.certify_prescriber),
    ("designees", registry.enroll_designee),  # after prescribers: a designee needs one
    ("pharmacies", registry.certify_pharmacy),
)


class SeedError(UnreadableInputError, ValueError):
    """The seed file cannot be read or an entry is refused; the message names file and entry."""


def read_seed(path: str | Path) -> dict[str, Any]:
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
        data = tomllib.loads(text) if where.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise SeedError(f"{where}: cannot read the seed file: {exc}") from exc
    if not isinstance(data, dict):
        raise SeedError(
            f"{where}: the seed must be an object with prescribers/designees/pharmacies"
        )
    return data


def apply_seed(
    path: str | Path, store: Store, schemas: Contract, rules: ProgramRules, now: datetime
) -> None:
    """All or nothing: one transaction, so a refused entry leaves the database as it was."""
    data = read_seed(path)
    problems = schemas.problems(contract.SEED, data)
    if problems:
        raise SeedError(f"{path}: does not match seed.schema.json: {'; '.join(problems)}")
    with store.write() as conn:
        for section, certify in _SECTIONS:
            for index, entry in enumerate(data.get(section, [])):
                outcome = certify(conn, entry, now, rules)
                if outcome.status >= 400:
                    reasons = ", ".join(outcome.body["reasons"])
                    raise SeedError(f"{path}: {section}[{index}] refused: {reasons}")
