"""A notifier killed mid-batch (SIGKILL at a named point) and restarted sends each message once.

SMTP leaves one window: the server accepted a message (250 after DATA) and the process died before recording
it. That message goes out again on restart, with the same Message-ID; the last scenario shows exactly that.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook

from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_shared.events import RefundSucceeded
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import TEST_SECRET_KEY, EventFeed, configure_endpoint
from tests.support.notifier_receivers import CapturingSmtpHandler, HttpReceiver, http_receiver, smtp_server
from tests.support.probe_service import eventually
from tests.support.service_processes import ServiceProcess, service_env

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def smtp() -> Iterator[tuple[CapturingSmtpHandler, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    yield producer
    await producer.stop()


async def start_notifier(env: dict[str, str], log_dir: Path, name: str, crash_at: str = "") -> ServiceProcess:
    """Started and ready. Waited for in a thread: the tests' webhook receiver answers on this loop meanwhile."""
    port = free_port()
    values = {**env, "HTTP_PORT": str(port), **({"REFUNDFLOW_CRASH_AT": crash_at} if crash_at else {})}
    process = ServiceProcess(
        name, ["refundflow-notifier"], service_env(**values), log_dir, f"http://127.0.0.1:{port}/readyz"
    )
    await asyncio.to_thread(process.wait_ready)
    return process


async def stopped(process: ServiceProcess) -> None:
    """SIGTERM, and wait for the exit in a thread: a notifier stopping finishes its sends to the loop's receiver."""
    await asyncio.to_thread(process.stop)


async def died(process: ServiceProcess, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while process.process.poll() is None:
        assert time.monotonic() < deadline, f"the notifier did not crash:\n{process.log_tail()}"
        await asyncio.sleep(0.1)
    process.stop()
    return process.process.returncode


@pytest.mark.parametrize(
    "crash_at",
    [
        "notifier.before_commit",  # the consumer queued the emails, the transaction never committed
        "notifier.message_claimed",  # the worker leased a batch and died before sending any of it
    ],
)
async def test_a_notifier_killed_mid_batch_sends_each_email_once_after_restart(
    crash_at: str,
    smtp: tuple[CapturingSmtpHandler, int],
    producer: AIOKafkaProducer,
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    mail, recipients, env, feed = await _setup(smtp, producer, postgres_url, kafka_bootstrap)

    crashing = await start_notifier(env, tmp_path, "notifier-crashing", crash_at)
    for to in recipients:
        await feed.publish(_succeeded(to))
    assert await died(crashing) == -9
    assert mail.messages == [], "nothing was sent before the crash"

    restarted = await start_notifier(env, tmp_path, "notifier-restarted")
    try:
        await eventually(lambda: _all_arrived(mail, recipients), timeout=90)
        await asyncio.sleep(1.5)  # time for a duplicate to show
    finally:
        await stopped(restarted)
    assert sorted(m["To"] for m in mail.messages) == sorted(recipients), "each email exactly once"


async def test_a_crash_after_the_server_accepted_resends_only_with_the_same_message_id(
    smtp: tuple[CapturingSmtpHandler, int],
    producer: AIOKafkaProducer,
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    mail, recipients, env, feed = await _setup(smtp, producer, postgres_url, kafka_bootstrap)

    crashing = await start_notifier(env, tmp_path, "notifier-crashing", "notifier.message_sent")
    for to in recipients:
        await feed.publish(_succeeded(to))
    assert await died(crashing) == -9
    accepted_before_crash = len(mail.messages)
    assert accepted_before_crash >= 1

    restarted = await start_notifier(env, tmp_path, "notifier-restarted")
    try:
        await eventually(lambda: _all_arrived(mail, recipients), timeout=90)
        await asyncio.sleep(1.5)
    finally:
        await stopped(restarted)
    for to in recipients:
        copies = mail.to(to)
        assert 1 <= len(copies) <= 2
        assert len({m["Message-ID"] for m in copies}) == 1, "a resend carries the same Message-ID"
    assert len(mail.messages) <= len(recipients) + accepted_before_crash, "only messages in the window went twice"


async def _setup(
    smtp: tuple[CapturingSmtpHandler, int], producer: AIOKafkaProducer, postgres_url: str, kafka_bootstrap: str
) -> tuple[CapturingSmtpHandler, list[str], dict[str, str], EventFeed]:
    mail, smtp_port = smtp
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {
        "DATABASE_URL": await create_database(postgres_url),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_TIMEOUT_SECONDS": "1",
        "MESSAGE_POLL_INTERVAL_SECONDS": "0.2",
        "EMAIL_ORDER_WAIT_SECONDS": "0",  # each "on its way" here comes alone: no approval email to wait for
        "CONSUMER_RETRY_BASE_SECONDS": "0.05",
        "WEBHOOK_SECRET_KEY": TEST_SECRET_KEY,
        # Generous for a loaded CI machine: a receiver answering after the timeout is retried, legitimately twice.
        "WEBHOOK_TIMEOUT_SECONDS": "3",
        "LEASE_MARGIN_SECONDS": "2",  # a lease is the call's deadline plus this: a crashed claim is retried soon
        "WEBHOOK_POLL_INTERVAL_SECONDS": "0.2",
        "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS": "true",  # the receiver is on 127.0.0.1
    }
    recipients = [f"customer{n}.{uuid.uuid4().hex[:6]}@example.com" for n in range(3)]
    return mail, recipients, env, EventFeed(producer, prefix)


def _succeeded(to: str) -> RefundSucceeded:
    suffix = uuid.uuid4().hex[:10]
    return RefundSucceeded(
        merchant_id="mer_crash",
        payment_id=f"pay_{suffix}",
        refund_id=f"ref_{suffix}",
        customer_email=to,
        amount=1500,
        currency="JPY",
        provider_refund_id=f"re_{suffix}",
    )


async def _all_arrived(mail: CapturingSmtpHandler, recipients: list[str]) -> bool:
    return all(mail.to(to) for to in recipients)


@pytest.mark.parametrize(
    ("crash_at", "duplicates_allowed"),
    [
        ("notifier.before_commit", False),  # the delivery was queued in a transaction that never committed
        ("notifier.webhook_answered", True),  # the receiver answered, the attempt was never recorded
    ],
)
async def test_a_notifier_killed_mid_delivery_sends_each_webhook_once_or_again_under_the_same_id(
    crash_at: str,
    duplicates_allowed: bool,
    smtp: tuple[CapturingSmtpHandler, int],
    producer: AIOKafkaProducer,
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    _, recipients, env, feed = await _setup(smtp, producer, postgres_url, kafka_bootstrap)
    secret = new_signing_secret()
    async with http_receiver() as http:
        first = await start_notifier(env, tmp_path, "notifier-configuring")
        pool = await asyncpg.create_pool(env["DATABASE_URL"], server_settings={"search_path": "notifier"})
        assert pool is not None
        try:
            await configure_endpoint(feed, pool, "mer_crash", http.url("hooks"), ["refund.succeeded"], secret=secret)
            await stopped(first)

            crashing = await start_notifier(env, tmp_path, "notifier-crashing", crash_at)
            events = [await feed.publish(_succeeded(to)) for to in recipients]
            assert await died(crashing) == -9

            restarted = await start_notifier(env, tmp_path, "notifier-restarted")
            try:

                async def all_recorded_delivered() -> bool:
                    # Every delivery, the crashed claim's too, sent again and recorded: none left pending.
                    succeeded, unfinished = await pool.fetchrow(
                        "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> "
                        "'succeeded') FROM webhook_deliveries"
                    )
                    return bool(succeeded == len(events) and unfinished == 0)

                await eventually(all_recorded_delivered, timeout=90)
                # The receiver answers at once: a timeout would be the test's loop blocked, and a spurious copy.
                assert await pool.fetchval("SELECT count(*) FROM webhook_attempts WHERE error = 'timeout'") == 0
            finally:
                await stopped(restarted)
        finally:
            await pool.close()

    ids = [r.headers["webhook-id"] for r in http.received["hooks"]]
    for delivery in http.received["hooks"]:
        Webhook(secret).verify(delivery.body, delivery.headers)
    if duplicates_allowed:
        # Every delivery in flight at the crash (several per endpoint) had been answered and not recorded:
        # each of those goes again, once, under its own webhook-id, so the receiver can drop the copy.
        copies = Counter(ids)
        assert set(copies) == {str(e.id) for e in events}
        assert all(1 <= n <= 2 for n in copies.values()), (
            "a delivery in the window went at most twice, with the same id"
        )
    else:
        assert sorted(ids) == sorted(str(e.id) for e in events), "each webhook exactly once"


async def test_a_notifier_stopped_while_a_receiver_answers_slowly_delivers_once(
    smtp: tuple[CapturingSmtpHandler, int],
    producer: AIOKafkaProducer,
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    # A rolling deploy: SIGTERM while the receiver takes 6 s of its 8 s deadline to answer.
    _, recipients, env, feed = await _setup(smtp, producer, postgres_url, kafka_bootstrap)
    env = {**env, "WEBHOOK_TIMEOUT_SECONDS": "8"}
    async with http_receiver() as http:
        http.scripts["slow"] = [(6.0, 200)]
        running = await start_notifier(env, tmp_path, "notifier-stopping")
        pool = await asyncpg.create_pool(env["DATABASE_URL"], server_settings={"search_path": "notifier"})
        assert pool is not None
        try:
            await configure_endpoint(
                feed, pool, "mer_crash", http.url("slow"), ["refund.succeeded"], secret=new_signing_secret()
            )
            event = await feed.publish(_succeeded(recipients[0]))
            await eventually(lambda: _arrived(http, "slow"), timeout=60)
            running.process.send_signal(signal.SIGTERM)
            await died(running)  # uvicorn ends with the signal it caught, once shut down
            assert [r.headers["webhook-id"] for r in http.received["slow"]] == [str(event.id)]
            status = await pool.fetchval("SELECT status FROM webhook_deliveries")
            assert status == "succeeded", "the call in flight was answered and recorded before the notifier stopped"

            restarted = await start_notifier(env, tmp_path, "notifier-restarted")
            try:
                # The delivery is recorded succeeded, so no lease can run out on it: once the restarted worker has
                # claimed (the next webhook arrives), a resend of the first would show within a second.
                later = await feed.publish(_succeeded(recipients[1]))
                await eventually(lambda: _arrived_times(http, "slow", 2), timeout=60)
                await asyncio.sleep(1)
            finally:
                await stopped(restarted)
        finally:
            await pool.close()
    ids = [r.headers["webhook-id"] for r in http.received["slow"]]
    assert ids == [str(event.id), str(later.id)], "delivered once across the restart"


async def _arrived(http: HttpReceiver, name: str) -> bool:
    return bool(http.received[name])


async def _arrived_times(http: HttpReceiver, name: str, count: int) -> bool:
    return len(http.received[name]) >= count
