from __future__ import annotations

import hashlib
import hmac

from pydantic import Field, SecretStr, field_validator

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
    review_check_interval_seconds: float = Field(default=60.0, gt=0, description="how often overdue reviews are sought")
    webhook_endpoints_per_merchant: int = Field(default=16, ge=1, le=1000, description="live endpoints at most")
    webhook_replay_max_days: int = Field(default=30, ge=1, le=365, description="how far back a replay may reach")
    webhook_replays_per_hour: int = Field(default=10, ge=1, description="replay calls per merchant, all replicas")
    webhook_secret_overlap_hours: float = Field(
        default=24.0, gt=0, le=720, description="how long a rolled signing secret still signs beside the new one"
    )
    public_policy_max_age_seconds: int = Field(
        default=60, ge=0, le=86_400, description="how long the public policy may be cached, here and by clients"
    )

    # The dashboard (people, sessions, one-time links).
    dashboard_public_url: str = Field(
        default="http://127.0.0.1:8000", max_length=500, description="where invite and reset links point"
    )
    dashboard_cookie_secure: bool = Field(
        default=True, description="Secure session cookies; only a local run over plain http sets it false"
    )
    dashboard_session_hours: int = Field(default=12, ge=1, le=24 * 30, description="a session's whole life")
    login_attempts_per_account: int = Field(default=10, ge=1, description="per 15 minutes, across all replicas")
    login_attempts_per_ip: int = Field(default=50, ge=1, description="per 15 minutes, across all replicas")
    password_resets_per_hour: int = Field(default=5, ge=1, description="per address and per client address")
    team_invites_per_hour: int = Field(
        default=20, ge=1, description="invites and resends per merchant (each is an email), across all replicas"
    )

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

    def portal_secret(self) -> bytes:
        if self.refundflow_portal_secret is not None:
            return self.refundflow_portal_secret.get_secret_value().encode()
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow portal tokens", hashlib.sha256).digest()
