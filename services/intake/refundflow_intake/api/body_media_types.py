"""A JSON body is taken as JSON only: sent as another media type (text/plain, a form), FastAPI read it as bytes and
answered a misleading 422 (the body "is not a valid dictionary"); it is now 415 unsupported_media_type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.routing import APIRoute

from refundflow_intake.api.errors import ApiError, error_body

UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


async def json_bodies_only(request: Request) -> None:
    """A dependency for every API router (``app.include_router``). A body with no Content-Type is read as JSON, as
    FastAPI does."""
    route: APIRoute = request.scope["route"]
    content_type = request.headers.get("content-type")
    if route.body_field is None or isinstance(route.body_field.field_info, params.Form) or content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return
    if not await request.body():  # no body at all (an optional one left out): nothing to misread
        return
    said = f"the body must be JSON (Content-Type: application/json), not {media_type or 'untyped'}"
    raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, said)


def document_json_bodies(app: FastAPI) -> None:
    """Every operation that takes a body lists 415 ``unsupported_media_type`` in ``app``'s OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            answer = {
                "description": f"error codes: `{UNSUPPORTED_MEDIA_TYPE}`",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"},
                        "example": error_body(UNSUPPORTED_MEDIA_TYPE, "what went wrong, in words"),
                    }
                },
            }
            for operations in document["paths"].values():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("415", answer)
        return app.openapi_schema if app.openapi_schema is not None else generate()

    app.openapi = openapi  # type: ignore[method-assign]
