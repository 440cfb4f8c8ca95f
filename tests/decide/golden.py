"""Batch outputs recorded before the decision backends moved to adapter/decide (the proof that
batch mode stays byte-identical). `python -m tests.decide.golden` rewrites them: only for an
intended change of the outputs, with the reason in the commit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from adapter.cli import main
from adapter.rems_service import BackgroundServer, make_app

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
DEMO = Path(__file__).resolve().parents[2] / "adapter" / "demo" / "data" / "demo.ndjson"
AS_OF = "2026-03-02T12:00:00Z"
FILES = ("DetectedIssue.ndjson", "status.ndjson", "authorizations.ndjson", "psf.ndjson")


def _service_clock() -> datetime:
    return datetime(2026, 3, 2, 12, tzinfo=UTC)


@contextmanager
def reference_rems(folder: Path) -> Iterator[str]:
    from tests.rems_backend.kit import seed_document
    from tests.rems_service.conftest import TEST_RULES

    seed = folder / "seed.json"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    app = make_app(folder / "rems.sqlite", seed, clock=_service_clock, rules=TEST_RULES)
    with BackgroundServer(app) as url:
        yield url


def produce(out: Path, rems: str) -> None:
    argv = ["run", "--source", str(DEMO), "--out", str(out), "--as-of", AS_OF]
    assert main([*argv, "--rems", rems]) == 0


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


def record(work: Path) -> None:
    produce(work / "local", "local")
    with reference_rems(work) as url:
        produce(work / "rems", url)
    for backend in ("local", "rems"):
        target = GOLDEN / backend
        target.mkdir(parents=True, exist_ok=True)
        for name, data in outputs(work / backend).items():
            (target / name).write_bytes(data)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as temporary:
        record(Path(temporary))
    sys.stdout.write(f"golden outputs written under {GOLDEN}\n")
