"""docs/openapi.yaml stays true: real answers validate against it, and a bounded
schemathesis run against the live local servers finds no 5xx and no schema violation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ROOT

SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
# Schema-valid is not image-valid (random bytes labelled image/png are rightly a 400), so the
# checks that expect acceptance of any schema-valid body are left out.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUNCTIONS = ["predict", "gradcam"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_real_answers_match_the_spec(stack, lesion_png, function):
    url = getattr(stack, f"{function}_url")
    post = SCHEMA["/"]["POST"]
    for media_type, body in (
        ("image/png", lesion_png),
        ("multipart/form-data", {"image": lesion_png, "class": "nv"}),
    ):
        case = post.Case(body=body, media_type=media_type)
        response = case.call_and_validate(base_url=url, checks=CHECKS, timeout=60)
        assert response.status_code == 200
    warm = SCHEMA["/"]["GET"].Case(query={"warmup": "1"})
    assert warm.call_and_validate(base_url=url, checks=CHECKS).status_code == 200


@pytest.mark.parametrize("function", FUNCTIONS)
@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_documented_answers(case, stack, function):
    case.call_and_validate(base_url=getattr(stack, f"{function}_url"), checks=CHECKS, timeout=60)


def test_metadata_answers_match_the_spec(single_function, lesion_png):
    from test_metadata_http import ENV

    url, _ = single_function("gradcam", ENV)
    post = SCHEMA["/"]["POST"]
    fields = {"image": lesion_png, "age": "61", "site": "trunk"}
    case = post.Case(body=fields, media_type="multipart/form-data")
    assert case.call_and_validate(base_url=url, checks=CHECKS, timeout=60).status_code == 200
    bad = post.Case(body={**fields, "age": "200"}, media_type="multipart/form-data")
    assert bad.call_and_validate(base_url=url, checks=CHECKS, timeout=60).status_code == 422
    described = SCHEMA["/"]["GET"].Case(query={"model": "1"})
    assert described.call_and_validate(base_url=url, checks=CHECKS).status_code == 200
