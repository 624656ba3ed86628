"""Requests generated from the OpenAPI document, valid and invalid, never get a 5xx.

The schema comes from an app built at import time; building it loads no model,
so the trained demo bundle is needed only by the app that answers, which the
``fuzz_client`` fixture starts. (Schemathesis' fixture-based loader reads a
pytest node attribute that pytest 9.2 removed, hence this split.)
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serving.app import create_app
from serving.auth import ADMIN_PREFIX
from serving.settings import Settings

EXAMPLES_PER_OPERATION = 60
BASE_URL = "http://testserver"

schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, bundle_dir="unused-for-the-schema")).openapi()
)
# The operations this suite also holds to their documented answers; the others
# (feedback, intake page) are checked for server errors only.
CONFORMING_TAGS = {"scoring", "model", "admin"}
CONFORMING_PATHS = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def fuzz_client(demo_bundle, settings_factory, keys):
    app = create_app(
        settings_factory(
            bundle_dir=str(demo_bundle), api_keys=[keys.client], admin_keys=[keys.admin]
        )
    )
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        yield client


def conforms(case) -> bool:
    tags = set(case.operation.definition.raw.get("tags", []))
    return bool(tags & CONFORMING_TAGS) or case.path in CONFORMING_PATHS


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_generated_requests_get_no_server_error(case, fuzz_client, keys):
    key = keys.admin if case.path.startswith(ADMIN_PREFIX) else keys.client
    headers = {"Authorization": f"Bearer {key}"}
    request = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    if "data" in request:
        request["content"] = request.pop("data")
    for option in ("timeout", "allow_redirects", "verify", "cookies"):
        request.pop(option, None)
    response = fuzz_client.request(**request)
    checks = [not_a_server_error]
    if conforms(case):
        checks += [
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    case.validate_response(response, checks=checks)
