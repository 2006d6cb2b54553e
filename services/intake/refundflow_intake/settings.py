from __future__ import annotations

import hashlib
import hmac

from pydantic import Field, SecretStr

from refundflow_shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8000
    refundflow_admin_token: SecretStr
    refundflow_portal_secret: SecretStr | None = Field(
        default=None, description="signs portal tokens; derived from the admin token when unset"
    )
    portal_token_ttl_hours: int = Field(default=168, ge=1, le=24 * 90)
    portal_submissions_per_hour: int = Field(default=5, ge=1, description="per payment, across all replicas")
    review_check_interval_seconds: float = Field(default=60.0, gt=0, description="how often overdue reviews are sought")
    webhook_endpoints_per_merchant: int = Field(default=16, ge=1, le=1000, description="live endpoints at most")
    webhook_replay_max_days: int = Field(default=30, ge=1, le=365, description="how far back a replay may reach")
    webhook_replays_per_hour: int = Field(default=10, ge=1, description="replay calls per merchant, all replicas")
    public_policy_max_age_seconds: int = Field(
        default=60, ge=0, le=86_400, description="how long the public policy may be cached, here and by clients"
    )

    def portal_secret(self) -> bytes:
        if self.refundflow_portal_secret is not None:
            return self.refundflow_portal_secret.get_secret_value().encode()
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow portal tokens", hashlib.sha256).digest()
