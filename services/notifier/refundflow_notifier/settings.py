from __future__ import annotations

from pydantic import SecretStr
from refundflow_shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    http_port: int = 8002
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "Refundflow <refunds@refundflow.localhost>"
    refund_process_time: str = "5–10 business days"
