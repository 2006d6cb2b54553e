"""The portal's pages: the payment a customer's link opens, the form to ask for a refund, and the request's status
as it changes. Thin: ``customer_requests`` holds what they do (the same as the portal's JSON API), and
``customer_words`` what the customer reads."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from refundflow_intake.api.dependencies import Db, Now, Settings, ToCustomer
from refundflow_intake.api.errors import status_of
from refundflow_intake.dashboard import auth
from refundflow_intake.dashboard.money_text import major_units, parse_amount
from refundflow_intake.dashboard.typed_text import TypedText, as_typed, too_long
from refundflow_intake.domain import (
    DomainError,
    InvalidAmount,
    PaymentNotFound,
    PortalDisabled,
    RefundReason,
    holds_control_characters,
)
from refundflow_intake.portal import customer_requests, customer_words, tokens
from refundflow_intake.portal.customer_requests import Ask, Portal
from refundflow_intake.portal.policy_pages import policy_path
from refundflow_intake.portal.rendering import render, render_fragment
from refundflow_intake.portal.tokens import InvalidPortalToken, PortalGrant, PortalTokenExpired
from refundflow_intake.rate_limit import RateLimited, client_bucket
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.money import format_amount, minor_unit_exponent
from refundflow_shared.stripe_amounts import stripe_step

PREFIX = "/portal"
router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=RetriedRoute)
Token = Annotated[str, Path(max_length=2000)]
RefundId = Annotated[str, Path(max_length=255)]
Short = Annotated[str, Form(max_length=100)]


def _grant(settings: IntakeSettings, token: str, now: datetime) -> PortalGrant | HTMLResponse:
    """The payment the link opens, or the page that says (without a word about any payment) why it opens none."""
    try:
        return tokens.verify(settings.portal_secret(), token, now)
    except PortalTokenExpired:
        said = [
            "For your security, links to this page work for a limited time, and this one has expired.",
            "Every email about your purchase carries a fresh link: open the latest one, or ask the seller for a new"
            " link.",
        ]
        return render("message.html", heading="This link has expired", paragraphs=said, status_code=410)
    except InvalidPortalToken:
        return _no_such_link()


def _no_such_link() -> HTMLResponse:
    said = ["It may have been copied incompletely. Open it again from your email, or ask the seller for help."]
    return render("message.html", heading="This link does not work", paragraphs=said, status_code=404)


def _portal_off(portal: Portal, status_code: int = 200) -> HTMLResponse:
    # Without their reply-to, a reply to their emails reaches the platform's mailbox, not them.
    contact = f" Write to them at {portal.contact}." if portal.contact else " Please contact them directly."
    said = [f"{portal.merchant_name} does not take refund requests online at the moment.{contact}"]
    return render(
        "message.html",
        merchant_name=portal.merchant_name,
        heading="Online refund requests are closed",
        paragraphs=said,
        policy_url=policy_path(portal.merchant_id, portal.payment["product_id"]),
        status_code=status_code,
    )


def _requests(token: str, portal: Portal) -> list[dict[str, Any]]:
    return [
        {
            **refund,
            "state": customer_words.status_of(
                refund,
                merchant=portal.merchant_name,
                process_time=portal.policy.process_time,
                subscription_cancelled=portal.payment["subscription_canceled_at"] is not None,
                subscription_ended=portal.payment["subscription_ended"],
                access_until=portal.payment["subscription_access_until"],
            ),
            "cancel_wish_left": customer_words.cancel_wish_left(
                refund, merchant=portal.merchant_name, subscription_runs=portal.subscription_runs
            ),
            "moments": customer_words.timeline(refund, refund["timeline"], merchant=portal.merchant_name),
            "status_url": f"{PREFIX}/{token}/requests/{refund['id']}/status",
        }
        for refund in portal.requests
    ]


def _page(
    request: Request,
    settings: IntakeSettings,
    token: str,
    portal: Portal,
    now: datetime,
    *,
    error: str | None = None,
    error_field: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    cookie = Response()
    csrf = auth.pre_session(request, cookie, settings, path=PREFIX)
    payment = portal.payment
    eligible = customer_words.eligibility(
        portal.policy,
        paid_at=payment["paid_at"],
        now=now,
        category=payment["product_category"],
        merchant=portal.merchant_name,
    )
    page = render(
        "portal.html",
        merchant_name=portal.merchant_name,
        policy_url=policy_path(portal.merchant_id, payment["product_id"]),
        token=token,
        csrf_token=csrf,
        form_key=secrets.token_urlsafe(18),  # each page's form is sent once: see ask_for_refund
        payment=payment,
        requests=_requests(token, portal),
        can_ask=portal.open_request is None and portal.refundable > 0 and not portal.disputed,
        has_open_request=portal.open_request is not None,
        refundable=portal.refundable,
        disputed=portal.disputed,
        eligible=eligible,
        policy_points=customer_words.policy_points(portal.policy, portal.merchant_name),
        reasons=customer_words.reason_choices(portal.policy),
        sent=request.query_params.get("sent") == "1",
        error=error,
        error_field=error_field,
        form=form or {},
        status_code=status_code,
    )
    page.raw_headers.extend(h for h in cookie.raw_headers if h[0] == b"set-cookie")
    return page


async def _open(db: Db, grant: PortalGrant) -> Portal | None:
    async with db.snapshot() as conn:
        try:
            return await customer_requests.open_portal(conn, grant)
        except PaymentNotFound:
            return None


@router.get("/{token}")
async def portal_page(request: Request, token: Token, db: Db, now: Now, settings: Settings) -> Response:
    grant = _grant(settings, token, now)
    if isinstance(grant, HTMLResponse):
        return grant
    portal = await _open(db, grant)
    if portal is None:
        return _no_such_link()
    if not portal.enabled:
        return _portal_off(portal)
    return _page(request, settings, token, portal, now)


@router.post("/{token}/requests")
async def ask_for_refund(
    request: Request,
    token: Token,
    db: Db,
    now: Now,
    settings: Settings,
    links: ToCustomer,
    csrf_token: Short = "",
    reason: Short = "",
    details: TypedText = "",
    amount: Short = "",
    subscription: Short = "",
    form_key: Short = "",
) -> Response:
    grant = _grant(settings, token, now)
    if isinstance(grant, HTMLResponse):
        return grant
    portal = await _open(db, grant)
    if portal is None:
        return _no_such_link()
    details = as_typed(details)
    form = {"reason": reason, "details": details, "amount": amount, "subscription": subscription}
    try:
        if not auth.pre_session_matches(request, settings, csrf_token):
            raise _Refused("This page was open for too long. Please check your request and send it again.", 403)
        ask = _ask(portal, reason, details, amount, subscription)
        client = client_bucket(request)
        await customer_requests.submit_request(
            db, grant, ask, settings=settings, links=links, client=client, now=now, form_key=form_key or None
        )
    except PortalDisabled:
        return _portal_off(portal, status_code=409)
    except _Refused as refused:
        return _page(
            request,
            settings,
            token,
            portal,
            now,
            error=refused.message,
            error_field=refused.field,
            form=form,
            status_code=refused.status,
        )
    except DomainError as exc:
        page = _page(
            request,
            settings,
            token,
            portal,
            now,
            error=_in_words(exc, portal),
            error_field=_FIELD_IN_ERROR.get(exc.code),
            form=form,
            status_code=status_of(type(exc)),
        )
        if isinstance(exc, RateLimited):
            page.headers["Retry-After"] = str(exc.retry_after_seconds)
        return page
    # To the notice itself: the browser shows it, and it takes the focus (a fragment elsewhere would deny it that).
    return RedirectResponse(f"{PREFIX}/{token}?sent=1#request-sent", status_code=303)


@router.get("/{token}/requests")
async def form_address(token: Token) -> RedirectResponse:
    """A page answering the form has the form's address: reloaded or opened again, it leads to the page."""
    return RedirectResponse(f"{PREFIX}/{quote(token, safe='')}", status_code=303)


@router.get("/{token}/requests/{refund_id}/status")
async def request_status(token: Token, refund_id: RefundId, db: Db, now: Now, settings: Settings) -> JSONResponse:
    """What the page polls while a request is open: its status and timeline, in the customer's words, and the
    payment's facts (refunded so far, the subscription), which change with it."""
    try:
        grant = tokens.verify(settings.portal_secret(), token, now)
        portal = await _open(db, grant)
        refund = next((r for r in _requests(token, portal) if r["id"] == refund_id), None) if portal else None
    except InvalidPortalToken as exc:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=401)
    if refund is None:
        return JSONResponse({"error": {"code": "refund_not_found", "message": "no such request"}}, status_code=404)
    state = refund["state"]
    body = {"status": state.key, "label": state.label, "final": state.final}
    html = render_fragment("_request.html", request=refund, merchant_name=portal.merchant_name if portal else "")
    payment_html = render_fragment("_payment_facts.html", payment=portal.payment) if portal else ""
    return JSONResponse({**body, "html": html, "payment_html": payment_html}, headers={"Cache-Control": "no-store"})


def _enter_an_amount(currency: str) -> str:
    """Asked again for an amount, with an example as typed in the payment's currency (no decimals in yen) and one
    the provider can refund (whole ariary: 13.00 MGA)."""
    exponent = minor_unit_exponent(currency)
    example = 1500 if exponent == 0 else 125 * 10 ** (exponent - 1)  # 1500 yen, 12.50 €, 12.500 KWD
    step = stripe_step(currency)
    shown = major_units(-(-example // step) * step, currency)
    return f"Enter an amount such as {shown}, or leave it empty to ask for everything."


class _Refused(Exception):
    """The form asked again: why, and the field to correct (None: the form as a whole)."""

    def __init__(self, message: str, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.field = message, status, field


def _ask(portal: Portal, reason: str, details: str, amount: str, subscription: str) -> Ask:
    try:
        chosen = RefundReason(reason)
    except ValueError:
        raise _Refused("Please choose the reason for your request.", field="reason") from None
    if said := too_long("What happened", details):
        raise _Refused(said, field="details")
    if holds_control_characters(details):  # before any attempt counts: nothing else would refuse it before the INSERT
        said = "What happened? holds a character that is not text (a control character): please remove it."
        raise _Refused(said, field="details")
    try:
        money = parse_amount(amount, portal.payment["currency"]) if amount.strip() else None
    except InvalidAmount:
        raise _Refused(_enter_an_amount(portal.payment["currency"]), field="amount") from None
    running = portal.payment["subscription_id"] and not portal.payment["subscription_canceled_at"]
    wish = {"cancel": True, "keep": False}.get(subscription) if running else None
    if running and wish is None:  # a choice with consequences: nobody makes it for the customer
        raise _Refused("Please choose whether to keep your subscription or cancel it.", field="subscription")
    return Ask(chosen, details, money, wish)


# The field a rule's refusal is about; the others are about the request as a whole.
_FIELD_IN_ERROR = {
    "refund_exceeds_refundable": "amount",
    "invalid_amount": "amount",
    "amount_not_representable": "amount",
    "reason_details_required": "details",
}


def _in_words(exc: DomainError, portal: Portal) -> str:
    """A rule's answer, for the customer."""
    currency = portal.payment["currency"]
    left = format_amount(portal.refundable, currency)
    step = format_amount(stripe_step(currency), currency)
    words = {
        "open_request_exists": f"You already have a request waiting for {portal.merchant_name}'s decision.",
        "refund_exceeds_refundable": f"That is more than can still be refunded on this payment: at most {left}.",
        "invalid_amount": _enter_an_amount(portal.payment["currency"]),  # 0 typed: read, but no amount
        "amount_not_representable": f"{currency} can only be refunded in steps of {step}: please enter such an"
        " amount, or leave it empty to ask for everything.",
        "reason_details_required": "With “Something else”, please tell us what happened in the details.",
        "payment_disputed": "This payment is disputed with your bank: its refund goes through that dispute.",
        "rate_limited": "Too many attempts in a short time. Please try again in a while.",
        # The same page's form sent again with other answers (back, changed, sent): the first one stands.
        "idempotency_key_reused": "This form was already sent, with other answers: your request is on this page."
        " To ask for something more, check the form and send it again.",
    }
    return words.get(exc.code, f"This request cannot be sent online. Please contact {portal.merchant_name}.")
