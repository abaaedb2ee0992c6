"""Schemathesis against the API's own OpenAPI document: no server error, every answer as documented.

Hypothesis generates requests from the schema (valid and invalid ones) for every operation, with a fixed
budget and a fixed seed so the run is bounded and repeatable; the API serves a real small catalogue.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serving.conftest import Served

EXAMPLES = 400
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_server_errors_and_answers_as_documented(served: Served) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}

    def fuzz(operation: Any) -> None:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call_and_validate(checks=CHECKS)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        check()

    for operation in operations:
        fuzz(operation)
    total, spread = sum(calls.values()), sorted(statuses.items())
    print(f"\nschemathesis: {total} requests over {len(calls)} operations, statuses {spread}")
    assert set(calls) == {op.label for op in operations}
    assert not [s for s in statuses if s >= 500]
