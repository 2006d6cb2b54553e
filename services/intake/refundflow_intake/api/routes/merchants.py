from __future__ import annotations

from fastapi import APIRouter, Depends

from refundflow_intake import merchant_accounts
from refundflow_intake.api.dependencies import Db, require_admin
from refundflow_intake.api.errors import documented
from refundflow_intake.api.schemas import MerchantCreate, MerchantCreated

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])


@router.post("", status_code=201, dependencies=[Depends(require_admin)], responses=documented())
async def create_merchant(body: MerchantCreate, db: Db) -> MerchantCreated:
    """Create a merchant and its first API key (admin token required)."""
    async with db.transaction() as conn:
        merchant_id, api_key = await merchant_accounts.create_merchant(conn, body.name)
    return MerchantCreated(id=merchant_id, api_key=api_key)
