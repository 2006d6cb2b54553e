"""The merchant's refund policy as a page customers can read (``/policy/{merchant_id}``), and a compact version
merchants embed in their checkout and product pages (``/policy/{merchant_id}/embed``, the one page any site may
frame). No sign-in; cached as the JSON policy is (``Cache-Control``, ``ETag``, 304 for ``If-None-Match``)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Header, Path, Query, Request, Response

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Db, Now
from refundflow_intake.api.fields import MAX_ID
from refundflow_intake.portal import customer_words
from refundflow_intake.portal.customer_requests import merchant_of
from refundflow_intake.portal.rendering import render, render_fragment
from refundflow_intake.public_policy_cache import PublicPolicyCache, still_fresh
from refundflow_shared.contention_retries import RetriedRoute

PREFIX = "/policy"
router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=RetriedRoute)
MerchantId = Annotated[str, Path(max_length=MAX_ID)]
ProductId = Annotated[str | None, Query(max_length=MAX_ID)]
IfNoneMatch = Annotated[str | None, Header(max_length=1000)]


def policy_path(merchant_id: str, product_id: str | None = None) -> str:
    """The policy's own page, the product's when it has one (its override applies): the link every page gives."""
    query = f"?{urlencode({'product_id': product_id})}" if product_id else ""
    return f"{PREFIX}/{quote(merchant_id, safe='')}{query}"


def embed_snippet(public_url: str, merchant_id: str, merchant_name: str) -> str:
    """What a merchant pastes into a checkout or product page (its parts escaped: names may hold quotes)."""
    src = escape(f"{public_url.rstrip('/')}{PREFIX}/{quote(merchant_id)}/embed")
    return (
        f'<iframe src="{src}" title="Refund policy of {escape(merchant_name)}"'
        ' width="100%" height="280" style="border:0" loading="lazy"></iframe>'
    )


async def _body(db: Db, merchant_id: str, product_id: str | None, template: str) -> bytes | None:
    async with db.snapshot() as conn:
        merchant = await merchant_of(conn, merchant_id)
        if merchant is None:
            return None
        policy = await policies.effective_policy(conn, merchant_id, product_id)
    name = merchant["name"]
    html = render_fragment(
        template,
        merchant_name=name,
        merchant_id=merchant_id,
        points=customer_words.policy_points(policy, name),
        policy_url=policy_path(merchant_id, product_id),
    )
    return html.encode()


async def _answer(
    request: Request,
    db: Db,
    now: datetime,
    merchant_id: str,
    product_id: str | None,
    if_none_match: str | None,
    *,
    form: str,
) -> Response:
    cache: PublicPolicyCache = request.app.state.public_policy_cache

    async def overridden() -> frozenset[str] | None:
        async with db.snapshot() as conn:
            return await policies.overridden_products(conn, merchant_id)

    async def body(product: str | None) -> bytes | None:
        return await _body(db, merchant_id, product, f"{form}.html")

    answer = await cache.answer(merchant_id, product_id, now, form, overridden=overridden, body=body)
    if answer is None:
        said = ["There is no seller with this address. Check the link, or ask the seller for theirs."]
        return render("message.html", heading="No refund policy here", paragraphs=said, status_code=404)
    headers = {"ETag": answer.etag, "Cache-Control": f"public, max-age={int(cache.max_age.total_seconds())}"}
    if still_fresh(answer.etag, if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/{merchant_id}")
async def policy_page(
    request: Request,
    merchant_id: MerchantId,
    db: Db,
    now: Now,
    product_id: ProductId = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    return await _answer(request, db, now, merchant_id, product_id, if_none_match, form="policy")


@router.get("/{merchant_id}/embed")
async def embedded_policy(
    request: Request,
    merchant_id: MerchantId,
    db: Db,
    now: Now,
    product_id: ProductId = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    return await _answer(request, db, now, merchant_id, product_id, if_none_match, form="policy_embed")
