"""What every service runs besides its own logic: migrations, pool, broker, consumer, outbox relay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from faststream.kafka import KafkaBroker

from refundflow_shared.broker_watch import BrokerWatch
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.database import create_pool, is_reachable
from refundflow_shared.event_contract import ServiceContract, contract_of
from refundflow_shared.events import topic_for
from refundflow_shared.http_service import Readiness
from refundflow_shared.kafka_topics import ensure_service_topics, partition_counts
from refundflow_shared.metrics import BACKGROUND_JOB_UP, CONSUMER_BATCH_AGE_SECONDS, TOPIC_PARTITIONS
from refundflow_shared.metrics_endpoint import ConsumerGauges, ScrapeHook, observe_outbox
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.outbox import OutboxRelay, limit_event_size
from refundflow_shared.retention import RetentionRule, run_retention
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.structured_logging import BROKER_LOGGER, configure_logging
from refundflow_shared.tracing import configure_tracing, flush

log = structlog.get_logger(__name__)


class ServiceRuntime:
    """Wires one service's backbone. Handlers register on ``consumer`` before ``start()``."""

    def __init__(
        self, name: str, settings: ServiceSettings, migrations: Path, contract: ServiceContract | None = None
    ) -> None:
        self.name = name
        self.contract = contract or contract_of(name)  # what it consumes and publishes (the AsyncAPI document's)
        self.settings = settings
        self._migrations = migrations
        # acks="all": the outbox marks a row sent only once every in-sync replica has it.
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            logger=logging.getLogger(BROKER_LOGGER),
            graceful_timeout=30,
            acks="all",
        )
        self._pool: asyncpg.Pool | None = None
        self._consumer: EventConsumer | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        days = timedelta(days=1)
        # What the backbone keeps; services append their own rules before start().
        self.retention_rules: list[RetentionRule] = [
            RetentionRule("outbox", "sent_at", settings.outbox_retention_days * days, "sent_at IS NOT NULL"),
            RetentionRule("inbox", "handled_at", settings.inbox_retention_days * days),
        ]
        # What /metrics reads at scrape besides the outbox and the consumer; services append theirs.
        self.scrape_hooks: list[ScrapeHook] = []
        self._consumer_gauges = ConsumerGauges(name)
        self._broker_watch = BrokerWatch(name, self.broker)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the runtime is not started"
        return self._pool

    @property
    def consumer(self) -> EventConsumer:
        assert self._consumer is not None, "the runtime is not started"
        return self._consumer

    async def open(self) -> None:
        """Migrate and connect; after this, handlers can be registered on ``consumer``."""
        configure_logging(self.name, self.settings.log_level)
        configure_tracing(self.name)
        limit_event_size(self.settings.event_max_bytes)
        await apply_migrations(self.settings.database_url, self.name, self._migrations)
        self._pool = await create_pool(self.settings.database_url, self.name, max_size=self.settings.database_pool_size)
        self._consumer = EventConsumer(self.name, self.broker, self._pool, self.settings, self.contract)

    async def start(self) -> None:
        """Create topics, start consuming and relaying."""
        await ensure_service_topics(self.settings)
        await self._check_partition_counts()
        self.consumer.subscribe()
        await self.broker.start()
        relay = OutboxRelay(
            self.pool,
            self.broker,
            schema=self.name,
            topic_prefix=self.settings.topic_prefix,
            batch_size=self.settings.outbox_batch_size,
            poll_interval=self.settings.outbox_poll_interval_seconds,
            park_after_attempts=self.settings.outbox_park_after_attempts,
        )
        self.run_in_background(relay.run(), "outbox_relay")
        self.run_in_background(self._broker_watch.run(), "broker_watch")
        retention = run_retention(self.pool, self.retention_rules, interval=self.settings.retention_interval_seconds)
        self.run_in_background(retention, "retention")
        log.info("service_started", consumes=self.consumer.topics)

    async def _check_partition_counts(self) -> None:
        """Show each of the service's topics' partition count; log an error when they differ (a payment's events then
        reach different instances: lock waits, ordered emails waiting out their fallback). It still starts: a topic an
        operator grew must not stop every instance; the RefundflowTopicPartitionsDiffer alert asks for equal counts.
        A topic the broker could not describe (its metadata behind a creation just made) is neither shown nor compared:
        as 0, its gauge kept the alert firing until a restart."""
        prefix = self.settings.topic_prefix
        topics = [topic_for(t, prefix) for t in (*self.contract.consumes, *self.contract.publishes)]
        counts = await partition_counts(self.settings.kafka_bootstrap_servers, topics)
        for topic, count in counts.items():
            TOPIC_PARTITIONS.labels(self.name, topic).set(count)
        if len(set(counts.values())) > 1:
            log.error("topic_partition_counts_differ", partitions=counts, expected=self.settings.topic_partitions)

    def run_in_background(self, job: object, name: str) -> None:
        """Run a long-lived job; if it ever dies the error is logged, its gauge drops to 0, and readiness and
        liveness fail (the process is restarted), never lost silently."""
        assert asyncio.iscoroutine(job)
        task: asyncio.Task[None] = asyncio.create_task(job, name=name)
        task.add_done_callback(self._job_ended)
        self._background.append(task)
        BACKGROUND_JOB_UP.labels(self.name, name).set(1)

    def _job_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        BACKGROUND_JOB_UP.labels(self.name, task.get_name()).set(0)
        error = None if task.cancelled() else task.exception()
        log.error("background_job_died", job=task.get_name(), error=repr(error))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._background:
            task.cancel()
        # A job that died was logged when it did (and failed readiness): stopping must not raise its error again.
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.broker.stop()
        if self._pool is not None:
            await self._pool.close()
        await asyncio.to_thread(flush)  # the spans still in the exporter's batch

    def lifespan(self, wire: Callable[[ServiceRuntime], None]) -> Callable[[Any], AbstractAsyncContextManager[None]]:
        """A FastAPI lifespan: migrate and connect, let ``wire`` register handlers and jobs, run, then stop."""

        @asynccontextmanager
        async def run(_: Any) -> AsyncIterator[None]:
            await self.open()
            wire(self)
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        return run

    @property
    def dead_jobs(self) -> list[str]:
        """Background jobs that ended: they run until the service stops, so any that ended has died."""
        return [task.get_name() for task in self._background if task.done()]

    async def refresh_metrics(self) -> None:
        """The scrape-time gauges: the consumer's batch age (first: it must show while the database is away), one
        outbox query, the consumer's lag and paused partitions (no I/O), then the service's hooks."""
        CONSUMER_BATCH_AGE_SECONDS.labels(self.name).set(self._consumer.batch_age if self._consumer is not None else 0)
        await observe_outbox(self.pool, self.name)
        await self._consumer_gauges.observe(self._consumer.kafka_consumer if self._consumer is not None else None)
        for hook in self.scrape_hooks:
            await hook(self.pool)

    async def readiness(self) -> Readiness:
        """Ready while the database answers and every job runs. The broker is shown, as last checked, and does not
        decide (``broker_watch``): a probe never waits for it."""
        database = self._pool is not None and await is_reachable(self._pool)
        dead = self.dead_jobs
        return Readiness(
            {"database": database, "jobs": not dead}, dead_jobs=dead, broker_reachable=self._broker_watch.reachable
        )
