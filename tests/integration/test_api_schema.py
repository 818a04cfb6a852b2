"""The OpenAPI document is true: schemathesis drives the live API (a real
``browser-sessions api`` process on this run's Postgres and RabbitMQ) with generated
requests for every operation; no response is a 500 and every response matches the
documented status, content type and schema."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.openapi import from_url

from tests.integration.conftest import WorkerProcess, service_headers

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12


def check_operation(operation: schemathesis.APIOperation) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=service_headers("schema-user"))

    run()


@pytest.mark.timeout(180)
def test_api_matches_its_openapi_document(api_url: str, browse_worker: WorkerProcess) -> None:
    """The browse worker publishes the sealing key (imports need it) and verifies imports."""
    schema = from_url(f"{api_url}/v1/openapi.json")
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        check_operation(operation)
    assert time.monotonic() - started < 90
