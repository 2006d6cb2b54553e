"""A burst of refunds through the whole stack, with two instances each of the processor and the notifier (consumer
groups split the partitions, executors share attempts by lease), while one of each is SIGKILLed and restarted. Each
payment is refunded in two parts at once: the totals its ``payment.refunded`` events report count both."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from refundflow_devstack.smtp_sink import start_smtp_sink
from refundflow_shared.events import Event, PaymentSucceeded, Product, topic_for
from tests.conftest import create_database
from tests.support.infrastructure import free_port, kafka_broker
from tests.support.service_processes import ServiceProcess, service_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
REFUNDS = 200
PARTS = (2_000, 2_999)  # each payment (4,999) is refunded in full, in two refunds requested and approved together
KILL_AFTER_SUCCEEDED = 50
ADMIN_TOKEN = "burst-admin-token"


class Stack:
    """The services as OS processes; ``restart`` SIGKILLs one and starts a fresh one in its place."""

    def __init__(self, workdir: Path, common: dict[str, str]) -> None:
        self.workdir, self.common = workdir, common
        self.processes: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, command: str, port: int, **env: str) -> None:
        self.ports[name] = port
        health = f"http://127.0.0.1:{port}/" + ("healthz" if command == "sandbox" else "readyz")
        process_env = service_env(**{**self.common, "HTTP_PORT": str(port), **env})
        self.processes[name] = ServiceProcess(name, [f"refundflow-{command}"], process_env, self.workdir, health)

    def kill_and_restart(self, name: str, command: str) -> None:
        doomed = self.processes.pop(name)
        doomed_level = "INFO" if command == "processor" else "WARNING"
        doomed.process.kill()  # SIGKILL: no shutdown, no rollback, leases left behind
        doomed.process.wait()
        doomed.stop()
        self.start(f"{name}-restarted", command, self.ports[name], LOG_LEVEL=doomed_level)
        self.processes[f"{name}-restarted"].wait_ready()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@pytest.fixture
def stack(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Stack, Path, str, str, str]]:
    # A broker of its own: consumer groups are named by service, and an embedded Tansu may leave a group that
    # lost members to SIGKILL rebalancing for minutes, which would stall the next tests' processors.
    with kafka_broker(tmp_path / "kafka") as kafka_bootstrap:
        yield from _running_stack(postgres_url, kafka_bootstrap, tmp_path)


def _running_stack(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[Stack, Path, str, str, str]]:
    mail_dir, smtp_port = tmp_path / "mail", free_port()
    smtp = start_smtp_sink(mail_dir, port=smtp_port)
    database_url = asyncio.run(create_database(postgres_url))
    prefix = f"t{uuid.uuid4().hex[:10]}."
    sandbox_port = free_port()
    stack = Stack(
        tmp_path,
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TOPIC_PREFIX": prefix,
            "REFUNDFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "STRIPE_API_BASE": f"http://127.0.0.1:{sandbox_port}",
            "STRIPE_API_KEY": "sk_test_burst",
            "SANDBOX_PORT": str(sandbox_port),
            "SANDBOX_LATENCY_MS": "20",  # a provider a little way off
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_TIMEOUT_SECONDS": "2",  # the notifier's lease follows: a killed one's messages come back soon
            # The processor's lease is the call deadline plus the margin: a killed one's attempts come back soon.
            "PROVIDER_CALL_DEADLINE_SECONDS": "5",
            "EXECUTOR_LEASE_MARGIN_SECONDS": "2",
            "EXECUTOR_POLL_INTERVAL_SECONDS": "0.5",
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.5",
            "MESSAGE_POLL_INTERVAL_SECONDS": "0.5",
            "LOG_LEVEL": "WARNING",
        },
    )
    try:
        stack.start("sandbox", "sandbox", sandbox_port)
        stack.start("intake", "intake", free_port())
        for name in ("processor-a", "processor-b"):
            stack.start(name, "processor", free_port(), LOG_LEVEL="INFO")  # its log tells who executed what
        for name in ("notifier-a", "notifier-b"):
            stack.start(name, "notifier", free_port())
        for process in list(stack.processes.values()):
            process.wait_ready()
        yield stack, mail_dir, database_url, prefix, kafka_bootstrap
    finally:
        stack.stop()
        smtp.stop()


def test_a_burst_of_refunds_survives_killing_a_processor_and_a_notifier(
    stack: tuple[Stack, Path, str, str, str],
) -> None:
    services, mail_dir, database_url, prefix, kafka_bootstrap = stack
    api = httpx.Client(base_url=f"http://127.0.0.1:{services.ports['intake']}", timeout=30)
    merchant = api.post("/v1/merchants", json={"name": "Burst"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    payments = [paid(merchant.json()["id"], n) for n in range(REFUNDS // len(PARTS))]
    asyncio.run(publish(kafka_bootstrap, prefix, payments))  # the trusted path: billing's payment.succeeded

    def status_of(path: str) -> int:
        return api.get(path, headers=auth).status_code

    def refund_status(refund_id: str) -> str:
        return str(api.get(f"/v1/refunds/{refund_id}", headers=auth).json()["status"])

    for payment in payments:
        wait_for(lambda: status_of(f"/v1/payments/{payment.payment_id}") == 200, 60, "paid")  # noqa: B023

    def request_and_approve(part: tuple[PaymentSucceeded, int]) -> str:
        payment, amount = part
        body = {"payment_id": payment.payment_id, "reason": "duplicate", "amount": amount}
        refund = api.post("/v1/refunds", headers={**auth, "Idempotency-Key": uuid.uuid4().hex}, json=body)
        assert refund.status_code == 201, refund.text
        approved = api.post(f"/v1/refunds/{refund.json()['id']}/approve", headers=auth)
        assert approved.json()["status"] == "processing", approved.text
        return str(refund.json()["id"])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        approvals = pool.map(request_and_approve, [(payment, amount) for payment in payments for amount in PARTS])
        # Mid-burst: a processor and a notifier die without warning, and come back.
        wait_for(lambda: succeeded_at_processor(database_url) >= KILL_AFTER_SUCCEEDED, 180, "the burst under way")
        killed_at = succeeded_at_processor(database_url)
        services.kill_and_restart("processor-a", "processor")
        services.kill_and_restart("notifier-a", "notifier")
        refund_ids = list(approvals)
    assert killed_at < REFUNDS, "the kill came after the burst: it proves nothing"

    wait_for(lambda: succeeded_at_processor(database_url) == REFUNDS, 300, "every refund succeeded")
    burst_seconds = time.monotonic() - started
    for refund_id in refund_ids:
        wait_for(lambda: refund_status(refund_id) == "succeeded", 60, "intake saw the outcome")  # noqa: B023

    made = httpx.get(f"http://127.0.0.1:{services.ports['sandbox']}/v1/_sandbox/refunds").json()["data"]
    per_refund = Counter(r["metadata"].get("refund_id") for r in made)
    assert per_refund == dict.fromkeys(refund_ids, 1), "exactly one provider refund per refund"

    confirmations = wait_for(lambda: confirmations_by_refund(mail_dir, refund_ids), 300, "every confirmation email")
    assert all(len(set(ids)) == 1 for ids in confirmations.values()), "one confirmation (one Message-ID) per refund"
    duplicates = sum(len(ids) - 1 for ids in confirmations.values())
    logs = {name: p.log_path for name, p in services.processes.items() if name.startswith("processor")}
    executed = {name: _count(log, '"refund_succeeded"') for name, log in logs.items()}
    executed["processor-a (killed)"] = _count(services.workdir / "processor-a.log", '"refund_succeeded"')
    print(
        f"\n{REFUNDS} refunds requested, approved and executed in {burst_seconds:.1f} s; killed after {killed_at};"
        f" executed by {executed}; SMTP re-sends with the same Message-ID: {duplicates}"
    )

    assert asyncio.run(dead_letters(kafka_bootstrap, prefix)) == {}, "nothing dead-lettered"
    # Each payment's later payment.refunded counts both parts, whichever processor recorded them and when.
    reported = refunded_totals(database_url)
    assert set(reported) == {payment.payment_id for payment in payments}
    for payment_id, totals in reported.items():
        earlier, later = sorted(totals)
        assert earlier in {(part, 4_999 - part) for part in PARTS} and later == (4_999, 0), (payment_id, totals)


def paid(merchant_id: str, n: int) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=f"pay_burst_{uuid.uuid4().hex[:12]}",
        merchant_id=merchant_id,
        amount=4_999,
        currency="EUR",
        customer_email=f"customer{n}@example.com",
        provider_payment_id=f"pi_burst_{uuid.uuid4().hex[:16]}",
        paid_at=datetime.now(UTC),
        product=Product(id="prod_burst", name="Pro plan", kind="one_time"),
    )


async def publish(kafka: str, prefix: str, payments: list[PaymentSucceeded]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=False)
    await producer.start()
    try:
        for payment in payments:
            event = Event.wrap(payment, source="platform/billing", sequence=1)
            await producer.send(
                topic_for(payment.event_type, prefix),
                event.kafka_value(),
                key=event.partition_key.encode(),
                headers=[(k, v.encode()) for k, v in event.kafka_headers().items()],
            )
        await producer.flush()
    finally:
        await producer.stop()


def processor_rows(database_url: str, sql: str) -> list[asyncpg.Record]:
    """What ``sql`` reads in the processor's schema."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": "processor"})
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(fetch())


def succeeded_at_processor(database_url: str) -> int:
    [row] = processor_rows(database_url, "SELECT count(*) FROM refunds WHERE status = 'succeeded'")
    return int(row["count"])


def refunded_totals(database_url: str) -> dict[str, list[tuple[int, int]]]:
    """(refunded, remaining) of each payment.refunded the processors staged, by payment."""
    totals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in processor_rows(database_url, "SELECT payload FROM outbox WHERE event_type = 'payment.refunded'"):
        data = json.loads(bytes(row["payload"]))
        totals[data["payment_id"]].append((data["refunded_amount"], data["remaining_amount"]))
    return dict(totals)


def confirmations_by_refund(mail_dir: Path, refund_ids: list[str]) -> dict[str, list[str]] | None:
    """The Message-IDs of each refund's confirmation emails (one per message received); None until all came."""
    found: dict[str, list[str]] = defaultdict(list)
    wanted = set(refund_ids)
    for path in mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if not isinstance(message, EmailMessage) or "on its way" not in str(message["Subject"]):
            continue
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        for refund_id in (r for r in wanted if r in text):
            found[refund_id].append(str(message["Message-ID"]))
    return dict(found) if set(found) == wanted else None


async def dead_letters(kafka: str, prefix: str) -> dict[str, int]:
    """How many records each of the stack's ``.dlq`` topics holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith(prefix) and t.endswith(".dlq")]
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        held: Counter[str] = Counter()
        for partition in partitions:
            held[partition.topic] += ends[partition] - starts[partition]
        return {topic: n for topic, n in held.items() if n}
    finally:
        await consumer.stop()


def _count(log: Path, needle: str) -> int:
    return sum(needle in line for line in log.read_text(errors="replace").splitlines())
