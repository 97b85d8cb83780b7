"""Validate API responses against the served OpenAPI document with openapi-core."""

from __future__ import annotations

import io
from functools import cache
from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.wrappers import Request

from flowsched.web.openapi import spec


@cache
def _openapi() -> OpenAPI:
    document = dict(spec())
    # openapi-core matches absolute server URLs; the test client talks to localhost.
    document["servers"] = [{"url": "http://localhost/api/v1"}]
    return OpenAPI.from_dict(document)


def check(response: Any) -> Any:
    """Raise if ``response`` (a Flask test response) does not match the spec; return its JSON."""
    # Only method and path matter for a response; the body stream was read by the app.
    environ = {**response.request.environ, "wsgi.input": io.BytesIO(), "CONTENT_LENGTH": "0"}
    _openapi().validate_response(
        WerkzeugOpenAPIRequest(Request(environ)), WerkzeugOpenAPIResponse(response)
    )
    return response.get_json()
