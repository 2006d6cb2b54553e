from __future__ import annotations

from pydantic import Field, SecretStr

from refundflow_shared.settings import ServiceSettings

# Standard Webhooks' suggested schedule: the first attempt at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_WEBHOOK_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


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
    review_target: str = "within 2 business days"

    # Customer emails, team emails and Slack alerts: transient failures retry on this schedule.
    message_retry_schedule_seconds: list[float] = Field(default=[0.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0])
    message_concurrency: int = 8
    message_poll_interval_seconds: float = 1.0

    # Merchant webhooks
    webhook_retry_schedule_seconds: list[float] = Field(default=DEFAULT_WEBHOOK_SCHEDULE)
    webhook_timeout_seconds: float = 15.0
    webhook_max_in_flight: int = 32
    webhook_disable_after_failed_events: int = 5
    webhook_poll_interval_seconds: float = 1.0
