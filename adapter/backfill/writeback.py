"""``backfill --write-back``: the DetectedIssues of the batch outputs written to the EHR, the way
``watch`` writes them (adapter.watch.writeback: the same create mode read from the EHR's
CapabilityStatement, the same author Device created once, the same batch Bundles).

- A ``final`` DetectedIssue is a decision: created exactly once (``PUT`` under its deterministic
  id where the server allows client-assigned ids, else a conditional create on its
  identifier), so a decision the EHR already holds (from watch, or an earlier backfill) is not
  written again.
- A ``cancelled`` or ``entered-in-error`` one is the EHR's own DetectedIssue (exported with the
  rest), withdrawn: updated with ``If-Match`` on the version that was exported, so that a change
  someone made since is never overwritten (the write is refused, counted and reported).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapter import __version__
from adapter.ehr import FhirClient, FhirServerError
from adapter.fhir.read import DECISION_IDENTIFIER_SYSTEM
from adapter.fhir.write import AUTHOR_DEVICE
from adapter.watch.writeback import EhrFeatures, Write, ehr_features, ensure_author_device, send

log = logging.getLogger("adapter.backfill")


@dataclass
class WriteBackReport:
    created: int = 0
    already_there: int = 0
    withdrawn: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # HTTP status -> count

    @property
    def refused_count(self) -> int:
        return sum(self.refused.values())

    def summary(self) -> str:
        text = (
            f"Written back to the EHR: {self.created} created, {self.already_there} already "
            f"there, {self.withdrawn} withdrawn"
        )
        if self.refused:
            counts = sorted(self.refused.items())
            by_status = ", ".join(f"HTTP {status or 'none'}: {n}" for status, n in counts)
            text += f", {self.refused_count} refused ({by_status})"
        return text + "."


def _token(issue: dict[str, Any]) -> str | None:
    for item in issue.get("identifier") or []:
        if isinstance(item, dict) and item.get("system") == DECISION_IDENTIFIER_SYSTEM:
            return f"{DECISION_IDENTIFIER_SYSTEM}|{item.get('value')}"
    return None


def plan(issues: Iterable[dict[str, Any]], author: str) -> list[Write]:
    """One write per DetectedIssue line (see the module docstring)."""
    out: list[Write] = []
    for issue in issues:
        patient = str((issue.get("patient") or {}).get("reference") or "")
        if issue.get("status") == "final":
            token = _token(issue)
            if token is None:  # pragma: no cover - every decision we write carries one
                continue
            resource = dict(issue)
            if author != AUTHOR_DEVICE:
                resource["author"] = {**resource["author"], "reference": author}
            out.append(Write(patient, resource, condition=token))
        else:
            version = (issue.get("meta") or {}).get("versionId")
            out.append(Write(patient, issue, if_match=str(version) if version else None))
    return out


#: DetectedIssues planned and sent at a time (memory stays flat on a large backfill).
CHUNK = 5000


def write_back(
    client: FhirClient,
    issues: Iterable[dict[str, Any]],
    *,
    use_bundles: bool,
    batch_size: int,
    withdrawn_already: Collection[str] = (),
) -> WriteBackReport:
    """`withdrawn_already`: ids of DetectedIssues the export held withdrawn already; batch mode
    writes them again as they are (the record of decisions), and the EHR has them: no write."""
    features = ehr_features(client.capabilities())
    try:
        author = ensure_author_device(client, __version__, features.create_mode)
    except FhirServerError as error:
        log.warning(
            "the EHR refused to create the author Device (%s); the DetectedIssues name %s all "
            "the same",
            error,
            AUTHOR_DEVICE,
        )
        author = AUTHOR_DEVICE
    report = WriteBackReport()
    chunk: list[dict[str, Any]] = []
    for issue in issues:
        if issue.get("status") != "final" and issue.get("id") in withdrawn_already:
            report.already_there += 1
            continue
        chunk.append(issue)
        if len(chunk) >= CHUNK:
            _write(client, plan(chunk, author), report, use_bundles, batch_size, features)
            chunk = []
    if chunk:
        _write(client, plan(chunk, author), report, use_bundles, batch_size, features)
    log.info("%s", report.summary())
    return report


def _write(
    client: FhirClient,
    writes: Sequence[Write],
    report: WriteBackReport,
    use_bundles: bool,
    batch_size: int,
    features: EhrFeatures,
) -> None:
    for result in send(
        client,
        writes,
        use_bundles=use_bundles,
        batch_size=batch_size,
        create_mode=features.create_mode,
    ):
        if not result.ok:
            report.refused[result.status] += 1
        elif not result.write.is_create:
            report.withdrawn += 1
        elif result.status == 201:
            report.created += 1
        else:
            report.already_there += 1
