"""The notifier's internal HTTP API: intake serves merchants the delivery log, replays and the previews of their
customers' emails through it.

Not for the public: every call carries REFUNDFLOW_INTERNAL_TOKEN as a bearer token; only intake and the notifier
hold it (it is not derived from any other secret).
"""

from __future__ import annotations

import dataclasses
import hmac
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from refundflow_notifier import delivery_log, merchant_settings, webhook_replays
from refundflow_notifier.email_previews import previews
from refundflow_notifier.records import EndpointState
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.database import read_snapshot
from refundflow_shared.service_runtime import ServiceRuntime

_bearer = HTTPBearer(auto_error=False)


class PreviewRequest(BaseModel):
    """How the merchant's customers see it: its name, its refund policy's process time, its portal's address."""

    model_config = ConfigDict(extra="forbid")

    merchant_name: str = Field(min_length=1, max_length=200)
    process_time: str = Field(min_length=1, max_length=100)
    portal_url: str | None = Field(default=None, max_length=2048)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_id: int | None = Field(default=None, ge=1, le=2**63 - 1)  # a bigint id
    since: AwareDatetime | None = None

    @field_validator("since")
    @classmethod
    def not_to_come(cls, since: datetime | None) -> datetime | None:
        """A time UTC can hold and not still to come: past year 9999 in UTC the query could not take it (a 500
        instead of the caller's 422)."""
        if since is None:
            return None
        try:
            since.astimezone(UTC)
        except OverflowError:
            raise ValueError("since is out of range") from None
        if since > datetime.now(UTC):
            raise ValueError("since is later than now")
        return since

    @model_validator(mode="after")
    def one_of(self) -> ReplayRequest:
        if (self.delivery_id is None) == (self.since is None):
            raise ValueError("give either delivery_id or since")
        return self


def internal_router(runtime: ServiceRuntime, settings: NotifierSettings) -> APIRouter:
    async def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        token = settings.refundflow_internal_token
        if token is None:
            raise HTTPException(503, "REFUNDFLOW_INTERNAL_TOKEN is not set")
        # Compared as bytes: compare_digest refuses non-ASCII str (a 500 where a 401 is due).
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token.get_secret_value().encode()):
            raise HTTPException(401, "internal API token required")

    # Each route runs one transaction: run again whole after contention, else 503 database_busy.
    router = APIRouter(
        prefix="/internal/v1", tags=["internal"], dependencies=[Depends(authorized)], route_class=RetriedRoute
    )

    async def endpoint_of(conn: Any, endpoint_id: str, merchant_id: str) -> EndpointState:
        endpoint = await delivery_log.get_endpoint(conn, endpoint_id, merchant_id)
        if endpoint is None:
            raise HTTPException(404, f"no webhook endpoint {endpoint_id}")
        return endpoint

    @router.get("/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/deliveries")
    async def deliveries(
        merchant_id: str, endpoint_id: str, request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """The endpoint's delivery state and its latest deliveries, each with every attempt, as of one moment."""
        async with read_snapshot(runtime.pool) as conn:
            endpoint = await endpoint_of(conn, endpoint_id, merchant_id)
            deliveries = await delivery_log.delivery_log(conn, endpoint_id, limit)
        # The records as they are, field for field: the shape intake relays to merchants.
        return {
            "endpoint": dataclasses.asdict(endpoint),
            "deliveries": [dataclasses.asdict(delivery) for delivery in deliveries],
        }

    @router.post("/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/replays", status_code=202)
    async def replay(merchant_id: str, endpoint_id: str, body: ReplayRequest) -> dict[str, int | str]:
        """Deliver one delivery's event again (``scheduled``: 1, or 0 for a disabled endpoint; 422 with the code
        ``replay_window_exceeded`` for an event older than the retention period), or every subscribed event since a
        time, at most the retention period back (``replay``: ``started``, ``already_running`` or
        ``nothing_to_replay``, and ``scheduled`` 0): that one is only recorded here, and the replay job walks it."""
        async with runtime.pool.acquire() as conn, conn.transaction():
            await endpoint_of(conn, endpoint_id, merchant_id)
            reach = timedelta(days=settings.webhook_retention_days)
            if body.delivery_id is not None:
                try:
                    scheduled = await delivery_log.replay_delivery(conn, endpoint_id, body.delivery_id, reach=reach)
                except delivery_log.ReplayWindowExceeded as exc:
                    raise HTTPException(422, {"code": exc.code, "message": str(exc)}) from exc
                if scheduled is None:
                    raise HTTPException(404, f"no delivery {body.delivery_id} for this endpoint")
                return {"scheduled": scheduled}
            assert body.since is not None
            replay = await webhook_replays.request_replay(conn, endpoint_id, body.since, reach=reach)
            # ``scheduled`` 0 (none queued yet) keeps the previous intake, which reads only it, answering.
            return {"replay": replay, "scheduled": 0}

    @router.post("/merchants/{merchant_id}/email-previews")
    async def email_previews(merchant_id: str, body: PreviewRequest) -> dict[str, Any]:
        """Every customer email, from sample events, with the merchant's own settings (sender, reply-to, review
        target) and what intake says of it; rendered by the templates the real emails use."""
        async with runtime.pool.acquire() as conn:
            prefs = await merchant_settings.preferences(conn, settings, merchant_id)
        shown = previews(
            prefs, merchant_name=body.merchant_name, process_time=body.process_time, portal_url=body.portal_url
        )
        return {"previews": shown}

    return router
