"""The refund policy editor: the merchant's policy, per-product overrides, and a live preview of the public text.
Saved through the same repository and models as ``PUT /v1/refund-policy``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Db, Settings
from refundflow_intake.api.errors import ApiError, status_of
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.pages import confirm_page, render, see_other
from refundflow_intake.dashboard.policy_form import override_from_form, policy_from_form, preview_text
from refundflow_intake.dashboard.policy_words import override_lines, threshold_warnings
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import (
    AutoApproveReasonNotAccepted,
    DomainError,
    PolicyOverrideNotFound,
    RefundReason,
    TooManyProductOverrides,
)
from refundflow_intake.portal.customer_words import policy_text
from refundflow_intake.public_policy_cache import PublicPolicyCache
from refundflow_intake.roles import Permission, require
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard/refund-policy", include_in_schema=False, route_class=RetriedRoute)


async def _page(
    request: Request,
    db: Db,
    user: SignedIn,
    *,
    error: str | DomainError | ApiError | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    async with db.snapshot() as conn:
        policy = await policies.merchant_policy(conn, user.merchant_id)
        overrides = await policies.overrides(conn, user.merchant_id)
        pending = await queries.pending_count(conn, user.merchant_id)
        currencies = await queries.currencies(conn, user.merchant_id)
    return render(
        request,
        "policy.html",
        user,
        section="policy",
        policy=policy,
        overrides={product: override_lines(override) for product, override in overrides.items()},
        reasons=[r.value for r in RefundReason],
        public_text=policy_text(policy, user.merchant_name),
        # A new threshold is offered in the currency most payments are in (EUR before the first payment).
        main_currency=currencies[0] if currencies else "EUR",
        threshold_warnings=threshold_warnings(policy, currencies),
        error=error,
        error_field=error_field,
        status_code=status,
        pending_badge=pending,
    )


def _forget_public_copy(request: Request, merchant_id: str) -> None:
    cache: PublicPolicyCache = request.app.state.public_policy_cache
    cache.forget(merchant_id)


@router.get("")
async def policy_page(request: Request, user: CurrentUser, db: Db) -> HTMLResponse:
    return await _page(request, db, user)


@router.post("/preview")
async def preview(request: Request, user: FormUser) -> JSONResponse:
    try:
        return JSONResponse({"text": preview_text(await request.form(), user.merchant_name)})
    except DomainError as exc:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=422)


@router.post("")
async def save_policy(request: Request, user: FormUser, db: Db) -> Response:
    try:
        require(user.role, Permission.MANAGE_POLICY)
        fields = policy_from_form(await request.form())
        async with db.transaction() as conn:
            await policies.lock_policies(conn, user.merchant_id)
            before = await policies.auto_approve_reasons_left_out(conn, user.merchant_id, policies.MERCHANT_WIDE)
            await policies.save(conn, user.merchant_id, policies.MERCHANT_WIDE, fields.model_dump(mode="json"))
            await policies.check_saved(conn, user.merchant_id, policies.MERCHANT_WIDE, before=before)
    except DomainError as exc:
        where = "auto_approve_reasons" if isinstance(exc, AutoApproveReasonNotAccepted) else None
        return await _page(request, db, user, error=exc, error_field=where, status=status_of(type(exc)))
    _forget_public_copy(request, user.merchant_id)
    return see_other("/dashboard/refund-policy?done=saved")


@router.post("/overrides")
async def save_override(request: Request, user: FormUser, db: Db, settings: Settings) -> Response:
    try:
        require(user.role, Permission.MANAGE_POLICY)
        product_id, override = override_from_form(await request.form())
        async with db.transaction() as conn:
            await policies.lock_policies(conn, user.merchant_id)
            await policies.check_room_for_override(
                conn, user.merchant_id, product_id, max_overrides=settings.product_overrides_per_merchant
            )
            before = await policies.auto_approve_reasons_left_out(conn, user.merchant_id, product_id)
            await policies.change_override(conn, user.merchant_id, product_id, override.fields_set())
            await policies.check_saved(conn, user.merchant_id, product_id, before=before)
    except DomainError as exc:
        where = "product_id" if isinstance(exc, TooManyProductOverrides) else None
        return await _page(request, db, user, error=exc, error_field=where, status=status_of(type(exc)))
    _forget_public_copy(request, user.merchant_id)
    return see_other("/dashboard/refund-policy?done=saved")


@router.get("/overrides/delete")
async def confirm_delete_override(request: Request, user: CurrentUser, db: Db, product_id: str = "") -> HTMLResponse:
    require(user.role, Permission.MANAGE_POLICY)
    async with db.snapshot() as conn:
        override = await policies.product_override(conn, user.merchant_id, product_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    if override is None:
        raise PolicyOverrideNotFound(f"no override for product {product_id}")
    return confirm_page(
        request,
        user,
        section="policy",
        question=f"Remove the override for product {product_id}?",
        consequence=(
            "Its refunds follow your merchant-wide policy from then on. To give it rules of its own, add them again."
        ),
        verb="Remove override",
        action="/dashboard/refund-policy/overrides/delete",
        back="/dashboard/refund-policy",
        pending_badge=pending,
        fields={"product_id": product_id},
    )


@router.post("/overrides/delete")
async def delete_override(request: Request, user: FormUser, db: Db) -> Response:
    product_id = str((await request.form()).get("product_id", ""))[:255]
    try:
        require(user.role, Permission.MANAGE_POLICY)
        async with db.transaction() as conn:
            await policies.lock_policies(conn, user.merchant_id)
            if not await policies.delete_override(conn, user.merchant_id, product_id):
                raise PolicyOverrideNotFound(f"no override for product {product_id}")
    except DomainError as exc:
        return await _page(request, db, user, error=exc, status=status_of(type(exc)))
    _forget_public_copy(request, user.merchant_id)
    return see_other("/dashboard/refund-policy?done=removed")
