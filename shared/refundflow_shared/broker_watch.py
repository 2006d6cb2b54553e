"""Whether the broker answers, checked in the background: /readyz and /metrics show it without waiting for it.

It never decides readiness: what a service is asked over HTTP touches only PostgreSQL, and what it publishes waits
in the outbox, so an instance taken out of the load balancer for a broker outage (every instance's at once) would
only turn requests away it could have served."""

from __future__ import annotations

import asyncio

import structlog
from faststream.kafka import KafkaBroker

from refundflow_shared.metrics import BROKER_REACHABLE

log = structlog.get_logger(__name__)

CHECK_EVERY_SECONDS = 5.0
ANSWER_WITHIN_SECONDS = 2.0


class BrokerWatch:
    def __init__(self, service: str, broker: KafkaBroker, *, every: float = CHECK_EVERY_SECONDS) -> None:
        self._service = service
        self._broker = broker
        self._every = every
        self.reachable = True  # the service's start needed it
        self._failed_checks = 0
        BROKER_REACHABLE.labels(service).set(1)

    async def run(self) -> None:
        """Ask the broker every ``every`` seconds until cancelled. While it does not answer, this is the service's one
        line about it per check (the Kafka client's own, dozens a second, are off: ``structured_logging``)."""
        while True:
            await asyncio.sleep(self._every)
            reachable = await self._broker.ping(timeout=ANSWER_WITHIN_SECONDS)
            if not reachable:
                self._failed_checks += 1
                log.warning("broker_unavailable", failed_checks=self._failed_checks, next_check_in=self._every)
            elif not self.reachable:
                log.info("broker_reachable_again", failed_checks=self._failed_checks)
                self._failed_checks = 0
            self.reachable = reachable
            BROKER_REACHABLE.labels(self._service).set(1 if reachable else 0)
