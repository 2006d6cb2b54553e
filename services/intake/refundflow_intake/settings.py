from __future__ import annotations

from pydantic import SecretStr
from refundflow_shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8000
    refundflow_admin_token: SecretStr
