"""The customer's link to the portal page of one payment, and what intake tells the notifier with it.

Intake alone mints links (the notifier never holds the portal secret): every customer-facing event intake publishes
carries a fresh link, sealed with ``SecretBox`` (bound to the payment id), and the merchant's name. The notifier
keeps the latest per payment for the emails of events from other services; a link is good for
``PORTAL_TOKEN_TTL_HOURS``, and emails say until when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from refundflow_intake.portal import tokens
from refundflow_intake.portal.tokens import PortalGrant
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.events import PortalLink
from refundflow_shared.secret_box import SecretBox

PORTAL_PATH = "/portal"


@dataclass(frozen=True)
class CustomerLinks:
    public_url: str
    secret: bytes
    ttl: timedelta
    box: SecretBox | None
    clock: Callable[[], datetime]

    @classmethod
    def from_settings(cls, settings: IntakeSettings, clock: Callable[[], datetime]) -> CustomerLinks:
        key = settings.webhook_secret_key
        return cls(
            public_url=(settings.portal_public_url or settings.dashboard_public_url).rstrip("/"),
            secret=settings.portal_secret(),
            ttl=timedelta(hours=settings.portal_token_ttl_hours),
            box=SecretBox(key.get_secret_value()) if key else None,
            clock=clock,
        )

    def issue(self, merchant_id: str, payment_id: str, ttl: timedelta | None = None) -> tuple[str, str, datetime]:
        """A new token for the payment's customer: (token, the page's URL, until when it works)."""
        expires_at = (self.clock() + (ttl or self.ttl)).replace(microsecond=0)
        token = tokens.issue(self.secret, PortalGrant(merchant_id, payment_id, expires_at))
        return token, f"{self.public_url}{PORTAL_PATH}/{token}", expires_at

    def sealed(self, merchant_id: str, payment_id: str) -> PortalLink | None:
        """A new link, sealed for the notifier; None without WEBHOOK_SECRET_KEY (emails then carry none)."""
        if self.box is None:
            return None
        _, url, expires_at = self.issue(merchant_id, payment_id)
        return PortalLink(sealed_url=self.box.seal(url, context=payment_id), expires_at=expires_at)


def to_customer(links: CustomerLinks, payment: dict[str, Any]) -> dict[str, Any]:
    """The fields of a customer-facing event about ``payment`` (as ``repository`` reads it, with its merchant):
    the merchant's name, and the link to the portal page unless the merchant switched its portal off."""
    link = links.sealed(payment["merchant_id"], payment["id"]) if payment["portal_enabled"] else None
    return {"merchant_name": payment["merchant_name"], "portal_link": link}
