"""The dashboard in the intake app: its routes, its static files, its error pages and its security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from refundflow_intake.api.dependencies import get_database
from refundflow_intake.dashboard import (
    auth,
    email_preview_pages,
    insight_pages,
    money_pages,
    payment_pages,
    policy_pages,
    queries,
    refund_pages,
    refund_queue_pages,
    settings_pages,
    sign_in,
    team_pages,
    webhook_pages,
)
from refundflow_intake.dashboard.pages import render
from refundflow_intake.page_headers import PageHeaderRule, PageHeaders
from refundflow_intake.passwords import PasswordChecksBusy
from refundflow_shared.contention_retries import DatabaseBusy

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard"
_HEADINGS = {
    401: "Please sign in",
    403: "Not allowed",
    404: "Page not found",
    409: "That cannot be done now",
    410: "No longer available",
    422: "Please check what you entered",
    429: "Too many attempts",
}
# Scripts and styles come from intake only; no page may be framed; forms post to intake only.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # one-time links live in URLs: never leak them to another site
}


def is_dashboard(request: Request) -> bool:
    return _is_dashboard_path(request.url.path)


def _is_dashboard_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def wants_json(request: Request) -> bool:
    """The page's own scripts (they send the CSRF header, or poll a status) read JSON; people read pages."""
    return auth.CSRF_HEADER in request.headers or request.url.path.endswith("/status")


async def error_page(request: Request, status: int, code: str, message: str) -> Response:
    """An error of the dashboard's, as a page (or JSON for its scripts), with the API's code; to a signed-in person,
    in the frame of every page, the sidebar's count of pending requests included."""
    if wants_json(request):
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
    user = getattr(request.state, "dashboard_user", None)
    pending = None
    if user is not None and status < 500:  # a 5xx may be the database failing: its page asks the database nothing
        async with (await get_database(request)).connection() as conn:
            pending = await queries.pending_count(conn, user.merchant_id)
    heading = _HEADINGS.get(status, "Something went wrong")
    if status == 404:
        message = "There is nothing here, or it belongs to another account."
    if code == PasswordChecksBusy.code:
        heading = "Busy right now"
    if code == DatabaseBusy.code:
        heading = "Busy right now"
        message = "Other changes to the same records were being made at that moment: please try again in a moment."
    return render(
        request,
        "error.html",
        user,
        heading=heading,
        message=message,
        code=code,
        status_code=status,
        section=None,
        pending_badge=pending,
    )


def install(app: FastAPI) -> None:
    for module in (
        sign_in,
        payment_pages,
        refund_queue_pages,
        refund_pages,
        money_pages,
        insight_pages,
        policy_pages,
        webhook_pages,
        team_pages,
        settings_pages,
        email_preview_pages,
    ):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.exception_handler(auth.SignInRequired)
    async def sign_in_first(request: Request, _: auth.SignInRequired) -> Response:
        if wants_json(request):
            return JSONResponse({"error": {"code": "unauthorized", "message": "sign in first"}}, status_code=401)
        back_to = request.url.path if request.method == "GET" else "/dashboard/payments"
        return RedirectResponse(auth.login_url(back_to), status_code=303)

    app.add_middleware(PageHeaders, rule_for=_header_rule)


_PAGE_RULE = PageHeaderRule(_HEADERS, {"Cache-Control": "no-store"})
_STATIC_RULE = PageHeaderRule(_HEADERS)


def _header_rule(path: str) -> PageHeaderRule | None:
    if not _is_dashboard_path(path):
        return None
    return _STATIC_RULE if path.startswith(f"{PREFIX}/static/") else _PAGE_RULE
