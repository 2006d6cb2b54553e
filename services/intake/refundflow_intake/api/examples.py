"""Example bodies for the OpenAPI document: one consistent story (a 29.00 EUR subscription, a week of downtime)."""

from __future__ import annotations

from typing import Any

_AT = "2026-11-20T10:00:00Z"
_LATER = "2026-11-21T09:30:00Z"

API_KEY = {"id": "key_5f1c", "name": "billing backend", "created_at": _AT, "revoked_at": None}
TIMELINE = [
    {
        "status": "pending",
        "action": "requested",
        "actor": "customer:ada@example.com",
        "note": "service_disruption",
        "at": _AT,
    },
    {
        "status": "processing",
        "action": "approved",
        "actor": "api_key:key_5f1c",
        "note": "Sorry for the outage",
        "at": _LATER,
    },
]
REFUND_SUMMARY: dict[str, Any] = {
    "id": "ref_9b2e",
    "payment_id": "pay_41d0",
    "amount": 725,
    "requested_amount": 725,
    "currency": "EUR",
    "reason": "service_disruption",
    "reason_details": "The API was down for a week",
    "channel": "portal",
    "flags": [],
    "status": "processing",
    "failure_reason": None,
    "provider_refund_id": None,
    "subscription_action": "refund_only",
    "extend_days": 7,
    "decision_note": "Outage on 3 Nov, ticket 1234",
    "customer_note": "Sorry for the outage: we refunded the days it lasted and added a week.",
    "cancel_subscription": False,
    "decided_at": _LATER,
    "created_at": _AT,
    "updated_at": _LATER,
}
REFUND = {**REFUND_SUMMARY, "approvals": ["api_key:key_5f1c"], "timeline": TIMELINE}
PAYMENT: dict[str, Any] = {
    "id": "pay_41d0",
    "status": "partially_refunded",
    "customer_email": "ada@example.com",
    "customer_name": "Ada Lovelace",
    "amount": 2900,
    "currency": "EUR",
    "refunded_amount": 725,
    "refundable_amount": 2175,
    "provider_payment_id": "pi_3PqX",
    "paid_at": _AT,
    "product": {"id": "prod_pro", "name": "Pro plan", "kind": "subscription", "category": "service"},
    "subscription": {"id": "sub_1", "current_period_start": _AT, "current_period_end": "2026-12-18T10:00:00Z"},
    "subscription_state": {
        "cancel_requested_at": None,
        "cancel_at_period_end_requested_at": None,
        "cancel_failed_at": None,
        "cancel_failure": None,
        "canceled_at": None,
        "access_until": None,
        "extended_to": "2026-12-25T10:00:00Z",
        "extension_pending_days": None,
        "extension_failed_at": None,
        "extension_failure": None,
    },
    "disputed": False,
    "created_at": _AT,
    "refunds": [{**REFUND_SUMMARY, "status": "succeeded", "provider_refund_id": "re_3PqX"}],
    "external_refunds": [],
}
QUOTE = {
    "amount": 725,
    "currency": "EUR",
    "refundable_amount": 2900,
    "flags": [],
    "approvals_required": 1,
    "auto_approved": False,
}
PUBLIC_POLICY = {
    "merchant_id": "mer_7a01",
    "product_id": None,
    "refund_window_days": 14,
    "excluded_categories": ["consumable", "customized"],
    "accepted_reasons": ["technical_issue", "service_disruption", "duplicate"],
    "process_time": "5–10 business days",
    "text": "You can ask for a refund within 14 days of your purchase. Acme refunds when: it does not work (a"
    " technical problem); the service was down or disrupted; you were charged twice. Not refundable: consumable,"
    " customized products. Approved refunds reach your original payment method within 5–10 business days. Outside"
    " these terms you can still ask: Acme decides each request.",
}
POLICY = {
    "policy": {
        "refund_window_days": 14,
        "excluded_categories": ["consumable", "customized"],
        "accepted_reasons": ["technical_issue", "service_disruption", "duplicate"],
        "process_time": "5–10 business days",
        "review_target_hours": 48,
        "auto_approve": {"max_amount": {"amount": 2000, "currency": "EUR"}, "reasons": ["duplicate"]},
        "second_approval_above": {"amount": 50000, "currency": "EUR"},
    },
    "product_overrides": {
        # Only what the override sets: null switches an approval rule off for the product.
        "prod_course": {"refund_window_days": 30, "auto_approve": None}
    },
}
BALANCE = {
    "data": [{"currency": "EUR", "paid": 2900, "refunded": 725, "held": 0, "available": 2175}],
    "disputes": [{"currency": "EUR", "disputed_payments": 1, "disputed": 1450}],
}
BALANCE_ENTRY = {
    "id": "ble_81734",
    "kind": "refund",
    "amount": -725,
    "currency": "EUR",
    "payment_id": "pay_41d0",
    "refund_id": "ref_9b2e",
    "provider_refund_id": None,
    "created_at": "2026-11-20T14:03:11Z",
}
PORTAL_TOKEN = {
    "token": "pt_eyJtIjoi...Q.dBjftJeZ4CVP",
    "url": "https://refunds.example.com/portal/pt_eyJtIjoi...Q.dBjftJeZ4CVP",
    "payment_id": "pay_41d0",
    "expires_at": "2026-11-27T10:00:00Z",
}
PORTAL_REQUEST = {
    "id": "ref_9b2e",
    "status": "pending",
    "amount": 725,
    "currency": "EUR",
    "reason": "service_disruption",
    "message": "The API was down for a week",
    "note": None,
    "process_time": "5–10 business days",
    "created_at": _AT,
    "updated_at": _AT,
}
INSIGHTS = {
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-12-01T00:00:00Z",
    "refunded": [{"currency": "EUR", "amount": 1450}],
    "by_reason": [
        {
            "reason": "service_disruption",
            "currency": "EUR",
            "requests": 3,
            "amount": 2175,
            "refunded": 2,
            "refunded_amount": 1450,
        }
    ],
    "by_product": [
        {
            "product_id": "prod_pro",
            "product_name": "Pro plan",
            "currency": "EUR",
            "payments": 40,
            "paid_amount": 116000,
            "refunded_payments": 2,
            "refunded_amount": 1450,
            "refund_rate": 0.0125,
            "requests": 3,
        }
    ],
    "decisions": {"count": 3, "median_seconds_to_decision": 5400, "p90_seconds_to_decision": 30600},
    "pending_over_24h": 1,
    "pending_over_48h": 0,
}


def examples(*bodies: Any) -> dict[str, Any]:
    """``json_schema_extra`` for a model: its examples."""
    return {"examples": list(bodies)}
