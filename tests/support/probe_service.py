"""A minimal service built from the shared backbone, to test the backbone itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from refundflow_shared.event_contract import ServiceContract, declare
from refundflow_shared.events import Event, EventType, RefundRequested
from refundflow_shared.outbox import add_event
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS

PROBE_MIGRATIONS = Path(__file__).parent / "probe_migrations"
PROBE = "probe"
PROBE_CONTRACT = declare(
    ServiceContract(
        PROBE,
        consumes={EventType.REFUND_REQUESTED: "records an effect per event"},
        publishes={EventType.REFUND_REQUESTED: "what the tests stage", EventType.TEAM_ALERT_RAISED: "the backbone's"},
    )
)
# A probe that only relays (its outbox) and consumes nothing.
RELAY_ONLY = ServiceContract(PROBE, consumes={}, publishes=PROBE_CONTRACT.publishes)


def probe_settings(database_url: str, kafka: str, prefix: str, **overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka,
        "topic_prefix": prefix,
        "consumer_retry_base_seconds": 0.05,
        "consumer_retry_max_seconds": 0.5,
        "outbox_poll_interval_seconds": 0.2,
        "consumer_session_timeout_ms": CONSUMER_SESSION_TIMEOUT_MS,
        **overrides,
    }
    return ServiceSettings.model_validate(values)


def refund_requested(payment_id: str, n: int = 1) -> RefundRequested:
    return RefundRequested(
        refund_id=f"ref_{payment_id}_{n}",
        payment_id=payment_id,
        merchant_id="mer_probe",
        customer_email="customer@example.com",
        amount=100 * n,
        currency="EUR",
        reason="requested_by_customer",
    )


async def stage_events(pool: asyncpg.Pool, events: list[RefundRequested]) -> list[Event]:
    """Write events to the probe's outbox, one transaction each (as state changes would)."""
    staged = []
    for data in events:
        async with pool.acquire() as conn, conn.transaction():
            staged.append(await add_event(conn, data, source=PROBE_CONTRACT.source))
    return staged


FailHook = Callable[[Event], Awaitable[None]]
FinishHook = Callable[[list[Event]], Awaitable[None]]
_EFFECT = "INSERT INTO effects (event_id, payment_id, sequence, instance) VALUES ($1, $2, $3, $4)"


async def start_probe(
    settings: ServiceSettings,
    *,
    instance: str = "a",
    before_effect: FailHook | None = None,
    consume: bool = True,
    effect_seconds: float = 0.0,
    finished: list[list[Event]] | None = None,
    before_finish: FinishHook | None = None,
    prepared: list[list[Event]] | None = None,
) -> ServiceRuntime:
    """A running probe service: consumes refund.requested and records an effect per event (the effect takes
    ``effect_seconds`` of database time, for tests that need the transaction open for a while).

    Given ``finished``, the handler leaves its effect to the consumer's ``finish``, which records the effects of
    each transaction in one call, and appends the events it was given to ``finished``. Given ``prepared``, a
    ``prepare`` appends the events it was given to ``prepared`` and the handler records its effect only if its event
    was among them."""
    runtime = ServiceRuntime(PROBE, settings, PROBE_MIGRATIONS, PROBE_CONTRACT if consume else RELAY_ONLY)
    await runtime.open()
    if consume and prepared is not None:

        async def see_events(conn: asyncpg.Connection, events: list[Event]) -> set[uuid.UUID]:
            prepared.append(events)
            return {event.id for event in events}

        @runtime.consumer.handles(RefundRequested, prepare=see_events)
        async def record_prepared_effect(
            conn: asyncpg.Connection, event: Event, data: RefundRequested, seen: set[uuid.UUID]
        ) -> None:
            if event.id not in seen:
                raise AssertionError("the handler was not given what the prepare of its events returned")
            if before_effect is not None:
                await before_effect(event)
            await conn.execute(_EFFECT, event.id, data.payment_id, event.sequence, instance)

    elif consume and finished is None:

        @runtime.consumer.handles(RefundRequested)
        async def record_effect(conn: asyncpg.Connection, event: Event, data: RefundRequested) -> None:
            if before_effect is not None:
                await before_effect(event)
            if effect_seconds:
                await conn.execute("SELECT pg_sleep($1)", effect_seconds)
            await conn.execute(_EFFECT, event.id, data.payment_id, event.sequence, instance)

    elif consume and finished is not None:

        async def record_effects(conn: asyncpg.Connection, effects: list[tuple[Event, str]]) -> None:
            events = [event for event, _ in effects]
            if before_finish is not None:
                await before_finish(events)
            rows = [(event.id, payment_id, event.sequence, instance) for event, payment_id in effects]
            await conn.executemany(_EFFECT, rows)
            finished.append(events)

        @runtime.consumer.handles(RefundRequested, finish=record_effects)
        async def leave_effect(conn: asyncpg.Connection, event: Event, data: RefundRequested) -> tuple[Event, str]:
            return event, data.payment_id

    await runtime.start()
    return runtime


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0, interval: float = 0.1) -> None:
    """Wait until ``check`` holds; fail the test with a clear message when it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
