"""Rendering dashboard pages: one Jinja environment (autoescaped), the filters pages share, and the frame every
page gets (who is signed in, the CSRF token, the sidebar)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from refundflow_intake.api.errors import ApiError
from refundflow_intake.dashboard.money_text import major_units
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import DomainError
from refundflow_intake.roles import Permission, allows
from refundflow_shared.money import format_amount, minor_unit_exponent

TEMPLATES = Path(__file__).parent / "templates"
REFUSALS = Path(__file__).parent.parent / "templates"  # how a refused form is said, as in the customer portal

SIDEBAR = (
    ("payments", "Payments", "/dashboard/payments"),
    ("refunds", "Refunds", "/dashboard/refunds"),
    ("balance", "Balance", "/dashboard/balance"),
    ("insights", "Insights", "/dashboard/insights"),
    ("policy", "Refund policy", "/dashboard/refund-policy"),
    ("webhooks", "Webhooks", "/dashboard/webhooks"),
    ("team", "Team", "/dashboard/team"),
    ("settings", "Settings", "/dashboard/settings"),
)

STATUS_LABELS = {
    "pending": "Pending",
    "processing": "Processing",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "rejected": "Rejected",
    "reversed": "Reversed",
    "paid": "Paid",
    "partially_refunded": "Partially refunded",
    "refunded": "Refunded",
    "disputed": "Disputed",
}


# What a form that succeeded says on the page it leads to (``?done=<key>``): fixed words, nothing from the URL.
NOTICES = {
    "approved": "Approved. The refund is on its way to the payment provider.",
    "approval_recorded": (
        "Your approval is recorded. Another person must approve the same amount and subscription choice."
    ),
    "rejected": "Rejected. The customer is told, with your note.",
    "rejected_without_note": "Rejected. The customer is told, with no note from you.",
    "rejected_untold": "Rejected. The customer is not told: you made this refund yourself, they asked for nothing.",
    "cancel_only": "The subscription will end at the close of its period; no money moves.",
    "cancel_only_not_asked": (
        "Closed as cancel only; no money moves. The subscription had ended or was set to end already, so no"
        " cancellation was asked again."
    ),
    "cancel_asked": "Cancellation asked of the provider. The customer is emailed once it is done.",
    "cancel_not_asked": (
        "Nothing new was asked: this cancellation was asked already, or the subscription has ended or is set to end."
    ),
    "saved": "Saved.",
    "removed": "Removed.",
    "role_changed": "Role changed. It applies from their next click.",
    "password_set": "Your password is set. Welcome!",
    "replayed": "Replay scheduled.",
    "not_replayed": "Nothing was scheduled: the endpoint is disabled, and nothing is sent to it. Enable it first.",
    "signed_out": "You are signed out.",
    "reset_sent": "If an account exists for that address, a link to reset its password is on its way.",
}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC") if value else "—"


def _day(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%d %b %Y") if value else "—"


def _words(value: str | None) -> str:
    return (value or "").replace("_", " ").capitalize()


_env = Environment(
    loader=FileSystemLoader([TEMPLATES, REFUSALS]),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters |= {
    "money": format_amount,
    "exponent": minor_unit_exponent,
    "major": major_units,
    "when": _when,
    "day": _day,
    "words": _words,
    "status_label": lambda s: STATUS_LABELS.get(s, _words(s)),
}


def render(
    request: Request,
    template: str,
    user: SignedIn | None,
    *,
    section: str | None = None,
    status_code: int = 200,
    error: str | DomainError | ApiError | None = None,
    error_field: str | None = None,
    notice: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page in the dashboard's frame. ``error`` is said in words next to ``error_field`` (the id of the field it
    is about, which takes the focus), or at the top when it is about none; a domain error also shows its code, the
    same as the API's. ``notice`` shows at the top."""
    error_code = error.code if isinstance(error, DomainError | ApiError) else None
    if isinstance(error, DomainError | ApiError):
        error = error.message
    can = {p.value: bool(user and allows(user.role, p)) for p in Permission}
    html = _env.get_template(template).render(
        user=user,
        can=can,
        csrf_token=user.csrf_token if user else context.pop("csrf_token", ""),
        sidebar=SIDEBAR,
        section=section,
        error=error,
        error_code=error_code,
        error_field=error_field if error else None,
        notice=notice or NOTICES.get(request.query_params.get("done", "")),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def confirm_page(
    request: Request,
    user: SignedIn,
    *,
    section: str,
    question: str,
    consequence: str,
    verb: str,
    action: str,
    back: str,
    pending_badge: int,
    fields: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page asking before what cannot be undone: the table's button leads here (a GET, which changes nothing),
    and this page's button posts ``fields`` to ``action`` as the table's form did; Keep goes ``back``."""
    return render(
        request,
        "confirm.html",
        user,
        section=section,
        question=question,
        consequence=consequence,
        verb=verb,
        action=action,
        back=back,
        fields=fields or {},
        pending_badge=pending_badge,
    )


def render_fragment(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def see_other(url: str) -> RedirectResponse:
    """After a form succeeded: the browser GETs the page again (a reload does not post twice)."""
    return RedirectResponse(url, status_code=303)
