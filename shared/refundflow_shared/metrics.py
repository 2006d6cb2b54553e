"""Every Prometheus metric Refundflow's services expose, in one registry per process (prometheus_client's own).

Label values stay bounded: services, event types and topics from the code, statuses and outcomes from fixed sets,
route templates, never ids or free text. Counting is in-process and cheap: no metric costs a query per event;
the gauges that read the database (outbox, stuck refunds) do so once per scrape.

A count that describes a database change is taken after the transaction commits (``count_after_commit``): a
rolled-back change, redone or never done, is not counted twice or at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No `_created` series: a timestamp per labelled child, twice the scrape, that no rule or panel reads.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Handlers take milliseconds; provider and HTTP calls up to seconds.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The backbone: every service.
EVENTS_HANDLED = Counter(
    "refundflow_events_handled",
    "Events read by a service's consumer, by what became of them: handled, duplicate (handled before), "
    "failed (one try of its handler raised), dead_lettered.",
    ["service", "event_type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "refundflow_handler_seconds",
    "Time one event's handler took, inside its inbox transaction.",
    ["service", "event_type"],
    buckets=_FAST,
)
CONSUMER_LAG = Gauge(
    "refundflow_consumer_lag",
    "Records in a partition not yet fetched by the service's consumer (end offset minus position), at scrape.",
    ["service", "topic", "partition"],
)
CONSUMER_UNDECODABLE_PAUSED = Gauge(
    "refundflow_consumer_undecodable_paused",
    "1 for each partition the service's consumer paused at a record the Kafka client cannot read, at scrape.",
    ["service", "topic", "partition"],
)
CONSUMER_BATCH_AGE_SECONDS = Gauge(
    "refundflow_consumer_batch_age_seconds",
    "How long the service's consumer has been handling the batch in hand (0 while it waits for records), at scrape. "
    "A stall shows here, not in the lag: no partition is fetched while a batch of it is held.",
    ["service"],
)
TOPIC_PARTITIONS = Gauge(
    "refundflow_topic_partitions",
    "Partitions of each topic the service consumes or publishes, read at start: all must be equal (README, Topics).",
    ["service", "topic"],
)
BACKGROUND_JOB_UP = Gauge(
    "refundflow_background_job_up",
    "1 while a background job of the service (outbox_relay, consumer's jobs, notifier_workers, ...) runs, 0 once it"
    " died: /healthz then fails until the process is restarted. Labelled worker, not job, as leased_work_failed.",
    ["service", "worker"],
)
BROKER_REACHABLE = Gauge(
    "refundflow_broker_reachable",
    "1 while the broker answered the service's last check (every 5 s), 0 while it did not. It does not decide "
    "readiness.",
    ["service"],
)
OUTBOX_UNSENT = Gauge(
    "refundflow_outbox_unsent", "Outbox rows waiting to be published (parked rows not included).", ["service"]
)
OUTBOX_OLDEST_UNSENT_SECONDS = Gauge(
    "refundflow_outbox_oldest_unsent_seconds", "Age of the oldest outbox row waiting to be published.", ["service"]
)
OUTBOX_PARKED = Gauge(
    "refundflow_outbox_parked", "Outbox rows the broker refused, parked until an operator retries them.", ["service"]
)
DLQ_MESSAGES = Counter(
    "refundflow_dlq_messages",
    "Messages parked on a dead-letter topic, by the topic they came from and the reason code.",
    ["service", "topic", "reason"],
)
LEASED_WORK_FAILED = Counter(
    "refundflow_leased_work_failed",
    "Leased work (a provider call, an email, a webhook delivery) that raised: a bug. Left leased, it is tried again"
    " each time its lease runs out. Labelled worker, not job: Prometheus's own target label is job.",
    ["worker"],
)

# Processor: the payment provider.
PROVIDER_CALLS = Counter(
    "refundflow_provider_calls",
    "Calls to the payment provider: ok, refused (a definite no), auth_failed, unavailable (no definite answer), "
    "cancelled (the call deadline or shutdown), error (anything else).",
    ["operation", "outcome"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "refundflow_provider_call_seconds", "Time a provider call took.", ["operation"], buckets=_SLOW
)

# Intake: the ledger and its HTTP API.
REFUNDS = Counter("refundflow_refunds", "Refund status changes, by the status entered (after commit).", ["status"])
REFUNDS_PROCESSING = Gauge("refundflow_refunds_processing", "Refunds approved and not yet finished at the provider.")
REFUNDS_PROCESSING_OLDEST_SECONDS = Gauge(
    "refundflow_refunds_processing_oldest_seconds", "Time since the longest-processing refund last changed."
)
HTTP_REQUESTS = Counter(
    "refundflow_http_requests", "HTTP requests answered, by route template.", ["method", "route", "status"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "refundflow_http_request_seconds", "Time to answer an HTTP request.", ["method", "route"], buckets=_SLOW
)

# Notifier: emails and webhooks.
EMAILS = Counter(
    "refundflow_emails",
    "Emails by kind and outcome: sent, retrying, rejected (permanently refused), failed (retries exhausted),"
    " waiting_for_relay (put back untried: the SMTP relay is away or refuses us), stale"
    " (a result ignored: the message was another claim's by then).",
    ["kind", "outcome"],
)
MESSAGES_OLDEST_DUE_SECONDS = Gauge(
    "refundflow_messages_oldest_due_seconds",
    "How long the message due the longest (email or team alert) has waited to be sent, at scrape: grows while the"
    " SMTP relay is away or refuses us.",
)
WEBHOOK_DELIVERIES = Counter(
    "refundflow_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retrying, failed (gave up), endpoint_gone (410), not_signed"
    " (no secret of the endpoint opens with the key ring: retried, never the endpoint's failure), stale (a failure"
    " ignored: the delivery was another claim's by then).",
    ["outcome"],
)

_pending: ContextVar[list[Callable[[], None]] | None] = ContextVar("refundflow_counts_after_commit", default=None)


def count_after_commit(count: Callable[[], None]) -> None:
    """Take ``count`` once the enclosing transaction commits (see ``counts_on_commit``). Outside any such scope
    (a command line, a job without one) it counts at once: the caller is then past its commit."""
    pending = _pending.get()
    if pending is None:
        count()
    else:
        pending.append(count)


class PendingCounts:
    def __init__(self) -> None:
        self.counts: list[Callable[[], None]] = []

    def discard(self) -> None:
        """What was counted so far did not happen after all (the change was rolled back)."""
        self.counts.clear()


@asynccontextmanager
async def counts_on_commit() -> AsyncIterator[PendingCounts]:
    """Gather the ``count_after_commit`` calls made in this block (and in the tasks it starts), and take them
    when it ends without an error. Enclose the transaction in it: ``async with counts_on_commit(),
    conn.transaction():`` takes the counts only once the transaction committed. Inside another such block, they
    are handed to it when this one ends without an error (one attempt of a request run again): an error drops them."""
    enclosing = _pending.get()
    pending = PendingCounts()
    token = _pending.set(pending.counts)
    try:
        yield pending
    finally:
        _pending.reset(token)
    if enclosing is not None:
        enclosing.extend(pending.counts)
        return
    for count in pending.counts:
        count()
