"""Intake's line to the notifier's internal API: the webhook delivery log, replays and the customer emails'
previews live there.

The notifier owns deliveries and attempts; intake answers merchants from it instead of keeping a copy, so the
log is never stale. Calls carry REFUNDFLOW_INTERNAL_TOKEN, which only the two services hold.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import structlog
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)


class NotifierLinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    notifier_url: str = "http://127.0.0.1:8002"
    notifier_timeout_seconds: float = 5.0


class NotifierUnavailable(Exception):
    """The notifier did not answer, or answered with an error of its own. The message is for merchants: it
    names no host or address (those are logged)."""


class NotifierNotReached(NotifierUnavailable):
    """The request never reached the notifier (no connection, or no token to send): it did nothing."""


class NotifierRefusedRequest(NotifierUnavailable):
    """The notifier refused what was asked as invalid (a 4xx of its own): the request's fault, not an outage. A
    page that shows itself without the notifier's part when it is unavailable does so here too. ``code``: the rule
    it gave, when it named one (``replay_window_exceeded``), its message then for merchants as well."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotifierClient:
    def __init__(self, base_url: str, token: SecretStr | None, timeout: float) -> None:
        self._base_url, self._timeout = base_url.rstrip("/"), timeout
        self._token = token

    async def delivery_log(self, merchant_id: str, endpoint_id: str, limit: int) -> dict[str, Any] | None:
        """The endpoint's delivery state and latest deliveries; None when the notifier does not know it yet."""
        path = f"/internal/v1/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/deliveries"
        return await self._call("GET", path, params={"limit": limit})

    async def replay(
        self, merchant_id: str, endpoint_id: str, *, delivery_id: int | None = None, since: datetime | None = None
    ) -> dict[str, Any] | None:
        """For one delivery, how many deliveries were scheduled (``scheduled``); for a time, whether the notifier
        started replaying since then (``replay``). None when the endpoint or delivery is unknown to the notifier."""
        body: dict[str, Any] = {"delivery_id": delivery_id} if delivery_id is not None else {}
        if since is not None:
            body["since"] = since.isoformat()
        path = f"/internal/v1/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/replays"
        return await self._call("POST", path, json=body)

    async def email_previews(
        self, merchant_id: str, *, merchant_name: str, process_time: str, portal_url: str
    ) -> list[dict[str, str]]:
        """Every customer email as the merchant's customers get it (kind, subject, text, html), rendered by the
        notifier's own templates from sample events."""
        body = {"merchant_name": merchant_name, "process_time": process_time, "portal_url": portal_url}
        answer = await self._call("POST", f"/internal/v1/merchants/{merchant_id}/email-previews", json=body)
        previews: list[dict[str, str]] = (answer or {}).get("previews", [])
        return previews

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        if self._token is None:
            raise NotifierNotReached("REFUNDFLOW_INTERNAL_TOKEN is not set on intake")
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        try:
            async with httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout) as client:
                response = await client.request(method, path, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never sent: the notifier did nothing
            log.warning("notifier_unreachable", path=path, error=repr(exc))
            raise NotifierNotReached("the notification service did not answer: try again shortly") from exc
        except httpx.HTTPError as exc:  # sent, maybe acted on: its answer did not come
            log.warning("notifier_unreachable", path=path, error=repr(exc))
            raise NotifierUnavailable("the notification service did not answer: try again shortly") from exc
        if response.status_code == 404:
            return None
        # Its 401 or 403 is our token refused: our configuration, an outage to the merchant.
        if response.is_client_error and response.status_code not in (401, 403):
            log.warning("notifier_refused_request", path=path, status=response.status_code)
            if rule := _rule_refused(response):
                raise NotifierRefusedRequest(rule[1], code=rule[0])
            raise NotifierRefusedRequest("the notification service refused the request as invalid: check it")
        if response.is_error:
            log.warning("notifier_refused", path=path, status=response.status_code)
            raise NotifierUnavailable("the notification service is unavailable: try again shortly")
        result: dict[str, Any] = response.json()
        return result


def _rule_refused(response: httpx.Response) -> tuple[str, str] | None:
    """The code and message of a rule the notifier refused the request by (``{"detail": {"code", "message"}}``)."""
    try:
        body = response.json()
    except ValueError:  # not JSON: not the notifier's own answer
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("code"), str) and isinstance(detail.get("message"), str):
        return detail["code"], detail["message"]
    return None
