"""The contract files agree with each other and with the service's code lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from adapter.rems_service.reasons import ErrorKind, Reason

REMS_PROFILES = Path(__file__).parents[2] / "profiles" / "rems"
PROJECT_REASON_CODES = {
    "patient-not-enrolled",
    "prescriber-not-certified",
    "pharmacy-not-certified",
    "psf-overdue",
    "treatment-interrupted",
    "override-limit-reached",
    "supply-exceeds-limit",
    "anc-not-current",
    "anc-missing",
}


def _load(name: str) -> Any:
    return json.loads((REMS_PROFILES / name).read_text(encoding="utf-8"))


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def test_reason_codes_match_the_schema_enum() -> None:
    enum = _load("common.schema.json")["$defs"]["reasonCode"]["enum"]

    assert enum == [str(reason) for reason in Reason]
    assert set(enum) >= PROJECT_REASON_CODES


def test_error_kinds_match_the_schema_enum() -> None:
    enum = _load("error.schema.json")["properties"]["error"]["enum"]

    assert enum == [str(kind) for kind in ErrorKind]


def test_openapi_lists_every_reason_code() -> None:
    description = yaml.safe_load((REMS_PROFILES / "openapi.yaml").read_text("utf-8"))["info"][
        "description"
    ]
    flat = " ".join(description.split())

    missing = [str(reason) for reason in Reason if str(reason) not in flat]
    assert missing == []


def test_every_reference_resolves_to_a_file_and_definition() -> None:
    documents = {path.name: path for path in REMS_PROFILES.iterdir()}
    openapi = yaml.safe_load((REMS_PROFILES / "openapi.yaml").read_text("utf-8"))
    refs = _refs(openapi).union(
        *(_refs(_load(name)) for name in documents if name.endswith(".schema.json"))
    )
    for ref in refs:
        target, _, pointer = ref.partition("#")
        if not target:
            continue
        assert target in documents, f"{ref}: no such file in profiles/rems"
        if pointer:
            node = _load(target)
            for part in pointer.strip("/").split("/"):
                assert part in node, f"{ref}: no {part} in {target}"
                node = node[part]


def test_every_schema_is_draft_2020_12() -> None:
    for path in REMS_PROFILES.glob("*.schema.json"):
        assert _load(path.name)["$schema"] == "https://json-schema.org/draft/2020-12/schema", path


def test_schema_examples_are_valid() -> None:
    from adapter.rems_service.contract import Contract

    contract = Contract()
    with_examples = 0
    for name, document in contract.documents.items():
        for example in document.get("examples", []):
            assert contract.problems(name, example) == [], name
            with_examples += 1

    assert with_examples >= 9
