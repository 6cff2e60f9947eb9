"""Schema fuzzing: schemathesis generates requests from /openapi.json and sends them to the
real app in-process; no answer may be a 5xx or break the documented schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import APIOperation, BaseSchema

from service.app import create_app
from service.settings import Settings

EXAMPLES = 50  # per operation: keeps the whole run well under a minute
# A request can be schema-valid yet wrong for the model it names (top_k over its class
# count, an image of the wrong kind): such a request gets a 4xx, which this check calls
# a failure. Everything else is checked: no 5xx, documented statuses, content types,
# headers and bodies, and schema-invalid requests rejected.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def api_schema() -> Iterator[BaseSchema]:
    app = create_app(Settings(torch_threads=1, preprocess_workers=2))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()  # the app's lifespan, which schemathesis started on first use


def fuzz(operation: APIOperation) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # writes nothing into the working tree
        derandomize=True,  # the same examples on every run
        suppress_health_check=list(HealthCheck),
    )
    def answer_is_valid(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=EXCLUDED)

    answer_is_valid()


def test_no_5xx_and_no_schema_violation(api_schema: BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 6
    failures = []
    for operation in operations:
        try:
            fuzz(operation)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis groups its failures
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert failures == [], "\n\n".join(failures)
