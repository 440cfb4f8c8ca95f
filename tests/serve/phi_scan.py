"""What a log must never contain: the names, birth dates and identifiers of the people the tests
seed (recorded by tests/serve/kit.py as they are made) and of the demo data's patients."""

from __future__ import annotations

import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "adapter" / "demo" / "data" / "demo.ndjson"


def demo_tokens() -> set[str]:
    tokens: set[str] = set()
    for line in DEMO.read_text(encoding="utf-8").splitlines():
        resource = json.loads(line)
        if resource.get("resourceType") != "Patient":
            continue
        for name in resource.get("name") or []:
            if name.get("text"):
                tokens.add(name["text"])
        for identifier in resource.get("identifier") or []:
            tokens.add(identifier["value"])
        if resource.get("birthDate"):
            tokens.add(resource["birthDate"])
    return tokens


def tokens(folder: Path) -> set[str]:
    found = demo_tokens()
    seeded = folder / "seeded-phi.txt"
    if seeded.exists():
        found |= {t for t in seeded.read_text(encoding="utf-8").splitlines() if t}
    return found


def leaks(folder: Path) -> list[str]:
    """ "file: token" for every token found in a log file of `folder`."""
    wanted = tokens(folder)
    out = []
    for path in sorted(folder.glob("*.log")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for token in sorted(wanted):
            if token in text:
                out.append(f"{path.name}: {token}")
    return out
