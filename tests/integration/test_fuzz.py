"""Schemathesis against Graft's own OpenAPI spec, on a real server: generated requests — valid
(positive) and schema-violating (negative) — to every operation must never get a 5xx, and every
answer must match the spec (status code, content type, body schema). Invalid data must be refused,
and no error body may leak a stack trace, SQL, a file path or a key.

``GRAFT_FUZZ_CASES`` cases asked for (default 800, spread over operations and both modes; operations
with few possible inputs run fewer, so at least 500 run);
``make fuzz`` runs many more with a random seed. Tenant routes run as a tenant, admin routes as the
admin. The server has no training workers, so generated tasks only ever queue.
"""

from __future__ import annotations

import os
import re

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Server

pytestmark = pytest.mark.integration

LEAKS = re.compile(
    r"Traceback|File \"|/work/|/tmp/|site-packages|sqlalchemy|psycopg|SELECT |INSERT INTO|gft_[A-Za-z0-9_-]{20}", re.I
)


@schemathesis.check
def no_leaks(ctx, response, case) -> None:
    """Error bodies never carry stack traces, SQL, file paths or keys."""
    if response.status_code >= 400:
        assert not LEAKS.search(response.text), response.text[:500]


TOTAL = int(os.environ.get("GRAFT_FUZZ_CASES", "800"))
RANDOM = os.environ.get("GRAFT_FUZZ_RANDOM", "") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, no_leaks]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Server:
    env = {"GRAFT_TRAINING_WORKERS": "0", "GRAFT_PREDICT_RATE_PER_S": "0", "GRAFT_MAX_REQUEST_BYTES": "1048576"}
    srv = Server(tmp_path_factory.mktemp("graft-fuzz"), env=env).start()
    yield srv
    srv.stop()


def test_no_5xx_and_every_answer_matches_the_spec(fuzzed: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    with fuzzed.admin() as admin:
        key = admin.post("/v1/tenants", json={"name": "fuzzer"}).json()["api_key"]
    per = max(1, -(-TOTAL // (2 * len(operations))))
    ran: dict[str, int] = {}
    for operation in operations:
        token = fuzzed.admin_token if operation.path.startswith("/v1/tenants") else key
        headers = {"Authorization": f"Bearer {token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=per,
                deadline=None,
                database=None,
                derandomize=not RANDOM,
                phases=[hypothesis.Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:  # called below, inside this iteration (B023 does not apply)
                case.call_and_validate(base_url=fuzzed.url, headers=headers, checks=checks, timeout=60)  # noqa: B023
                ran[operation.label] = ran.get(operation.label, 0) + 1  # noqa: B023

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in it can be invalid
    total = sum(ran.values())
    print(f"schemathesis: {total} cases over {len(operations)} operations")
    assert total >= min(TOTAL, 500), ran  # hypothesis stops early on tiny input spaces (no parameters)
    assert fuzzed.proc.poll() is None
