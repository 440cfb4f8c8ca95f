"""The demo data as a fuzzing corpus: its lines, who each line belongs to, and each patient's
decisions when nothing is mutated (the baseline the good patients must keep)."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import tempfile
import unittest.mock
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from adapter import cli

DEMO = Path(cli.__file__).parent / "demo" / "data" / "demo.ndjson"
AS_OF = "2026-03-02T12:00:00Z"
OUTPUTS = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")
_TOKEN = re.compile(rb"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")
_REFERENCE = re.compile(r'"reference"\s*:\s*"([^"]+)"')


def patient_of(record: dict[str, object]) -> str:
    """The patient an output line belongs to."""
    patient = record.get("patient")
    if isinstance(patient, dict):
        return str(patient.get("reference"))
    return str(patient)


_load_reference_data = functools.cache(cli.load_reference_data)


def run_in_process(source: Path, out: Path) -> tuple[int, str]:
    """`rems-adapter run` in this process: (exit code, stderr). Exceptions propagate.

    The mappings are loaded once (they are not what is fuzzed): a case costs its input only."""
    err = io.StringIO()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(err),
        unittest.mock.patch.object(cli, "load_reference_data", _load_reference_data),
    ):
        try:
            code = cli.main(["run", "--source", str(source), "--out", str(out), "--as-of", AS_OF])
        except SystemExit as stop:  # argparse's usage exit
            code = int(stop.code or 0)
    return code, err.getvalue()


def decisions(out: Path) -> dict[str, list[str]]:
    """Every output line, grouped by patient, in a comparable form."""
    found: dict[str, list[str]] = defaultdict(list)
    for name in OUTPUTS:
        path = out / name
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            found[patient_of(record)].append(f"{name}:{line}")
    return {patient: sorted(lines) for patient, lines in found.items()}


@dataclass
class Corpus:
    lines: list[bytes]
    #: patients of each line (the subject it names; a Patient itself)
    owners: list[frozenset[str]]
    #: lines that belong to nobody (Practitioners, Medications): always in a case
    shared: list[int]
    by_patient: dict[str, list[int]]
    #: id or "Type/id" -> the patients whose lines own or reference it
    index: dict[bytes, set[str]] = field(default_factory=dict)
    baseline: dict[str, list[str]] = field(default_factory=dict)

    def affected(self, *texts: bytes) -> set[str]:
        """Patients whose decisions a change to these texts may touch (an over-estimate)."""
        touched: set[str] = set()
        for text in texts:
            for token in _TOKEN.findall(text):
                touched |= self.index.get(token, set())
                if b"/" in token:
                    touched |= self.index.get(token.rsplit(b"/", 1)[-1], set())
        return touched


def load(path: Path = DEMO) -> Corpus:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    owners: list[frozenset[str]] = []
    by_patient: dict[str, list[int]] = defaultdict(list)
    shared: list[int] = []
    index: dict[bytes, set[str]] = defaultdict(set)
    resources = [json.loads(line) for line in lines]
    for number, resource in enumerate(resources):
        text = lines[number].decode()
        refs = set(_REFERENCE.findall(text))
        patients = {ref for ref in refs if ref.startswith("Patient/")}
        if resource["resourceType"] == "Patient":
            patients.add(f"Patient/{resource['id']}")
        owners.append(frozenset(patients))
        if patients:
            for patient in patients:
                by_patient[patient].append(number)
        else:
            shared.append(number)
    for number, resource in enumerate(resources):
        own = resource.get("id", "")
        kind = resource["resourceType"]
        for key in (own, f"{kind}/{own}"):
            index[key.encode()] |= owners[number]
        for ref in _REFERENCE.findall(lines[number].decode()):
            rid = ref.rsplit("/", 1)[-1].encode()
            index[rid] |= owners[number]
            index[ref.encode()] |= owners[number]
    # A shared resource (a Medication) touches every patient whose lines reference it.
    for number in shared:
        resource = resources[number]
        kind, own = resource["resourceType"], resource.get("id", "")
        users: set[str] = set()
        for other, text in enumerate(lines):
            if f"{kind}/{own}".encode() in text:
                users |= owners[other]
        index[own.encode()] |= users
        index[f"{kind}/{own}".encode()] |= users
    corpus = Corpus(lines, owners, shared, dict(by_patient), dict(index))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        code, _ = run_in_process(path, out)
        if code != 0:
            raise RuntimeError(f"the demo data does not run cleanly (exit {code})")
        corpus.baseline = decisions(out)
    return corpus
