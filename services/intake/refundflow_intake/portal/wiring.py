"""The customer-facing pages in the intake app: the portal and the hosted policy, their static files and their
security headers (strict for the portal; the embeddable policy alone may be framed by other sites)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from refundflow_intake.page_headers import PageHeaderRule, PageHeaders
from refundflow_intake.portal import pages, policy_pages
from refundflow_intake.portal.rendering import FRAMEABLE_HEADERS, HEADERS, STATIC, render


def _is_customer_page(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in (pages.PREFIX, policy_pages.PREFIX))


def error_page(request: Request, status: int) -> Response | None:
    """An error on a customer page (a link too long, say), as a page that names nothing; None elsewhere."""
    path = request.url.path
    if not _is_customer_page(path) or path.endswith("/status"):
        return None
    if status == 503:  # the database busy with other changes to the same records (refundflow_shared.contention_retries)
        said = ["We could not take this in just now: please try again in a moment."]
        return render("message.html", heading="Busy right now", paragraphs=said, status_code=status)
    said = ["Open the link again from your email, or ask the seller for help."]
    return render("message.html", heading="This page cannot be shown", paragraphs=said, status_code=status)


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(policy_pages.router)
    app.mount(f"{pages.PREFIX}/static", StaticFiles(directory=STATIC), name="portal-static")

    app.add_middleware(PageHeaders, rule_for=_header_rule)


_NO_STORE = {"Cache-Control": "no-store"}  # a portal page holds the customer's link


def _header_rule(path: str) -> PageHeaderRule | None:
    if not _is_customer_page(path):
        return None
    if path.startswith(policy_pages.PREFIX + "/") and path.endswith("/embed"):
        return PageHeaderRule(FRAMEABLE_HEADERS)
    portal_page = path.startswith(pages.PREFIX + "/") and not path.startswith(f"{pages.PREFIX}/static/")
    return PageHeaderRule(HEADERS, _NO_STORE if portal_page else {})
