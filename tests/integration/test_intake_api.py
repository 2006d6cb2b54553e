"""Intake's HTTP API in-process, on a real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from refundflow_intake.app import create_app
from refundflow_intake.refund_outcomes import record_refund_outcome
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.events import RefundSucceeded
from refundflow_shared.tracing import add_trace_ids
from tests.conftest import create_database
from tests.support.intake_harness import running_intake

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = pytest.mark.asyncio(loop_scope="session")
MERCHANT_IDS: dict[str, str] = {}  # Authorization header -> merchant id


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    """One running intake for the module; each test works as its own merchant."""
    settings = IntakeSettings(
        database_url=await create_database(postgres_url),
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        refundflow_admin_token=ADMIN_TOKEN,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            pool = await asyncpg.create_pool(settings.database_url, server_settings={"search_path": "intake"})
            yield client, pool
            await pool.close()


@pytest.fixture
def client(intake: tuple[httpx.AsyncClient, asyncpg.Pool]) -> httpx.AsyncClient:
    return intake[0]


@pytest.fixture
def db(intake: tuple[httpx.AsyncClient, asyncpg.Pool]) -> asyncpg.Pool:
    return intake[1]


async def new_merchant(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post("/v1/merchants", json={"name": "Acme"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    MERCHANT_IDS[f"Bearer {body['api_key']}"] = body["id"]
    return {"Authorization": f"Bearer {body['api_key']}"}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_payment(
    client: httpx.AsyncClient, merchant: dict[str, str], amount: int = 10_000, currency: str = "EUR"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/payments",
        headers=ADMIN,  # payments come from the platform
        json={
            "merchant_id": MERCHANT_IDS[merchant["Authorization"]],
            "customer_email": "ada@example.com",
            "amount": amount,
            "currency": currency,
            "provider_payment_id": f"pi_{uuid.uuid4().hex}",
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Pro plan", "kind": "one_time"},
        },
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def written(db: asyncpg.Pool) -> tuple[int, int]:
    return await db.fetchval("SELECT count(*) FROM refunds"), await db.fetchval("SELECT count(*) FROM outbox")


async def test_an_unknown_refund_is_a_404_with_an_error_body(client: httpx.AsyncClient) -> None:
    merchant = await new_merchant(client)
    response = await client.get("/v1/refunds/ref_doesnotexist", headers=merchant)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "refund_not_found"
    assert response.json()["error"]["message"]


async def test_a_malformed_body_is_a_422_in_the_same_shape_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant)
    before = await written(db)
    float_amount = json.dumps({"payment_id": payment["id"], "amount": 10.5, "reason": "requested_by_customer"})
    for body in ('{"payment_id": ', float_amount):
        response = await client.post(
            "/v1/refunds",
            headers={**merchant, "content-type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
            content=body,
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
    assert await written(db) == before


async def test_money_must_be_integer_minor_units_in_a_known_currency(client: httpx.AsyncClient) -> None:
    merchant = await new_merchant(client)
    base = {
        "merchant_id": MERCHANT_IDS[merchant["Authorization"]],
        "customer_email": "a@example.com",
        "provider_payment_id": "pi_x",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "p", "name": "P", "kind": "one_time"},
    }
    for amount, currency in ((49.99, "EUR"), ("4999", "EUR"), (100, "XYZ")):
        response = await client.post(
            "/v1/payments", headers=ADMIN, json={**base, "amount": amount, "currency": currency}
        )
        assert response.status_code == 422, (amount, currency, response.text)


@pytest.mark.parametrize("currency", ["UYU", "XCG", "VED"])
async def test_a_payment_in_a_currency_iso_lists_is_registered(client: httpx.AsyncClient, currency: str) -> None:
    """Uruguay's peso, the Caribbean guilder and the digital bolívar were missing from the list: a payment in
    them was a 422 here, and billing's payment.succeeded in them was dead-lettered."""
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, amount=150_000, currency=currency)
    assert (payment["amount"], payment["currency"]) == (150_000, currency)


async def test_calls_without_a_valid_key_are_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/refunds/ref_x")).status_code == 401
    assert (await client.get("/v1/refunds/ref_x", headers=_auth("rfk_wrong"))).status_code == 401
    response = await client.post("/v1/merchants", json={"name": "Evil"}, headers=_auth("not-the-admin-token"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_api_keys_are_stored_only_as_hashes(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    merchant = await new_merchant(client)
    api_key = merchant["Authorization"].removeprefix("Bearer ")
    stored = await db.fetch("SELECT key_hash::text AS h FROM api_keys")
    assert stored and all(api_key not in row["h"] for row in stored)
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE key_hash = $1", api_key.encode()) == 0


async def test_a_retried_merchant_creation_with_its_idempotency_key_answers_the_first_merchant_without_its_secrets(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    key = uuid.uuid4().hex
    name = f"Retry Co {key[:8]}"
    body = {"name": name, "owner_email": f"owner-{key[:8]}@retry.example.com"}
    headers = {**ADMIN, "Idempotency-Key": key}

    first = await client.post("/v1/merchants", headers=headers, json=body)
    retries = await asyncio.gather(*(client.post("/v1/merchants", headers=headers, json=body) for _ in range(3)))

    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    created = first.json()
    assert created["api_key"] and created["api_key_already_shown"] is False and created["owner_invite_url"]
    for retried in retries:
        assert retried.status_code == 200, retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"
        # Only the key's hash is kept: a replay names the key, and says its secret was in the first answer.
        assert retried.json() == {
            "id": created["id"],
            "api_key": None,
            "api_key_id": created["api_key_id"],
            "api_key_already_shown": True,
            "owner_invite_url": None,
        }
    assert await db.fetchval("SELECT count(*) FROM merchants WHERE name = $1", name) == 1
    first_key = {"Authorization": f"Bearer {created['api_key']}"}
    assert (await client.get("/v1/refunds", headers=first_key)).status_code == 200

    other = await client.post("/v1/merchants", headers=headers, json={**body, "name": "Another Co"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await db.fetchval("SELECT count(*) FROM merchants WHERE name = 'Another Co'") == 0


async def test_another_merchants_payment_and_refund_do_not_exist_for_you(client: httpx.AsyncClient) -> None:
    owner, stranger = await new_merchant(client), await new_merchant(client)
    payment = await new_payment(client, owner)
    refund = (
        await client.post(
            "/v1/refunds",
            headers={**owner, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], "reason": "requested_by_customer"},
        )
    ).json()

    assert (await client.get(f"/v1/payments/{payment['id']}", headers=stranger)).status_code == 404
    assert (await client.get(f"/v1/refunds/{refund['id']}", headers=stranger)).status_code == 404
    assert (await client.post(f"/v1/refunds/{refund['id']}/approve", headers=stranger)).status_code == 404
    response = await client.post(
        "/v1/refunds",
        headers={**stranger, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "payment_not_found"


async def test_a_refund_defaults_to_all_that_is_refundable_and_stages_refund_requested(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, amount=4_999)
    response = await client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer"},
    )

    assert response.status_code == 201
    refund = response.json()
    assert (refund["amount"], refund["currency"], refund["status"]) == (4_999, "EUR", "pending")
    assert [t["status"] for t in refund["timeline"]] == ["pending"]
    staged = await db.fetch("SELECT event_type FROM outbox WHERE partition_key = $1 ORDER BY id", payment["id"])
    assert [r["event_type"] for r in staged] == ["payment.succeeded", "refund.requested"]
    payment_after = (await client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert payment_after["refundable_amount"] == 0


async def test_a_refund_request_without_an_idempotency_key_is_refused_so_a_retry_cannot_refund_twice(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant)
    body = {"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 1_000}
    before = await written(db)

    refused = await client.post("/v1/refunds", headers=merchant, json=body)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "idempotency_key_required"
    assert await written(db) == before
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/refunds"]["post"]
    header = next(p for p in operation["parameters"] if p["name"].lower() == "idempotency-key")
    assert header["in"] == "header" and header["required"] is True
    assert "idempotency_key_required" in json.dumps(operation["responses"]["400"])


async def test_a_partial_refund_cannot_exceed_what_is_left(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, amount=1_000)
    first = await client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 600},
    )
    assert first.status_code == 201
    before = await written(db)

    second = await client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 401},
    )
    assert second.status_code == 422
    assert second.json()["error"]["code"] == "refund_exceeds_refundable"
    assert second.json()["error"]["message"] == "€4.01 exceeds the refundable amount of €4.00"
    assert await written(db) == before


async def test_the_refund_currency_must_match_the_payment(client: httpx.AsyncClient) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, currency="JPY", amount=1500)
    response = await client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer", "currency": "USD"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "currency_mismatch"


async def test_parallel_refund_requests_never_exceed_the_payment(client: httpx.AsyncClient) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, amount=10_000)
    body = {"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 3_000}

    responses = await asyncio.gather(
        *(
            client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": uuid.uuid4().hex}, json=body)
            for _ in range(10)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [422] * 7
    after = (await client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert sum(r["amount"] for r in after["refunds"]) == 9_000
    assert after["refundable_amount"] == 1_000


async def test_approving_moves_to_processing_once_and_repeating_it_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant)
    refund = (
        await client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], "reason": "requested_by_customer"},
        )
    ).json()

    first = await client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"note": "ok"})
    again = await client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == again.json()["status"] == "processing"
    assert [t["status"] for t in again.json()["timeline"]] == ["pending", "processing"]
    approved = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE partition_key = $1 AND event_type = 'refund.approved'", payment["id"]
    )
    assert approved == 1


async def test_approving_again_after_the_refund_succeeded_answers_it_as_it_is(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """An ERP retrying its approval after a timeout usually meets the refund already refunded: a repeat, not 409."""
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant)
    body = {"payment_id": payment["id"], "reason": "requested_by_customer"}
    refund = (
        await client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": uuid.uuid4().hex}, json=body)
    ).json()
    await client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    async with db.acquire() as conn, conn.transaction():
        success = RefundSucceeded(
            refund_id=refund["id"],
            payment_id=payment["id"],
            merchant_id=MERCHANT_IDS[merchant["Authorization"]],
            customer_email="ada@example.com",
            amount=refund["amount"],
            currency=refund["currency"],
            provider_refund_id=f"re_{refund['id']}",
        )
        await record_refund_outcome(conn, success, actor="system:processor")

    again = await client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    other = await client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 100})

    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    assert other.status_code == 409 and other.json()["error"]["code"] == "invalid_status_transition"


async def test_parallel_decisions_on_one_refund_make_one_change_one_event_and_one_hold(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant, amount=10_000)
    body = {"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 4_000}
    refund = (
        await client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": uuid.uuid4().hex}, json=body)
    ).json()

    # Each decision waits for the one before and must see what it did: the refund is no longer pending.
    decisions = [client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant) for _ in range(8)]
    decisions += [client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant) for _ in range(4)]
    responses = await asyncio.gather(*decisions)

    final = (await client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert [t["status"] for t in final["timeline"]] == ["pending", final["status"]]
    changed = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE partition_key = $1 AND event_type IN ('refund.approved', 'refund.rejected')",
        payment["id"],
    )
    assert changed == 1
    held = await db.fetchval("SELECT count(*) FROM balance_entries WHERE source_id = $1", refund["id"])
    assert held == (1 if final["status"] == "processing" else 0)
    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]


async def test_registering_the_same_provider_payment_with_other_details_is_a_409(client: httpx.AsyncClient) -> None:
    merchant = await new_merchant(client)
    payment = await new_payment(client, merchant)
    body = {
        "merchant_id": MERCHANT_IDS[merchant["Authorization"]],
        "customer_email": "a@example.com",
        "amount": 100,
        "currency": "EUR",
        "provider_payment_id": payment["provider_payment_id"],
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "p", "name": "P", "kind": "one_time"},
    }
    response = await client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_already_registered"


async def test_health_endpoints_report_the_database_jobs_and_broker(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "jobs": True}
    assert ready.json()["broker_reachable"] is True


async def test_an_unexpected_error_is_a_500_in_the_api_shape_logged_once_within_its_trace(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    async def fails_as_a_bug_would(payment_id: str) -> None:
        raise RuntimeError("a bug")

    async with running_intake(postgres_url, kafka_bootstrap) as intake:
        intake.app.add_api_route("/v1/test-failures/{payment_id}", fails_as_a_bug_would)
        with capture_logs(processors=[add_trace_ids]) as logs:
            # The client raises what the app raised: the error is answered, not raised again for the server to log
            response = await intake.client.get("/v1/test-failures/pay_1")

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "something went wrong on our side"}}
    trace_id = response.headers["traceresponse"].split("-")[1]
    [logged] = [line for line in logs if line["event"] == "unhandled_error"]
    assert logged["method"] == "GET" and logged["route"] == "/v1/test-failures/{payment_id}"
    assert logged["trace_id"] == trace_id and logged["exc_info"] is True
