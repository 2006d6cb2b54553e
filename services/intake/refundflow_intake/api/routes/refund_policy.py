from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Request, Response

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import CurrentCaller, Db, Now, Settings
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import PathId, QueryId
from refundflow_intake.api.schemas import PublicRefundPolicy, RefundPolicyOut
from refundflow_intake.domain import (
    ApprovalRulesManagedByOwners,
    AutoApproveReasonNotAccepted,
    MerchantNotFound,
    PolicyOverrideNotFound,
    TooManyProductOverrides,
)
from refundflow_intake.merchant_accounts import has_joined_owner
from refundflow_intake.portal.customer_requests import merchant_of
from refundflow_intake.portal.customer_words import policy_text
from refundflow_intake.public_policy_cache import PublicPolicyCache, still_fresh
from refundflow_intake.refund_policy import RefundPolicyFields, RefundPolicyOverride, approval_rules
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(tags=["refund policy"], route_class=RetriedRoute)
# Read by merchants' storefront pages, whose widgets add a cache-buster: included without the strict query check.
public_router = APIRouter(tags=["refund policy", "public"], route_class=RetriedRoute)


async def _policy_out(db: Db, merchant_id: str) -> RefundPolicyOut:
    async with db.snapshot() as conn:
        policy = await policies.merchant_policy(conn, merchant_id)
        overrides = await policies.overrides(conn, merchant_id)
    return RefundPolicyOut(
        policy=policy,
        product_overrides={p: RefundPolicyOverride.model_validate(o) for p, o in overrides.items()},
    )


async def _check_approval_rules_kept(
    conn: asyncpg.Connection, merchant_id: str, stored: dict[str, Any] | None, given: dict[str, Any] | None
) -> None:
    """Once an owner has joined, only owners change the approval rules (in the dashboard): with them, one key could
    switch the two-person rule off, approve alone and put the rule back. A key still writes the other fields.
    Called under ``policies.lock_policies``, ``stored`` read after it: an owner's save or leaving meanwhile is seen."""
    if approval_rules(stored) != approval_rules(given) and await has_joined_owner(conn, merchant_id):
        raise ApprovalRulesManagedByOwners(
            "your approval rules (second_approval_above, auto_approve) are changed by your owners in the dashboard"
        )


def _stored_override(document: dict[str, Any] | None) -> dict[str, Any] | None:
    # As the API would save it again, so that a rule sent back as it is compares equal.
    return RefundPolicyOverride.model_validate(document).fields_set() if document is not None else None


def _cache(request: Request) -> PublicPolicyCache:
    cache: PublicPolicyCache = request.app.state.public_policy_cache
    return cache


@router.get("/v1/refund-policy", responses=documented())
async def get_refund_policy(caller: CurrentCaller, db: Db) -> RefundPolicyOut:
    """Your refund policy (the defaults until you set one) and its per-product overrides."""
    return await _policy_out(db, caller.merchant_id)


@router.put("/v1/refund-policy", responses=documented(ApprovalRulesManagedByOwners, AutoApproveReasonNotAccepted))
async def set_refund_policy(
    body: RefundPolicyFields, caller: CurrentCaller, db: Db, request: Request
) -> RefundPolicyOut:
    """Replace your refund policy; fields left out take their defaults. Once your merchant has an owner, a key
    changes every field but the approval rules (``second_approval_above``, ``auto_approve``): send them as they
    are; owners change them in the dashboard (403)."""
    document = body.model_dump(mode="json")
    async with db.transaction() as conn:
        await policies.lock_policies(conn, caller.merchant_id)
        stored = await policies.merchant_policy(conn, caller.merchant_id)
        await _check_approval_rules_kept(conn, caller.merchant_id, stored.model_dump(mode="json"), document)
        before = await policies.auto_approve_reasons_left_out(conn, caller.merchant_id, policies.MERCHANT_WIDE)
        await policies.save(conn, caller.merchant_id, policies.MERCHANT_WIDE, document)
        await policies.check_saved(conn, caller.merchant_id, policies.MERCHANT_WIDE, before=before)
    _cache(request).forget(caller.merchant_id)
    return await _policy_out(db, caller.merchant_id)


@router.put(
    "/v1/refund-policy/products/{product_id}",
    responses=documented(ApprovalRulesManagedByOwners, AutoApproveReasonNotAccepted, TooManyProductOverrides),
)
async def set_product_override(
    product_id: PathId,
    body: RefundPolicyOverride,
    caller: CurrentCaller,
    db: Db,
    settings: Settings,
    request: Request,
) -> RefundPolicyOut:
    """Set one product's exceptions: the fields given replace your policy's for that product. Once your merchant
    has an owner, an override's approval rules are as for your policy: a key keeps them as they are (403). A
    merchant has a limited number of overrides: a new one past it is 422 ``too_many_product_overrides``."""
    document = body.fields_set()
    async with db.transaction() as conn:
        await policies.lock_policies(conn, caller.merchant_id)
        await policies.check_room_for_override(
            conn, caller.merchant_id, product_id, max_overrides=settings.product_overrides_per_merchant
        )
        stored = await policies.product_override(conn, caller.merchant_id, product_id)
        await _check_approval_rules_kept(conn, caller.merchant_id, _stored_override(stored), document)
        before = await policies.auto_approve_reasons_left_out(conn, caller.merchant_id, product_id)
        await policies.save(conn, caller.merchant_id, product_id, document)
        await policies.check_saved(conn, caller.merchant_id, product_id, before=before)
    _cache(request).forget(caller.merchant_id)
    return await _policy_out(db, caller.merchant_id)


@router.delete(
    "/v1/refund-policy/products/{product_id}",
    responses=documented(PolicyOverrideNotFound, ApprovalRulesManagedByOwners),
)
async def delete_product_override(
    product_id: PathId, caller: CurrentCaller, db: Db, request: Request
) -> RefundPolicyOut:
    """Remove a product's override: your policy applies to it again. Once your merchant has an owner, an override
    holding an approval rule is removed by owners, in the dashboard (403)."""
    async with db.transaction() as conn:
        await policies.lock_policies(conn, caller.merchant_id)
        stored = await policies.product_override(conn, caller.merchant_id, product_id)
        await _check_approval_rules_kept(conn, caller.merchant_id, _stored_override(stored), None)
        if not await policies.delete_override(conn, caller.merchant_id, product_id):
            raise PolicyOverrideNotFound(f"no override for product {product_id}")
    _cache(request).forget(caller.merchant_id)
    return await _policy_out(db, caller.merchant_id)


async def _public_answer(db: Db, merchant_id: str, product_id: str | None) -> bytes | None:
    async with db.snapshot() as conn:
        merchant = await merchant_of(conn, merchant_id)
        if merchant is None:
            return None
        policy = await policies.effective_policy(conn, merchant_id, product_id)
    public = PublicRefundPolicy(
        merchant_id=merchant_id,
        product_id=product_id,
        refund_window_days=policy.refund_window_days,
        excluded_categories=policy.excluded_categories,
        accepted_reasons=[r.value for r in policy.accepted_reasons],
        process_time=policy.process_time,
        text=policy_text(policy, merchant["name"]),
    )
    return public.model_dump_json().encode()


_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "not modified since the ETag given"}}


@public_router.get(
    "/v1/public/merchants/{merchant_id}/refund-policy",
    response_model=PublicRefundPolicy,
    responses=documented(MerchantNotFound, authenticated=False) | _NOT_MODIFIED,
)
async def public_refund_policy(
    merchant_id: PathId,
    db: Db,
    now: Now,
    request: Request,
    product_id: QueryId = None,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """The policy customers see at checkout and on product pages (no authentication; approval rules stay
    private). Cacheable: ``Cache-Control: public, max-age`` and an ``ETag`` (``If-None-Match`` answers 304). A query
    parameter it does not take (a cache-buster such as ``?_=1700000000``) is ignored: the answer is the same."""
    cache = _cache(request)

    async def overridden() -> frozenset[str] | None:
        async with db.snapshot() as conn:
            return await policies.overridden_products(conn, merchant_id)

    async def body(product: str | None) -> bytes | None:
        return await _public_answer(db, merchant_id, product)

    answer = await cache.answer(merchant_id, product_id, now, "json", overridden=overridden, body=body)
    if answer is None:
        raise MerchantNotFound(f"no merchant {merchant_id}")
    headers = {"ETag": answer.etag, "Cache-Control": f"public, max-age={int(cache.max_age.total_seconds())}"}
    if still_fresh(answer.etag, if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)
