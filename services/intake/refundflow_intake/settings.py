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

    def portal_secret(self) -> bytes:
        if self.refundflow_portal_secret is not None:
            return self.refundflow_portal_secret.get_secret_value().encode()
        admin = self.refundflow_admin_token.get_secret_value().encode()
        return hmac.new(admin, b"refundflow portal tokens", hashlib.sha256).digest()
