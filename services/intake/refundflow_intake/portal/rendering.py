"""Rendering the customer-facing pages (the portal, the hosted policy): one Jinja environment, autoescaped, with
the filters they share; and the security headers every one of them gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from refundflow_intake.portal.customer_words import day, when
from refundflow_shared.money import format_amount

TEMPLATES = Path(__file__).parent / "templates"
REFUSALS = Path(__file__).parent.parent / "templates"  # how a refused form is said, as in the dashboard
STATIC = Path(__file__).parent / "static"

_env = Environment(
    loader=FileSystemLoader([TEMPLATES, REFUSALS]),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


_env.filters |= {"money": format_amount, "day": day, "when": when}

# The portal's pages hold a credential in their URL: no other site may frame them, read their address (referrer)
# or cache them. The embeddable policy replaces frame-ancestors with its own answer.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": _CSP + "; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Merchants put the embeddable policy on their checkout and product pages, wherever those are served from.
FRAMEABLE_HEADERS = {
    "Content-Security-Policy": _CSP + "; frame-ancestors *",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def render_fragment(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def render(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render_fragment(template, **context), status_code=status_code)
