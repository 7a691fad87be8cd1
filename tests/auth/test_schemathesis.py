"""schemathesis against the app's own OpenAPI document, as every role and as nobody.

Bounded examples per operation and role, over the auth world (real catalog, real
tokens). Every response must be no 5xx and conform to the document: a declared
status code, content type, headers and body schema; invalid data must be refused
(4xx), and declared security must not be ignored.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from world_helpers import ROLES, World

pytestmark = pytest.mark.auth
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth]
MAX_EXAMPLES = 8


@pytest.fixture
def db_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """SQLite only here (the other auth tests run on both): it bounds the run's time."""
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.mark.parametrize("role", [*ROLES, "nobody"])
def test_the_api_keeps_its_document(world: World, role: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.api.app)
    headers = {} if role == "nobody" else world.headers(role)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19  # every operation of the document, none lost on the way
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def keeps_its_document(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            keeps_its_document()
        except Exception as exc:
            raise AssertionError(f"{operation.label} as {role}: {exc}") from exc
