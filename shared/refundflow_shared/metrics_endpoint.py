"""``/metrics`` for every service: the gauges read at scrape (outbox, the consumer's lag and paused partitions, a
service's own), then the process's registry in Prometheus' text format."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from refundflow_shared.metrics import (
    CONSUMER_LAG,
    CONSUMER_UNDECODABLE_PAUSED,
    OUTBOX_OLDEST_UNSENT_SECONDS,
    OUTBOX_PARKED,
    OUTBOX_UNSENT,
)

log = structlog.get_logger(__name__)

ScrapeHook = Callable[[asyncpg.Pool], Awaitable[None]]

# A scrape must answer even when the database or broker does not: the gauges then keep their last values.
_SCRAPE_DEADLINE_SECONDS = 2.0

# Three index-only lookups on the outbox's partial indexes, in one round trip.
_OUTBOX = """
SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL) AS unsent,
       (SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NOT NULL) AS parked,
       coalesce((SELECT extract(epoch FROM now() - created_at) FROM outbox
                 WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT 1), 0)::float8 AS oldest_seconds
"""


def metrics_router(refresh: Callable[[], Awaitable[None]]) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text: the process's metrics, the scrape-time gauges refreshed first."""
        try:
            async with asyncio.timeout(_SCRAPE_DEADLINE_SECONDS):
                await refresh()
        except Exception as exc:  # noqa: BLE001 - stale gauges beat no metrics; readiness reports the outage
            log.warning("metrics_refresh_failed", error=repr(exc))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


async def observe_outbox(pool: asyncpg.Pool, service: str) -> None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_OUTBOX)
    OUTBOX_UNSENT.labels(service).set(row["unsent"])
    OUTBOX_PARKED.labels(service).set(row["parked"])
    OUTBOX_OLDEST_UNSENT_SECONDS.labels(service).set(row["oldest_seconds"])


class ConsumerGauges:
    """One service's consumer lag per assigned partition, and the partitions it paused at a record it cannot read
    (``undecodable_records``: only that pauses one); partitions it no longer holds, or resumed, are dropped."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._shown: dict[Gauge, set[tuple[str, str]]] = {CONSUMER_LAG: set(), CONSUMER_UNDECODABLE_PAUSED: set()}

    async def observe(self, consumer: AIOKafkaConsumer | None) -> None:
        lags = await _lags(consumer) if consumer is not None else {}
        paused = {(tp.topic, str(tp.partition)): 1 for tp in consumer.paused()} if consumer is not None else {}
        self._show(CONSUMER_LAG, lags)
        self._show(CONSUMER_UNDECODABLE_PAUSED, paused)

    def _show(self, gauge: Gauge, values: dict[tuple[str, str], int]) -> None:
        for topic, partition in self._shown[gauge] - values.keys():
            with contextlib.suppress(KeyError):  # another runtime of this service in the process (tests) took it
                gauge.remove(self._service, topic, partition)
        for (topic, partition), value in values.items():
            gauge.labels(self._service, topic, partition).set(value)
        self._shown[gauge] = set(values)


async def _lags(consumer: AIOKafkaConsumer) -> dict[tuple[str, str], int]:
    """End offset minus position for each assigned partition whose both are known (no broker round trip: the
    end offset comes with every fetch, the position is the consumer's own)."""
    partitions = list(consumer.assignment())
    lags = await asyncio.gather(*(_lag(consumer, tp) for tp in partitions))
    return {(tp.topic, str(tp.partition)): lag for tp, lag in zip(partitions, lags, strict=True) if lag is not None}


async def _lag(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """None when the consumer has no position or end offset for it now (it would wait for one: not on a scrape)."""
    try:
        async with asyncio.timeout(0.05):
            position: int = await consumer.position(tp)
        highwater: int | None = consumer.highwater(tp)
    except (TimeoutError, AssertionError, KafkaError):  # unassigned meanwhile, or no position yet: not shown
        return None
    return None if highwater is None else max(0, highwater - position)
