"""The customer-facing pages in the intake app: the portal and the hosted policy, their static files and their
security headers (strict for the portal; the embeddable policy alone may be framed by other sites)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from refundflow_intake.portal import pages, policy_pages
from refundflow_intake.portal.rendering import FRAMEABLE_HEADERS, HEADERS, STATIC, render


def _is_customer_page(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in (pages.PREFIX, policy_pages.PREFIX))


def error_page(request: Request, status: int) -> Response | None:
    """An error on a customer page (a link too long, say), as a page that names nothing; None elsewhere."""
    path = request.url.path
    if not _is_customer_page(path) or path.endswith("/status"):
        return None
    said = ["Open the link again from your email, or reply to that email for help."]
    return render("message.html", heading="This page cannot be shown", paragraphs=said, status_code=status)


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(policy_pages.router)
    app.mount(f"{pages.PREFIX}/static", StaticFiles(directory=STATIC), name="portal-static")

    @app.middleware("http")
    async def customer_page_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        path = request.url.path
        if not _is_customer_page(path):
            return response
        frameable = path.startswith(policy_pages.PREFIX + "/") and path.endswith("/embed")
        for name, value in (FRAMEABLE_HEADERS if frameable else HEADERS).items():
            response.headers.setdefault(name, value)
        if path.startswith(pages.PREFIX + "/") and not path.startswith(f"{pages.PREFIX}/static/"):
            response.headers["Cache-Control"] = "no-store"  # the page holds the customer's link
        return response
