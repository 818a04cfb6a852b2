"""The OpenAPI document is true: schemathesis drives the live API (a real
``browser-sessions api`` process on this run's Postgres and RabbitMQ, with a browse worker)
with generated requests for every operation, once with generated ids and once with ids that
exist, so real objects are checked too. No response is a 500 and every response matches the
documented status, content type and schema."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.openapi import from_url

from tests.support.api import service_headers
from workers.dev.fixture_site import FixtureSite
from workers.dev.processes import WorkerProcess

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 10
USER = "schema-user"


def check_operation(operation: schemathesis.APIOperation, **fixed: Any) -> None:
    @given(case=operation.as_strategy(**fixed))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=service_headers(USER))

    run()


def existing_ids(api_url: str, site: FixtureSite) -> dict[str, str]:
    """A session, its capture and a finished browse job of the test's user."""
    headers = service_headers(USER)
    created = requests.post(
        f"{api_url}/v1/sessions",
        headers=headers,
        json={"label": "schema", "start_url": site.url("/app"), "logged_in_selector": "#x"},
        timeout=10,
    ).json()
    requests.post(
        f"{api_url}/v1/tasks", headers=headers, json={"task_id": "schema-task"}, timeout=10
    ).raise_for_status()
    job = requests.post(
        f"{api_url}/v1/browse",
        headers=headers,
        json={
            "task_id": "schema-task",
            "session_id": created["session_id"],
            "url": site.url("/app"),
            "wait": False,
        },
        timeout=10,
    ).json()
    deadline = time.monotonic() + 30
    while (
        requests.get(
            f"{api_url}/v1/browse/{job['job_id']}", headers=headers, timeout=10
        ).status_code
        != 200
    ):
        assert time.monotonic() < deadline, "the browse job never finished"
        time.sleep(0.2)
    return {
        "session_id": created["session_id"],
        "capture_id": created["capture_id"],
        "job_id": job["job_id"],
    }


@pytest.mark.timeout(180)
def test_api_matches_its_openapi_document(
    api_url: str, browse_worker: WorkerProcess, site: FixtureSite
) -> None:
    """The browse worker publishes the sealing key (imports need it) and runs the jobs."""
    schema = from_url(f"{api_url}/v1/openapi.json")
    started = time.monotonic()
    ids = existing_ids(api_url, site)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        check_operation(operation)
    for operation in sorted(operations, key=lambda op: op.method == "delete"):
        names = [p.name for p in operation.path_parameters]
        if names:
            check_operation(operation, path_parameters={n: ids[n] for n in names})
    assert time.monotonic() - started < 90
