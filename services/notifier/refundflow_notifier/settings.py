from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from refundflow_shared.settings import ServiceSettings

# Standard Webhooks' suggested schedule: the first attempt at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_WEBHOOK_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class NotifierSettings(ServiceSettings):
    http_port: int = 8002

    # SMTP. ``smtp_tls``: ``required`` refuses to send without STARTTLS; ``opportunistic`` upgrades when the
    # server offers it; ``none`` never does (a local sink). Credentials never go over a plain connection
    # unless ``smtp_allow_plaintext_auth``.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["required", "opportunistic", "none"] = "opportunistic"
    smtp_tls_ca_file: str | None = Field(default=None, description="a CA bundle to trust for the SMTP server")
    smtp_allow_plaintext_auth: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, description="the whole of one message's sending")
    smtp_idle_seconds: float = Field(default=30.0, ge=0, description="an idle connection is reused this long")
    mail_from: str = "Refundflow <refunds@refundflow.localhost>"
    # How long an email that always follows another ("on its way" after "approved") waits for that one to be queued,
    # when its own event came in first; after that it goes alone.
    email_order_wait_seconds: float = Field(default=30.0, ge=0, le=3600)
    # How soon requests are decided, as the "we received your request" email says it, until a merchant sets its
    # own. (How long a refund takes to arrive is the merchant's refund policy's, from intake: no setting here.)
    review_target: str = "within 2 business days"

    # Customer emails, team emails and Slack alerts: transient failures retry on this schedule.
    message_retry_schedule_seconds: list[float] = Field(default=[0.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0])
    message_concurrency: int = Field(default=32, ge=1)
    message_max_in_flight_per_merchant: int = Field(default=8, ge=1)
    message_poll_interval_seconds: float = 1.0
    message_retention_days: float = Field(default=7.0, gt=0, description="a finished message's record")
    customer_contact_retention_days: float = Field(
        default=180.0, gt=0, description="what intake said of a payment's customer, since it last said it"
    )
    # A team alert the merchant's settings route nowhere waits this long (from its event's time) for settings that do.
    team_alert_hold_days: float = Field(default=7.0, gt=0)

    # Outbound HTTP (webhooks and Slack): one deadline for the whole call, a cap on the answer read.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_max_response_bytes: int = Field(default=65536, ge=0)
    # A lease outlives its call by this much, so no other notifier takes over work that is still running.
    lease_margin_seconds: float = Field(default=30.0, gt=0)
    # Woken from idle, the message and webhook workers wait this long before they claim: a trickle of work (one
    # message per transaction that queued it) is then claimed in one transaction, not one each (README, Performance).
    delivery_gather_ms: int = Field(default=20, ge=0, le=1000)

    # Merchant webhooks
    webhook_retry_schedule_seconds: list[float] = Field(default=DEFAULT_WEBHOOK_SCHEDULE)
    webhook_max_in_flight: int = Field(default=64, ge=1)
    # A receiver answering in 200 ms takes 16 / 0.2 s = 80 deliveries a second from one endpoint's 16 slots.
    webhook_max_in_flight_per_merchant: int = Field(default=32, ge=1)
    webhook_max_in_flight_per_endpoint: int = Field(default=16, ge=1)
    webhook_max_endpoints_per_event: int = Field(default=16, ge=1)
    webhook_disable_after_failed_events: int = 5
    webhook_poll_interval_seconds: float = 1.0
    webhook_retention_days: float = Field(default=30.0, gt=0, description="also how far back a replay reaches")

    @model_validator(mode="after")
    def credentials_only_over_tls(self) -> NotifierSettings:
        if self.smtp_username and self.smtp_tls == "none" and not self.smtp_allow_plaintext_auth:
            raise ValueError("SMTP_USERNAME with SMTP_TLS=none would send credentials in clear text")
        return self
