"""Property-based API test: schemathesis drives the live service from profiles/rems/openapi.yaml.

Checks: no 5xx, every status code, content type, header and body as the OpenAPI document says.
(Business rejections are valid answers here: 422 is declared for well-formed but refused data.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapter.rems_service import BackgroundServer, make_app

from .conftest import FakeClock, seed_document

OPENAPI = Path(__file__).parents[2] / "profiles" / "rems" / "openapi.yaml"
MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def rems_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("rems-property")
    seed = folder / "seed.json"
    seed.write_text(json.dumps(seed_document()), encoding="utf-8")
    with BackgroundServer(make_app(folder / "rems.sqlite", seed, clock=FakeClock())) as url:
        yield url


# Loaded when the module is collected: schemathesis.pytest.from_fixture (the lazy loader) does
# not work with pytest 9 in schemathesis 4.x ("'Function' object has no attribute '_nodeid'").
schema = schemathesis.openapi.from_path(OPENAPI)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_service_honours_its_openapi(case: schemathesis.Case, rems_base_url: str) -> None:
    response = case.call(base_url=rems_base_url, timeout=10)

    assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"
    case.validate_response(
        response,
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )
