"""The platform's own calls about merchants (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from refundflow_intake import idempotency, merchant_accounts, team_members
from refundflow_intake.api.account_schemas import ApiKeyCreate, ApiKeyCreated, MerchantCreate, MerchantCreated
from refundflow_intake.api.dependencies import Db, Links, Now, require_admin
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import IdempotencyKey, PathId
from refundflow_intake.domain import IdempotencyKeyBlank, IdempotencyKeyReused, MerchantNotFound, PlatformOnly
from refundflow_intake.roles import Role
from refundflow_intake.team_members import EmailAlreadyRegistered
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(
    prefix="/v1/merchants", tags=["merchants"], dependencies=[Depends(require_admin)], route_class=RetriedRoute
)


@router.post(
    "",
    status_code=201,
    responses=documented(PlatformOnly, EmailAlreadyRegistered, IdempotencyKeyReused, IdempotencyKeyBlank)
    | {200: {"model": MerchantCreated, "description": "a retry (same Idempotency-Key and body): the first's merchant"}},
)
async def create_merchant(
    body: MerchantCreate,
    db: Db,
    links: Links,
    now: Now,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MerchantCreated:
    """Create a merchant and its first API key (platform admin token). With ``owner_email``, its first owner is
    invited too: ``owner_invite_url`` is a one-time link, valid 72 h, that sets their password (it is also
    emailed to them). The owner then manages the team and the API keys in the dashboard.

    Send an ``Idempotency-Key`` to retry safely: the same key and body answer the first request's merchant (200,
    ``Idempotent-Replayed: true``) with ``api_key`` and ``owner_invite_url`` null and ``api_key_already_shown``
    true, as only their hashes are kept (a lost key: ``POST /v1/merchants/{id}/api-keys``); the key with another
    body is 409 ``idempotency_key_reused``."""
    async with db.transaction() as conn:
        if idempotency_key is not None:
            request_hash = idempotency.fingerprint(body.model_dump(mode="json"))
            if earlier := await idempotency.claim_merchant_creation(conn, idempotency_key, request_hash):
                response.status_code = 200
                response.headers["Idempotent-Replayed"] = "true"
                key_id = await merchant_accounts.first_api_key_id(conn, earlier)
                return MerchantCreated(id=earlier, api_key=None, api_key_id=key_id, api_key_already_shown=True)
        merchant_id, api_key = await merchant_accounts.create_merchant(conn, body.name)
        invite_url = None
        if body.owner_email is not None:
            _, invite_url = await team_members.invite(
                conn, links, merchant_id, email=body.owner_email, role=Role.OWNER, invited_by=None, now=now
            )
        if idempotency_key is not None:
            await idempotency.remember_merchant_creation(conn, idempotency_key, merchant_id)
    return MerchantCreated(
        id=merchant_id, api_key=api_key["api_key"], api_key_id=api_key["id"], owner_invite_url=invite_url
    )


@router.post("/{merchant_id}/api-keys", status_code=201, responses=documented(PlatformOnly, MerchantNotFound))
async def issue_api_key(merchant_id: PathId, db: Db, body: ApiKeyCreate | None = None) -> ApiKeyCreated:
    """Issue a new API key to an existing merchant (platform admin token): how a merchant that lost or revoked its
    keys gets back in, however many live keys it holds. The key is shown once."""
    async with db.transaction() as conn:
        key = await merchant_accounts.create_api_key(
            conn, merchant_id, name=body.name if body else "recovery", max_live=None
        )
    return ApiKeyCreated(**key)
