"""The internal API refuses a bad token with a 401, whatever bytes it is made of."""

from __future__ import annotations

import httpx
import pytest

from refundflow_notifier.app import create_app
from tests.support.notifier_harness import notifier_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_non_ascii_token_is_refused_not_a_server_error() -> None:
    app = create_app(notifier_settings("postgresql://unused", "unused:9092", 25))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as client:
        for token in ("wrong", "\u00e9t\u00e9"):
            response = await client.get(
                "/internal/v1/merchants/m/webhook-endpoints/e/deliveries",
                headers={b"Authorization": f"Bearer {token}".encode()},
            )
            assert response.status_code == 401, token
