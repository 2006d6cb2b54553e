from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from refundflow_shared.events import LINK_MARGIN
from refundflow_shared.settings import REFUND_PATH_FETCH_MAX_WAIT_MS, FetchMaxWaitMs, ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8000
    consumer_fetch_max_wait_ms: FetchMaxWaitMs = REFUND_PATH_FETCH_MAX_WAIT_MS
    refundflow_admin_token: SecretStr
    refundflow_portal_secret: SecretStr | None = Field(
        default=None, description="signs portal tokens; derived from the admin token when unset"
    )
    portal_token_ttl_hours: int = Field(
        default=168, ge=1, le=24 * 90, description="how long a customer's link works (emails carry a fresh one)"
    )
    portal_submissions_per_hour: int = Field(default=5, ge=1, description="per payment, across all replicas")
    portal_submissions_per_ip_per_hour: int = Field(
        default=30, ge=1, description="portal form posts per client address, across all replicas"
    )
    portal_public_url: str | None = Field(
        default=None, max_length=500, description="where customers' links point; DASHBOARD_PUBLIC_URL when unset"
    )
    awaited_event_wait_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="how long a refund.submit, reversal or external refund waits for the payment or refund success"
        " another topic brings before its final answer",
    )
    read_statement_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="how long one statement of an API or dashboard read may run before PostgreSQL stops it (503)",
    )
    review_check_interval_seconds: float = Field(default=60.0, gt=0, description="how often overdue reviews are sought")
    balance_fold_interval_seconds: float = Field(
        default=5.0, gt=0, description="how often what ledger writes added is folded into the balance's totals"
    )
    webhook_endpoints_per_merchant: int = Field(default=16, ge=1, le=1000, description="live endpoints at most")
    api_keys_per_merchant: int = Field(default=50, ge=1, le=1000, description="live (not revoked) API keys at most")
    product_overrides_per_merchant: int = Field(
        default=1000, ge=1, le=10_000, description="product overrides at most (each policy answer holds them all)"
    )
    webhook_replay_max_days: int = Field(default=30, ge=1, le=365, description="how far back a replay may reach")
    webhook_replays_per_hour: int = Field(default=10, ge=1, description="replay calls per merchant, all replicas")
    webhook_secret_overlap_hours: float = Field(
        default=24.0, gt=0, le=720, description="how long a rolled signing secret still signs beside the new one"
    )
    public_policy_max_age_seconds: int = Field(
        default=60, ge=0, le=86_400, description="how long the public policy may be cached, here and by clients"
    )

    # The dashboard (people, sessions, one-time links).
    # The defaults suit a local run; intake warns at start (public_url_is_loopback) while one points at loopback.
    dashboard_public_url: str = Field(
        default="http://127.0.0.1:8000", max_length=500, description="where invite and reset links point"
    )
    dashboard_cookie_secure: bool = Field(
        default=True, description="Secure session cookies; only a local run over plain http sets it false"
    )
    dashboard_session_hours: int = Field(default=12, ge=1, le=24 * 30, description="a session's whole life")
    login_attempts_per_account: int = Field(
        default=10, ge=1, description="per 15 minutes from one client address (ten times that from all), all replicas"
    )
    login_attempts_per_ip: int = Field(default=50, ge=1, description="per 15 minutes, across all replicas")
    password_hashes_waiting_max: int = Field(
        default=60,
        ge=1,
        description="hashes waiting for one of the two hashing threads (~0.1 s each); beyond, sign-ins get 503",
    )
    password_resets_per_hour: int = Field(default=5, ge=1, description="per account from one client address")
    team_invites_per_hour: int = Field(
        default=20, ge=1, description="invites and resends per merchant (each is an email), across all replicas"
    )

    @field_validator("portal_public_url", mode="before")
    @classmethod
    def _empty_is_the_dashboards(cls, url: object) -> object:
        return None if url == "" else url  # compose files pass ${PORTAL_PUBLIC_URL:-}: empty meant "not set"

    @field_validator("dashboard_public_url", "portal_public_url")
    @classmethod
    def _an_absolute_web_address(cls, url: str | None, info: ValidationInfo) -> str | None:
        # Every link in an email is built on it: a relative or scheme-less base, or one with a query, breaks them all.
        if url is not None and not _is_absolute_web_address(url):
            raise ValueError(
                f"{str(info.field_name).upper()} must be an absolute http:// or https:// address with a host"
                " (a path may follow), and no query or fragment"
            )
        return url

    @field_validator("portal_token_ttl_hours")
    @classmethod
    def _outlives_the_notifiers_margin(cls, hours: int) -> int:
        margin = LINK_MARGIN.total_seconds() / 3600
        if hours <= margin:
            raise ValueError(
                f"PORTAL_TOKEN_TTL_HOURS must be more than {margin:g} hour: emails offer no link that stops working"
                " within that time, so every email would say its link has expired"
            )
        return hours

    def dashboard_secret(self) -> bytes:
        """Signs the CSRF token of forms shown before sign-in (derived from the admin token)."""
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow dashboard forms", hashlib.sha256).digest()

    def erasure_key(self) -> bytes:
        """Keys the HMAC that names an erased customer in ``customer_erasures`` (derived from the admin token)."""
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow erased customers", hashlib.sha256).digest()

    def portal_secret(self) -> bytes:
        if self.refundflow_portal_secret is not None:
            return self.refundflow_portal_secret.get_secret_value().encode()
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow portal tokens", hashlib.sha256).digest()


def loopback_public_urls(settings: IntakeSettings) -> dict[str, str]:
    """The public URLs, by variable, that point at the machine that opens them (localhost, 127.0.0.1, ::1): right for
    a local run, but in production every customer's and invitee's link would lead to their own machine."""
    urls = {"DASHBOARD_PUBLIC_URL": settings.dashboard_public_url, "PORTAL_PUBLIC_URL": settings.portal_public_url}
    return {name: url for name, url in urls.items() if url is not None and _is_loopback(url)}


def _is_absolute_web_address(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "?" not in url and "#" not in url


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
