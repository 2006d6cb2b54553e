"""An error no handler answered, in any service: a 500 in the API's error shape, and one structured log line naming
the route (its template, never the values in the path) and never the request's credentials."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.app import create_app as create_notifier
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor.app import create_app as create_processor
from refundflow_processor.settings import ProcessorSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PATH_SECRET = "whsec_in_the_path_0123456789"
BEARER = "sk_live_the_callers_credential"


def create(service: str) -> FastAPI:
    if service == "intake":
        return create_intake(IntakeSettings(refundflow_admin_token="t"))
    if service == "processor":
        return create_processor(
            ProcessorSettings(
                stripe_api_key="sk_test_errors", stripe_api_base="http://127.0.0.1:9", stripe_sandbox=True
            )
        )
    return create_notifier(NotifierSettings())


@pytest.mark.parametrize("service", ["intake", "processor", "notifier"])
async def test_an_unexpected_error_answers_the_error_body_and_logs_one_event_without_secrets(service: str) -> None:
    async def fails_as_a_bug_would(token: str) -> None:
        raise RuntimeError("a bug")

    app = create(service)
    app.add_api_route("/v1/test-failures/{token}", fails_as_a_bug_would)
    # The client raises what the app raised: the error must be answered, not raised again for the server to log.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        with capture_logs() as logs:
            response = await client.get(
                f"/v1/test-failures/{PATH_SECRET}", headers={"Authorization": f"Bearer {BEARER}"}
            )

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "something went wrong on our side"}}
    [logged] = [line for line in logs if line["event"] == "unhandled_error"]
    assert logged["method"] == "GET" and logged["route"] == "/v1/test-failures/{token}"
    assert logged["exc_info"] is True and logged["log_level"] == "error"
    written = json.dumps(logs, default=str)
    assert PATH_SECRET not in written and BEARER not in written
