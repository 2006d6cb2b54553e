"""What the merchant's customers receive: every customer email, rendered by the notifier's own templates (through
its internal API) with the merchant's name, settings and refund policy. Shown on the Settings page; each email's
HTML on a page of its own, framed there, that runs nothing and loads nothing."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Db, Settings
from refundflow_intake.api.errors import ApiError
from refundflow_intake.dashboard.auth import CurrentUser
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.notifier_client import NotifierClient, NotifierLinkSettings, NotifierUnavailable
from refundflow_intake.portal.links import PORTAL_PATH, CustomerLinks
from refundflow_shared.contention_retries import RetriedRoute

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/dashboard/settings/email-previews", include_in_schema=False, route_class=RetriedRoute)
Kind = Annotated[str, Path(max_length=60, pattern=r"^[a-z_]+$")]
# The email's own inline styles, nothing else: no script, no request anywhere, framed by the Settings page only
# (which frames it sandboxed, too).
_PREVIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
}


async def email_previews(request: Request, db: Db, settings: Settings, user: SignedIn) -> list[dict[str, str]]:
    """The previews, or an empty list when the notifier cannot answer now (the page says so)."""
    async with db.connection() as conn:
        policy = await policies.merchant_policy(conn, user.merchant_id)
    links: CustomerLinks = request.app.state.customer_links
    link: NotifierLinkSettings = getattr(request.app.state, "notifier_link", None) or NotifierLinkSettings()
    client = NotifierClient(link.notifier_url, settings.refundflow_internal_token, link.notifier_timeout_seconds)
    try:
        return await client.email_previews(
            user.merchant_id,
            merchant_name=user.merchant_name,
            process_time=policy.process_time,
            portal_url=f"{links.public_url}{PORTAL_PATH}/pt_the-customers-own-link",
        )
    except NotifierUnavailable as exc:
        log.warning("email_previews_unavailable", error=str(exc))
        return []


@router.get("/{kind}")
async def email_preview(request: Request, kind: Kind, user: CurrentUser, db: Db, settings: Settings) -> HTMLResponse:
    found = next((p for p in await email_previews(request, db, settings, user) if p["kind"] == kind), None)
    if found is None:
        raise ApiError(404, "not_found", f"no email preview {kind}")
    return HTMLResponse(found["html"], headers=_PREVIEW_HEADERS)
