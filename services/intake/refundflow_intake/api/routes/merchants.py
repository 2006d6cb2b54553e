"""The platform's own calls about merchants (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from refundflow_intake import merchant_accounts
from refundflow_intake.api.account_schemas import ApiKeyCreate, ApiKeyCreated, MerchantCreate, MerchantCreated
from refundflow_intake.api.dependencies import Db, require_admin
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import PathId
from refundflow_intake.domain import MerchantNotFound, PlatformOnly

router = APIRouter(prefix="/v1/merchants", tags=["merchants"], dependencies=[Depends(require_admin)])


@router.post("", status_code=201, responses=documented(PlatformOnly))
async def create_merchant(body: MerchantCreate, db: Db) -> MerchantCreated:
    """Create a merchant and its first API key (platform admin token)."""
    async with db.transaction() as conn:
        merchant_id, api_key = await merchant_accounts.create_merchant(conn, body.name)
    return MerchantCreated(id=merchant_id, api_key=api_key)


@router.post("/{merchant_id}/api-keys", status_code=201, responses=documented(PlatformOnly, MerchantNotFound))
async def issue_api_key(merchant_id: PathId, db: Db, body: ApiKeyCreate | None = None) -> ApiKeyCreated:
    """Issue a new API key to an existing merchant (platform admin token): how a merchant that lost or revoked its
    keys gets back in. The key is shown once."""
    async with db.transaction() as conn:
        key = await merchant_accounts.create_api_key(conn, merchant_id, name=body.name if body else "recovery")
    return ApiKeyCreated(**key)
