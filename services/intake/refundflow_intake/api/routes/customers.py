from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from refundflow_intake import customer_erasure
from refundflow_intake.api.customer_schemas import CustomerErase, CustomerErasure
from refundflow_intake.api.dependencies import CurrentCaller, Db, Settings
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import IdempotencyKey
from refundflow_intake.domain import IdempotencyKeyBlank, IdempotencyKeyReused
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/customers", tags=["customers"], route_class=RetriedRoute)

_AGAIN: dict[int | str, dict[str, Any]] = {
    200: {"model": CustomerErasure, "description": "a retry (same Idempotency-Key and body): the first erasure"}
}


@router.post("/erase", status_code=201, responses=documented(IdempotencyKeyReused, IdempotencyKeyBlank) | _AGAIN)
async def erase_customer(
    body: CustomerErase,
    caller: CurrentCaller,
    db: Db,
    settings: Settings,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CustomerErasure:
    """Erase one customer's personal data (GDPR Art. 17): on your payments to this address, the address and name;
    on their refunds, what the customer wrote and the notes about or to them. Ids, amounts, statuses and the ledger
    are kept. The processor and the notifier erase their copies (``customer.erased``), and unsent emails to the
    customer about those payments are not sent. A later payment to the address is taken as any other.

    Any of your API keys may erase, also once owners have joined (unlike the approval rules): it is how support
    tooling carries out a customer's request, and it loosens no control over money. The erasure names the key.

    Send an ``Idempotency-Key`` to retry safely: the same key and body answer the first erasure (200,
    ``Idempotent-Replayed: true``); the key with another body is 409 ``idempotency_key_reused``."""
    async with db.transaction() as conn:
        erasure, replayed = await customer_erasure.erase_customer(
            conn, settings.erasure_key(), caller.merchant_id, body.email, idempotency_key, actor=caller.actor
        )
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return CustomerErasure(
        id=erasure.id,
        payments_erased=erasure.payments_erased,
        refunds_erased=erasure.refunds_erased,
        erased_at=erasure.erased_at,
    )
