"""The payment-provider sandbox, run for real and driven through the official stripe SDK."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
import uvicorn

from refundflow_sandbox.app import create_app
from refundflow_sandbox.scenarios import FAILURE_REASONS
from refundflow_sandbox.settings import SandboxSettings
from tests.support.probe_service import eventually

API_KEY = "sk_test_sandbox_tests"
# Timings shorter than the defaults keep the file fast, yet each leaves a test seconds for the calls it makes
# within them on a loaded machine: the pending refund's reads, the calls while a slow answer is in flight.
SETTINGS = SandboxSettings(pending_seconds=3.0, timeout_seconds=2.0, timeout_margin_seconds=2.0, rate_limited_lists=2)
SLOW_ANSWER_SECONDS = SETTINGS.timeout_seconds + SETTINGS.timeout_margin_seconds


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """The sandbox served by uvicorn in a background thread on a free local port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(SETTINGS), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def stripe_client(sandbox_url: str, *, api_key: str = API_KEY, timeout: float = 10.0) -> stripe.StripeClient:
    """The way the processor talks to the sandbox: the official client, its own retries off."""
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": sandbox_url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout, async_fallback_client=stripe.HTTPXClient(timeout=timeout)),
    )


@pytest.fixture(scope="module")
def client(sandbox_url: str) -> stripe.StripeClient:
    return stripe_client(sandbox_url)


def payment_intent(kind: str = "") -> str:
    return f"pi_{kind}{uuid.uuid4().hex[:16]}"


def key() -> str:
    return f"refund_{uuid.uuid4().hex}_1"


def provider_refunds(sandbox_url: str, pi: str) -> dict[str, Any]:
    response = httpx.get(f"{sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": pi})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_refund_is_created_retrieved_and_listed(client: stripe.StripeClient, sandbox_url: str) -> None:
    pi = payment_intent()
    created = client.v1.refunds.create(
        params={
            "payment_intent": pi,
            "amount": 2500,
            "reason": "requested_by_customer",
            "metadata": {"refund_id": "rf-1", "merchant": "acme"},
        },
        options={"idempotency_key": key()},
    )

    assert created.id.startswith("re_")
    assert created.object == "refund"
    assert (created.amount, created.currency, created.status) == (2500, "usd", "succeeded")
    assert created.payment_intent == pi
    assert created.charge is not None and str(created.charge).startswith("ch_")
    assert created.reason == "requested_by_customer"
    assert created.failure_reason is None
    assert created.metadata is not None
    assert created.metadata.to_dict() == {"refund_id": "rf-1", "merchant": "acme"}
    assert created.balance_transaction is None
    assert abs(created.created - time.time()) < 60

    retrieved = client.v1.refunds.retrieve(created.id)
    assert retrieved.to_dict() == created.to_dict()

    listed = client.v1.refunds.list(params={"payment_intent": pi, "limit": 10})
    assert listed["object"] == "list"
    assert listed.url == "/v1/refunds"
    assert listed.has_more is False
    assert [r.id for r in listed.data] == [created.id]
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_refund_without_amount_takes_what_is_left_of_the_charge(client: stripe.StripeClient) -> None:
    pi = payment_intent()
    client.v1.refunds.create(params={"payment_intent": pi, "amount": 400_000})

    rest = client.v1.refunds.create(params={"payment_intent": pi})

    assert rest.amount == 600_000
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": pi})
    assert refused.value.code == "charge_already_refunded"


def test_amount_larger_than_what_is_left_is_refused(client: stripe.StripeClient, sandbox_url: str) -> None:
    pi = payment_intent()
    client.v1.refunds.create(params={"payment_intent": pi, "amount": 600_000})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": pi, "amount": 400_001})

    assert refused.value.http_status == 400
    assert refused.value.code == "amount_too_large"
    assert refused.value.param == "amount"
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_list_pages_newest_first(client: stripe.StripeClient) -> None:
    pi = payment_intent()
    ids = [client.v1.refunds.create(params={"payment_intent": pi, "amount": 1}).id for _ in range(3)]

    first = client.v1.refunds.list(params={"payment_intent": pi, "limit": 2})
    second = client.v1.refunds.list(params={"payment_intent": pi, "limit": 2, "starting_after": first.data[-1].id})

    assert [r.id for r in first.data] == ids[::-1][:2] and first.has_more is True
    assert [r.id for r in second.data] == ids[:1] and second.has_more is False


def test_same_idempotency_key_returns_the_first_refund(client: stripe.StripeClient, sandbox_url: str) -> None:
    pi, k = payment_intent(), key()
    params: Any = {"payment_intent": pi, "amount": 1000, "metadata": {"refund_id": "rf-2"}}

    first = client.v1.refunds.create(params=params, options={"idempotency_key": k})
    again = client.v1.refunds.create(params=params, options={"idempotency_key": k})

    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_same_idempotency_key_with_other_params_is_an_idempotency_error(
    client: stripe.StripeClient, sandbox_url: str
) -> None:
    pi, k = payment_intent(), key()
    client.v1.refunds.create(params={"payment_intent": pi, "amount": 1000}, options={"idempotency_key": k})

    with pytest.raises(stripe.IdempotencyError) as refused:
        client.v1.refunds.create(params={"payment_intent": pi, "amount": 2000}, options={"idempotency_key": k})

    assert refused.value.http_status == 400
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_idempotency_keys_are_scoped_to_the_api_key(client: stripe.StripeClient, sandbox_url: str) -> None:
    pi, k = payment_intent(), key()
    other_account = stripe_client(sandbox_url, api_key="sk_test_another_account")
    params: Any = {"payment_intent": pi, "amount": 1000}

    mine = client.v1.refunds.create(params=params, options={"idempotency_key": k})
    theirs = other_account.v1.refunds.create(params=params, options={"idempotency_key": k})

    assert theirs.id != mine.id
    assert provider_refunds(sandbox_url, pi)["count"] == 2


def test_request_failing_validation_is_not_stored_under_its_key(client: stripe.StripeClient) -> None:
    pi, k = payment_intent(), key()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": pi, "reason": "bored"}, options={"idempotency_key": k})
    assert refused.value.param == "reason"

    refund = client.v1.refunds.create(params={"payment_intent": pi, "amount": 5}, options={"idempotency_key": k})

    assert refund.status == "succeeded"


async def test_concurrent_request_with_the_same_key_is_refused_with_409(sandbox_url: str) -> None:
    pi, k = payment_intent("timeout_"), key()
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": k}
    form = {"payment_intent": pi, "amount": "700"}
    async with httpx.AsyncClient(base_url=sandbox_url, headers=headers, timeout=10) as http:
        first = asyncio.create_task(http.post("/v1/refunds", data=form))

        async def first_in_flight() -> bool:  # its refund is made, its answer held back
            made = await http.get("/v1/_sandbox/refunds", params={"payment_intent": pi})
            return bool(made.json()["count"] == 1) and not first.done()

        await eventually(first_in_flight, timeout=SLOW_ANSWER_SECONDS, interval=0.02)
        second = await http.post("/v1/refunds", data=form)
        first_response = await first
        third = await http.post("/v1/refunds", data=form)

    assert second.status_code == 409
    assert second.json()["error"]["type"] == "invalid_request_error"
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert first_response.status_code == 200
    assert third.status_code == 200
    assert third.headers["Idempotent-Replayed"] == "true"
    assert third.json() == first_response.json()
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_timed_out_refund_exists_and_a_same_key_retry_gets_it(sandbox_url: str) -> None:
    pi, k = payment_intent("timeout_"), key()
    impatient = stripe_client(sandbox_url, timeout=SETTINGS.timeout_seconds)
    params: Any = {"payment_intent": pi, "amount": 900, "metadata": {"refund_id": "rf-3"}}

    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.refunds.create(params=params, options={"idempotency_key": k})
    assert provider_refunds(sandbox_url, pi)["count"] == 1
    with pytest.raises(stripe.APIError) as in_flight:
        impatient.v1.refunds.create(params=params, options={"idempotency_key": k})
    assert in_flight.value.http_status == 409
    assert in_flight.value.error is not None and in_flight.value.error.code == "idempotency_key_in_use"

    time.sleep(SLOW_ANSWER_SECONDS)
    retried = impatient.v1.refunds.create(params=params, options={"idempotency_key": k})

    assert retried.id == provider_refunds(sandbox_url, pi)["data"][0]["id"]
    assert provider_refunds(sandbox_url, pi)["count"] == 1


@pytest.mark.parametrize("reason", sorted(FAILURE_REASONS))
def test_fail_intent_creates_a_failed_refund_with_that_reason(client: stripe.StripeClient, reason: str) -> None:
    refund = client.v1.refunds.create(params={"payment_intent": payment_intent(f"fail_{reason}_"), "amount": 100})

    assert refund.status == "failed"
    assert refund.failure_reason == reason
    assert client.v1.refunds.retrieve(refund.id).status == "failed"


# The SDK's HTTPXClient posts a str body, which httpx >= 0.28 deprecates; not the sandbox's doing.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_pending_refund_reads_as_succeeded_after_pending_seconds(client: stripe.StripeClient) -> None:
    pi = payment_intent("pending_")
    refund = await client.v1.refunds.create_async(params={"payment_intent": pi})
    assert refund.status == "pending"
    assert (await client.v1.refunds.retrieve_async(refund.id)).status == "pending"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.refunds.create_async(params={"payment_intent": pi, "amount": 1})

    await asyncio.sleep(SETTINGS.pending_seconds + 0.1)

    assert (await client.v1.refunds.retrieve_async(refund.id)).status == "succeeded"
    listed = await client.v1.refunds.list_async(params={"payment_intent": pi})
    assert [r.status for r in listed.data] == ["succeeded"]


def test_flaky_intent_answers_500_twice_then_refunds(client: stripe.StripeClient, sandbox_url: str) -> None:
    pi, first_key = payment_intent("flaky_"), key()
    params: Any = {"payment_intent": pi, "amount": 300}

    with pytest.raises(stripe.APIError) as first:
        client.v1.refunds.create(params=params, options={"idempotency_key": first_key})
    with pytest.raises(stripe.APIError) as replayed:
        client.v1.refunds.create(params=params, options={"idempotency_key": first_key})
    with pytest.raises(stripe.APIError) as second:
        client.v1.refunds.create(params=params, options={"idempotency_key": key()})
    assert provider_refunds(sandbox_url, pi)["count"] == 0
    refund = client.v1.refunds.create(params=params, options={"idempotency_key": key()})

    assert first.value.http_status == replayed.value.http_status == second.value.http_status == 500
    assert first.value.error is not None and first.value.error.type == "api_error"
    assert (replayed.value.headers or {})["Idempotent-Replayed"] == "true"
    assert refund.status == "succeeded"
    assert provider_refunds(sandbox_url, pi)["count"] == 1


def test_rate_limited_intent_answers_429_without_executing_then_refunds(
    client: stripe.StripeClient, sandbox_url: str
) -> None:
    pi, same_key = payment_intent("rate_limited_"), key()
    params: Any = {"payment_intent": pi, "amount": 300}
    refused = []
    for _ in range(SETTINGS.rate_limited_calls):
        with pytest.raises(stripe.RateLimitError) as raised:
            client.v1.refunds.create(params=params, options={"idempotency_key": same_key})
        refused.append(raised.value)
    assert provider_refunds(sandbox_url, pi)["count"] == 0
    refund = client.v1.refunds.create(params=params, options={"idempotency_key": same_key})

    assert {(e.http_status, e.error and e.error.code) for e in refused} == {(429, "rate_limit")}
    headers = refused[0].headers or {}
    assert (headers["Retry-After"], headers["Stripe-Should-Retry"]) == ("1", "true")
    assert refund.status == "succeeded", "nothing was stored under the key: the same key is executed"
    assert provider_refunds(sandbox_url, pi)["count"] == 1


@pytest.mark.parametrize("prefix", ["ch_", "py_"])
def test_a_charge_is_refunded_and_listed_by_its_id(client: stripe.StripeClient, prefix: str) -> None:
    charge = f"{prefix}{uuid.uuid4().hex[:16]}"
    refund = client.v1.refunds.create(params={"charge": charge, "amount": 300}, options={"idempotency_key": key()})
    listed = client.v1.refunds.list(params={"charge": charge})

    assert (refund.charge, refund.payment_intent, refund.status) == (charge, None, "succeeded")
    assert [r.id for r in listed.data] == [refund.id]


@pytest.mark.parametrize("charge", ["ch_1a2b3c", "py_1a2b3c"])
def test_a_charge_named_as_a_payment_intent_is_resource_missing(client: stripe.StripeClient, charge: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as created:
        client.v1.refunds.create(params={"payment_intent": charge, "amount": 300}, options={"idempotency_key": key()})
    with pytest.raises(stripe.InvalidRequestError) as listed:
        client.v1.refunds.list(params={"payment_intent": charge})
    assert created.value.code == listed.value.code == "resource_missing"


def test_rate_limited_intent_answers_its_first_listings_429_then_lists(
    client: stripe.StripeClient, sandbox_url: str
) -> None:
    pi = payment_intent("rate_limited_")
    refused = []
    for _ in range(SETTINGS.rate_limited_lists):
        with pytest.raises(stripe.RateLimitError) as raised:
            client.v1.refunds.list(params={"payment_intent": pi})
        refused.append(raised.value)
    listed = client.v1.refunds.list(params={"payment_intent": pi})

    assert {(e.http_status, e.error and e.error.code) for e in refused} == {(429, "rate_limit")}
    headers = refused[0].headers or {}
    assert (headers["Retry-After"], headers["Stripe-Should-Retry"]) == ("1", "true")
    assert listed.data == []


def test_error500_after_create_makes_the_refund_and_replays_the_500(
    client: stripe.StripeClient, sandbox_url: str
) -> None:
    pi, k = payment_intent("error500_after_create_"), key()
    params: Any = {"payment_intent": pi, "amount": 300, "metadata": {"refund_id": "rf-4"}}

    with pytest.raises(stripe.APIError) as first:
        client.v1.refunds.create(params=params, options={"idempotency_key": k})
    with pytest.raises(stripe.APIError) as retried:
        client.v1.refunds.create(params=params, options={"idempotency_key": k})

    assert first.value.http_status == retried.value.http_status == 500
    assert (retried.value.headers or {})["Idempotent-Replayed"] == "true"
    assert provider_refunds(sandbox_url, pi)["count"] == 1
    # Reconciling finds the refund by our metadata; a naive new-key retry would have refunded twice.
    listed = client.v1.refunds.list(params={"payment_intent": pi})
    assert [r.to_dict()["metadata"]["refund_id"] for r in listed.data] == ["rf-4"]
    with pytest.raises(stripe.APIError):
        client.v1.refunds.create(params=params, options={"idempotency_key": key()})
    assert provider_refunds(sandbox_url, pi)["count"] == 2


def test_unknown_refund_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.refunds.retrieve("re_doesnotexist")

    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert missing.value.param == "id"


def test_missing_or_non_test_api_key_is_401(sandbox_url: str) -> None:
    anonymous = httpx.post(f"{sandbox_url}/v1/refunds", data={"payment_intent": payment_intent()})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"

    with pytest.raises(stripe.AuthenticationError) as refused:
        stripe_client(sandbox_url, api_key="sk_live_not_here").v1.refunds.list()
    assert refused.value.http_status == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"payment_intent": "pi_1", "amount": 5}', "application/json"),
        ("payment_intent=pi_1&amount=%FF", "application/x-www-form-urlencoded"),
    ],
    ids=["json", "not-utf8"],
)
def test_a_body_that_is_not_a_readable_form_is_an_invalid_request(
    sandbox_url: str, body: str, content_type: str
) -> None:
    """As Stripe does: its API takes form-encoded parameters only, and nothing is created from anything else."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": content_type}
    answer = httpx.post(f"{sandbox_url}/v1/refunds", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert provider_refunds(sandbox_url, "pi_1")["count"] == 0


def test_health_check_answers_ok(sandbox_url: str) -> None:
    assert httpx.get(f"{sandbox_url}/healthz").json() == {"status": "ok"}


def test_settings_come_from_sandbox_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_HOST", "0.0.0.0")
    monkeypatch.setenv("SANDBOX_PORT", "9999")
    monkeypatch.setenv("SANDBOX_PENDING_SECONDS", "7")
    monkeypatch.setenv("SANDBOX_TIMEOUT_SECONDS", "2.5")

    settings = SandboxSettings()

    assert (settings.host, settings.port) == ("0.0.0.0", 9999)
    assert (settings.pending_seconds, settings.timeout_seconds) == (7, 2.5)
    assert (SandboxSettings.model_fields["host"].default, SandboxSettings.model_fields["port"].default) == (
        "127.0.0.1",
        12111,
    )


def test_subscription_metadata_merges_as_stripes_does(client: stripe.StripeClient) -> None:
    """The keys given replace the subscription's, an empty value removes one; at most 50 keys of at most 40
    characters, values of at most 500; a refused change changes nothing."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    client.v1.subscriptions.update(subscription_id, params={"metadata": {"a": "1", "b": "2"}})
    merged = client.v1.subscriptions.update(subscription_id, params={"metadata": {"b": "", "c": "3"}})
    assert merged.to_dict()["metadata"] == {"a": "1", "c": "3"}

    too_many: Any = {"metadata": {f"k{n}": "v" for n in range(49)}}  # 51 with a and c
    with pytest.raises(stripe.InvalidRequestError, match="50 keys"):
        client.v1.subscriptions.update(subscription_id, params=too_many)
    with pytest.raises(stripe.InvalidRequestError, match="40 characters"):
        client.v1.subscriptions.update(subscription_id, params={"metadata": {"k" * 41: "v"}})
    with pytest.raises(stripe.InvalidRequestError, match="500 characters"):
        client.v1.subscriptions.update(subscription_id, params={"metadata": {"k": "v" * 501}})
    assert client.v1.subscriptions.retrieve(subscription_id).to_dict()["metadata"] == {"a": "1", "c": "3"}

    with_trial: Any = {"trial_end": int(time.time()) + 86_400, "metadata": {"a": ""}}
    both = client.v1.subscriptions.update(subscription_id, params=with_trial).to_dict()
    assert (both["trial_end"], both["metadata"]) == (with_trial["trial_end"], {"c": "3"})
