from __future__ import annotations

from fastapi import APIRouter

from refundflow_intake import merchant_accounts
from refundflow_intake.api.account_schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from refundflow_intake.api.dependencies import CurrentCaller, Db, Settings
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import PathId
from refundflow_intake.api.links import id_links
from refundflow_intake.domain import ApiKeyNotFound, ApiKeysManagedByOwners, LastApiKey, TooManyApiKeys
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"], route_class=RetriedRoute)


@router.post(
    "",
    status_code=201,
    responses=documented(ApiKeysManagedByOwners, TooManyApiKeys)
    | id_links(201, "the new key", "key_id", "DELETE /v1/api-keys/{key_id}"),
)
async def create_api_key(
    caller: CurrentCaller, db: Db, settings: Settings, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    """Another API key for your account; the key is shown once. Once your merchant has an owner (a person in the
    dashboard), keys are created and revoked by owners there: a key cannot mint or revoke keys (403). Your live keys
    are limited in number: past it, 409 ``too_many_api_keys`` (revoke one first)."""
    async with db.transaction() as conn:
        await merchant_accounts.check_keys_managed_by_keys(conn, caller.merchant_id)
        key = await merchant_accounts.create_api_key(
            conn, caller.merchant_id, name=body.name if body else None, max_live=settings.api_keys_per_merchant
        )
    return ApiKeyCreated(**key)


@router.get("", responses=documented())
async def list_api_keys(caller: CurrentCaller, db: Db) -> ApiKeyList:
    """Your API keys (never the keys themselves), revoked ones included."""
    async with db.connection() as conn:
        keys = await merchant_accounts.list_api_keys(conn, caller.merchant_id)
    return ApiKeyList(data=[ApiKeyOut(**k) for k in keys])


@router.delete("/{key_id}", responses=documented(ApiKeyNotFound, LastApiKey, ApiKeysManagedByOwners))
async def revoke_api_key(key_id: PathId, caller: CurrentCaller, db: Db) -> ApiKeyOut:
    """Revoke a key: it stops working at once. Revoking it again changes nothing. Your last live key cannot be
    revoked: create another first. Once your merchant has an owner, only owners revoke keys, in the dashboard."""
    async with db.transaction() as conn:
        await merchant_accounts.check_keys_managed_by_keys(conn, caller.merchant_id)
        key = await merchant_accounts.revoke_api_key(conn, caller.merchant_id, key_id)
    return ApiKeyOut(**key)
