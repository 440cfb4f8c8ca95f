"""Start sekmet-fhir with extra search parameters registered (runs in sekmet's OWN virtualenv).

sekmet-fhir 0.1.1 has no configuration for search parameters and does not act on SearchParameter
resources: its table is the module-level dict `sekmet.fhir.search_params.PARAMS`, read when a
resource is indexed (at write time) and when a search runs. So we add our parameters to that dict
in-process, before the app is created and before anything is written, then run uvicorn ourselves.

The parameters come from a FHIR Bundle of SearchParameter resources (the standard format) so the
definitions read like the ones a real server would be configured with. Only simple expressions
are supported (`Type.a.b`, alternatives joined with `|`); anything else is refused loudly.

Usage: python sekmet_launcher.py --config settings.yaml --search-parameters bundle.json
This file imports sekmet, which is not a dependency of rems-adapter: it never runs in the
project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_KINDS = {"string", "token", "reference", "date", "number", "uri"}


def _paths(expression: str, base: str) -> tuple[str, ...]:
    """`DetectedIssue.identified | DetectedIssue.x` -> ("identified", "x")."""
    out = []
    for alternative in expression.split("|"):
        alternative = alternative.strip()
        prefix = f"{base}."
        if not alternative.startswith(prefix) or not all(
            part.isidentifier() for part in alternative[len(prefix) :].split(".")
        ):
            raise SystemExit(
                f"sekmet_launcher: unsupported SearchParameter expression {expression!r} for {base}"
                " (only Type.a.b alternatives joined by '|')"
            )
        out.append(alternative[len(prefix) :])
    return tuple(out)


def register(bundle: dict) -> list[str]:
    from sekmet.fhir.search_params import PARAMS, SearchParam

    registered = []
    for entry in bundle.get("entry", []):
        sp = entry["resource"]
        kind = sp["type"]
        if kind not in _KINDS:
            raise SystemExit(f"sekmet_launcher: search parameter type {kind!r} is not supported")
        targets = sp.get("target") or []
        target = targets[0] if len(targets) == 1 else None
        for base in sp["base"]:
            param = SearchParam(sp["code"], kind, _paths(sp["expression"], base), target)
            PARAMS.setdefault(base, {})[sp["code"]] = param
            registered.append(f"{base}:{sp['code']}")
    return registered


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--search-parameters", required=True)
    args = parser.parse_args(argv)

    registered = register(json.loads(Path(args.search_parameters).read_text()))

    import uvicorn
    from sekmet.config import load_settings
    from sekmet.main import create_app

    settings = load_settings(args.config)
    app = create_app(settings)
    print(f"sekmet_launcher: registered {', '.join(registered)}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
