from __future__ import annotations

from fastapi import APIRouter, Query

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake import repository
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.errors import documented
from refundflow_intake.api.schemas import PublicRefundPolicy, RefundPolicyOut
from refundflow_intake.domain import MerchantNotFound, PolicyOverrideNotFound
from refundflow_intake.refund_policy import RefundPolicy, RefundPolicyFields, RefundPolicyOverride

router = APIRouter(tags=["refund policy"])


async def _policy_out(db: Db, merchant_id: str) -> RefundPolicyOut:
    async with db.transaction() as conn:
        policy = await policies.merchant_policy(conn, merchant_id)
        overrides = await policies.overrides(conn, merchant_id)
    return RefundPolicyOut(
        policy=policy,
        product_overrides={p: RefundPolicyOverride.model_validate(o) for p, o in overrides.items()},
    )


@router.get("/v1/refund-policy", responses=documented())
async def get_refund_policy(caller: CurrentCaller, db: Db) -> RefundPolicyOut:
    """Your refund policy (the defaults until you set one) and its per-product overrides."""
    return await _policy_out(db, caller.merchant_id)


@router.put("/v1/refund-policy", responses=documented())
async def set_refund_policy(body: RefundPolicyFields, caller: CurrentCaller, db: Db) -> RefundPolicyOut:
    """Replace your refund policy; fields left out take their defaults."""
    async with db.transaction() as conn:
        await policies.save(conn, caller.merchant_id, policies.MERCHANT_WIDE, body.model_dump(mode="json"))
    return await _policy_out(db, caller.merchant_id)


@router.put("/v1/refund-policy/products/{product_id}", responses=documented())
async def set_product_override(
    product_id: str, body: RefundPolicyOverride, caller: CurrentCaller, db: Db
) -> RefundPolicyOut:
    """Set one product's exceptions: the fields given replace your policy's for that product."""
    async with db.transaction() as conn:
        await policies.save(conn, caller.merchant_id, product_id, body.fields_set())
    return await _policy_out(db, caller.merchant_id)


@router.delete("/v1/refund-policy/products/{product_id}", responses=documented(PolicyOverrideNotFound))
async def delete_product_override(product_id: str, caller: CurrentCaller, db: Db) -> RefundPolicyOut:
    """Remove a product's override: your policy applies to it again."""
    async with db.transaction() as conn:
        if not await policies.delete_override(conn, caller.merchant_id, product_id):
            raise PolicyOverrideNotFound(f"no override for product {product_id}")
    return await _policy_out(db, caller.merchant_id)


@router.get(
    "/v1/public/merchants/{merchant_id}/refund-policy",
    tags=["public"],
    responses=documented(MerchantNotFound, authenticated=False),
)
async def public_refund_policy(
    merchant_id: str, db: Db, product_id: str | None = Query(default=None, max_length=200)
) -> PublicRefundPolicy:
    """The policy customers see at checkout and on product pages (no authentication; approval rules stay
    private)."""
    async with db.transaction() as conn:
        if not await repository.merchant_exists(conn, merchant_id):
            raise MerchantNotFound(f"no merchant {merchant_id}")
        policy: RefundPolicy = await policies.effective_policy(conn, merchant_id, product_id)
    return PublicRefundPolicy(
        merchant_id=merchant_id,
        product_id=product_id,
        refund_window_days=policy.refund_window_days,
        excluded_categories=policy.excluded_categories,
        accepted_reasons=[r.value for r in policy.accepted_reasons],
        process_time=policy.process_time,
        text=policy.plain_text(),
    )
