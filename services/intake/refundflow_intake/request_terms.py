"""The refund policy's terms a request was judged by, kept on the refund (``refunds.judged_by``): its flags are
explained in these, not in the policy as the merchant has changed it since. No I/O here."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from refundflow_intake.refund_policy import RefundPolicy


class RequestTerms(BaseModel):
    """What the flags' explanations quote; kept small, it is written with every request."""

    model_config = ConfigDict(frozen=True)

    refund_window_days: int
    excluded_categories: list[str]
    accepted_reasons: list[str]  # plain text: a reason retired later still reads back
    asked_at: datetime  # when the window was judged: a command's own time may come before its refund's row

    @classmethod
    def of(cls, policy: RefundPolicy, *, asked_at: datetime) -> RequestTerms:
        return cls(
            refund_window_days=policy.refund_window_days,
            excluded_categories=list(policy.excluded_categories),
            accepted_reasons=[reason.value for reason in policy.accepted_reasons],
            asked_at=asked_at,
        )

    @classmethod
    def kept_or_todays(cls, kept: str | None, policy: RefundPolicy, *, created_at: datetime) -> RequestTerms:
        """The terms kept with a refund (``judged_by``); a refund made before they were kept: today's ``policy``,
        asked when its row was made."""
        return cls.model_validate_json(kept) if kept is not None else cls.of(policy, asked_at=created_at)
