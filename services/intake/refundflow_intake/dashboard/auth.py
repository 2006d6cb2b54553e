"""Who is signed in, and that a form really comes from the page we served them.

- Sessions: an HttpOnly, SameSite=Lax cookie (Secure unless ``DASHBOARD_COOKIE_SECURE=false``, for a local run
  over plain http) holding a random id; see ``dashboard_sessions``.
- CSRF: every form carries a synchronizer token. Signed in, it is the session's own token. Before sign-in (the
  sign-in, invite and reset forms) it is an HMAC of a random pre-session cookie, so a login form cannot be
  posted from another site either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request, Response

from refundflow_intake import dashboard_sessions
from refundflow_intake.api.dependencies import Db, Now, Settings
from refundflow_intake.dashboard_sessions import CsrfRejected, SignedIn

SESSION_COOKIE = "rf_session"
PRE_SESSION_COOKIE = "rf_pre"
COOKIE_PATH = "/dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    """No (live) session: pages redirect to the sign-in page, JSON answers 401."""


async def optional_user(request: Request, db: Db, now: Now) -> SignedIn | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    async with db.connection() as conn:
        user = await dashboard_sessions.signed_in(conn, session_id, now=now)
    request.state.dashboard_user = user  # error pages show the sidebar to a signed-in person
    return user


async def signed_in_user(user: Annotated[SignedIn | None, Depends(optional_user)]) -> SignedIn:
    if user is None:
        raise SignInRequired()
    return user


CurrentUser = Annotated[SignedIn, Depends(signed_in_user)]
MaybeUser = Annotated[SignedIn | None, Depends(optional_user)]


async def checked_user(request: Request, user: CurrentUser) -> SignedIn:
    """The signed-in user, once the form's (or the fetch's header) CSRF token is theirs."""
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        token = field if isinstance(field, str) else None
    if not user.csrf_matches(token):
        raise CsrfRejected("this form has expired or did not come from this dashboard: reload the page and try again")
    return user


FormUser = Annotated[SignedIn, Depends(checked_user)]


def pre_session_token(settings: Settings, pre_session: str) -> str:
    return hmac.new(settings.dashboard_secret(), f"csrf:{pre_session}".encode(), hashlib.sha256).hexdigest()


def pre_session(request: Request, response: Response, settings: Settings, *, path: str = COOKIE_PATH) -> str:
    """The CSRF token of a form shown before sign-in (or with no sign-in at all: the customer portal, under its
    own ``path``); sets the pre-session cookie when there is none."""
    nonce = request.cookies.get(PRE_SESSION_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = secrets.token_urlsafe(24)
        response.set_cookie(
            PRE_SESSION_COOKIE,
            nonce,
            max_age=2 * 3600,
            path=path,
            httponly=True,
            samesite="lax",
            secure=settings.dashboard_cookie_secure,
        )
    return pre_session_token(settings, nonce)


def pre_session_matches(request: Request, settings: Settings, csrf: str) -> bool:
    nonce = request.cookies.get(PRE_SESSION_COOKIE)
    expected = pre_session_token(settings, nonce) if nonce else None
    return expected is not None and hmac.compare_digest(csrf.encode(), expected.encode())


async def check_pre_session(
    request: Request, settings: Settings, csrf: Annotated[str, Form(alias=CSRF_FIELD)] = ""
) -> None:
    if not pre_session_matches(request, settings, csrf):
        raise CsrfRejected("this form has expired or did not come from this dashboard: reload the page and try again")


PreSessionChecked = Depends(check_pre_session)


def set_session_cookie(response: Response, settings: Settings, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=settings.dashboard_session_hours * 3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.dashboard_cookie_secure,
    )
    response.delete_cookie(PRE_SESSION_COOKIE, path=COOKIE_PATH)


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=settings.dashboard_cookie_secure
    )


def login_url(next_path: str) -> str:
    return f"/dashboard/login?next={quote(next_path, safe='/')}"


def safe_next(next_path: str | None) -> str:
    """Where to go after sign-in: a dashboard path of ours only, never another site."""
    if next_path and next_path.startswith("/dashboard/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return "/dashboard/payments"
