"""Goodwill extensions of a subscription's period, as durable as cancels: the consumer records a grant; the
dispatcher executes it in two leased steps.

1. Read the subscription and fix the new period end (``until`` = its period end + the days granted), once.
2. Read it again: still the period end ``until`` was fixed from, and no record of the grant, move the period end to
   ``until`` (Stripe: ``trial_end`` with ``proration_behavior=none``) and, in the same change, record the grant on
   the subscription (metadata ``rf_ext_<grant>`` = ``until``). Repeating it with the same ``until`` (a crash, an
   expired lease) changes nothing more. A period end moved since (a renewal while the change waited: a refused key,
   an outage) fixes ``until`` again from the new end, as step 1: from the old one, the change would take back most
   of the period the customer just paid for.

A grant read again after a restore of this database (and ``consumer rewind``) finds its record on the subscription
at step 1: it was made, and is not made again. The subscription keeps the records of its latest
``GRANT_RECORDS_KEPT`` grants, fewer when the merchant's own metadata leaves less room (Stripe keeps 50 keys in all):
step 2 removes older ones. When the merchant's keys leave none, the grant is made unrecorded (logged): only this
database knows it, and a restore to before it makes it again.

Then ``subscription.extended`` tells the customer and the merchant's systems. A definite refusal alerts the
merchant's team (``subscription_extension_failed``) and publishes ``subscription.extension_failed`` (intake's
timeline and payment, merchants' webhooks); anything else is retried with backoff.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from refundflow_processor import subscription_extension_repository as extensions
from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.payment_provider import (
    ENDED_STATUSES,
    LATEST_TIMESTAMP,
    PaymentProvider,
    ProviderSubscription,
)
from refundflow_processor.provider_answers import AuthFailed, Done, Refused, Retry, ask
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.records import GRANT_KEY_PREFIX, SubscriptionExtension
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.subscription_ownership import PAYMENT_NEVER_CAME, REFUSAL_ALERT
from refundflow_processor.team_alerts import end_auth_episode, raise_alert, raise_auth_alert_once
from refundflow_shared.backoff import jittered
from refundflow_shared.database import transaction_holding
from refundflow_shared.event_contract import PROCESSOR
from refundflow_shared.events import NOTE_MAX_LENGTH, SubscriptionExtended, SubscriptionExtensionFailed, carry
from refundflow_shared.lease_dispatcher import LeaseDispatcher
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)

Answer = Done[ProviderSubscription] | Refused | Retry | AuthFailed
# The grants a subscription keeps a record of: a restore reads again the grants since its backup, the latest ones.
GRANT_RECORDS_KEPT = 10
MAX_METADATA_KEYS = 50  # Stripe's, the merchant's keys included


class SubscriptionExtensionExecutor:
    def __init__(
        self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings, pause: ProviderPause
    ) -> None:
        self._pool, self._provider, self._settings, self._pause = pool, provider, settings, pause
        self._policy = AttemptPolicy.from_settings(settings)
        self.dispatcher: LeaseDispatcher[SubscriptionExtension, str] = LeaseDispatcher(
            pool,
            channel=extensions.EXTENSIONS_CHANNEL,
            claim=self._claim,
            key=lambda extension: extension.extension_id,
            work=self.execute,
            max_in_flight=settings.executor_max_in_flight,
            poll_interval=settings.executor_poll_interval_seconds,
            paused=pause.remaining,
            name="subscription_extensions",
        )

    async def run(self) -> None:
        await self.dispatcher.run()

    async def _claim(self, limit: int, busy: list[str]) -> list[SubscriptionExtension]:
        # One claim at a time over every instance: each sees the leases the one before took, so two instances never
        # start two extensions of one subscription together.
        async with self._pool.acquire() as conn, transaction_holding(conn, "processor.extension_claim"):
            for waited in await extensions.take_extensions_past_payment_wait(conn):
                log.error("subscription_extension_payment_never_came", payment_id=waited.payment_id)
                await refuse_extension(conn, waited, PAYMENT_NEVER_CAME, **REFUSAL_ALERT)
            return await extensions.claim_due_extensions(conn, limit, self._settings.executor_lease_seconds, busy)

    async def execute(self, extension: SubscriptionExtension) -> None:
        ids = {"payment_id": extension.payment_id, "subscription_id": extension.subscription_id}
        structlog.contextvars.bind_contextvars(**ids)
        try:
            deadline = self._settings.provider_call_deadline_seconds
            answer: Answer = await ask(self._provider.get_subscription(extension.subscription_id), deadline)
            changed = False
            if isinstance(answer, Done) and extension.until and _change_due(extension, answer.value):
                call = self._provider.extend_subscription(
                    extension.subscription_id,
                    until=extension.until,
                    idempotency_key=extension.idempotency_key,
                    metadata=_grant_records(extension, extension.until),
                )
                answer, changed = await ask(call, deadline), True
            async with self._pool.acquire() as conn, conn.transaction():
                if await extensions.lock_leased_extension(conn, extension):
                    await self._record(conn, extension, answer, changed=changed)
                else:
                    log.warning("extension_lease_lost")
        finally:
            structlog.contextvars.unbind_contextvars(*ids)

    async def _record(
        self, conn: asyncpg.Connection, extension: SubscriptionExtension, answer: Answer, *, changed: bool
    ) -> None:
        match answer:
            case Done(subscription) if not changed:
                await self._act_on_read(conn, extension, subscription)
            case Done(subscription):
                if not extension.records_grant:
                    # Only our row knows it was made: a restore of this database to before it makes it again.
                    log.warning("subscription_extended_unrecorded", reason="the merchant's metadata takes all keys")
                await self._extended(conn, extension, subscription, subscription.current_period_end or extension.until)
            case Refused(message):
                await self._refused(conn, extension, message)
            case Retry(error):
                delay = jittered(self._policy.backoff(extension.tries + 1))
                log.warning("subscription_extension_retrying", tries=extension.tries + 1, error=error)
                await extensions.record_extension_retry(conn, extension, delay, error)
            case AuthFailed(error):
                pause = self._pause.trip()
                log.error("provider_auth_failed", error=error, calls_paused_for=pause)
                await extensions.record_extension_retry(conn, extension, pause, error, counted=False)
                await raise_auth_alert_once(conn, self._pause.kind, extension.merchant_id, error)
        if isinstance(answer, Done | Refused) and self._pause.in_episode:
            await end_auth_episode(conn, self._pause.kind)
            self._pause.clear()

    async def _extended(
        self,
        conn: asyncpg.Connection,
        extension: SubscriptionExtension,
        subscription: ProviderSubscription,
        period_end: datetime | None,
    ) -> None:
        await extensions.record_extension_state(conn, extension, "succeeded")
        told = carry(extension.to_customer, SubscriptionExtended)
        # The decision's cancel at the period's end, or one the subscription had already (an API cancel, or one
        # beside a refund-only grant): no payment follows the days added.
        last_period = bool(told.pop("last_period", False)) or subscription.cancel_at_period_end
        await add_event(
            conn,
            SubscriptionExtended(
                **told,
                last_period=last_period,
                payment_id=extension.payment_id,
                merchant_id=extension.merchant_id,
                subscription_id=extension.subscription_id,
                days=extension.days,
                current_period_end=period_end,
                refund_id=extension.refund_id,
            ),
            source=PROCESSOR.source,
        )
        log.info("subscription_extended", days=extension.days)

    async def _act_on_read(
        self, conn: asyncpg.Connection, extension: SubscriptionExtension, subscription: ProviderSubscription
    ) -> None:
        """What a read of the subscription leaves to do when its change is not due: the grant is made, refused, or
        its new period end is fixed (again, from a period end that moved since the last fix)."""
        if extension.grant_key in subscription.metadata:
            # Made already (this database was restored to before it): the days are in the period end the
            # provider holds. Told again, with the end it made, as the restore may have lost the announcement.
            log.warning("subscription_extension_already_made", grant_key=extension.grant_key)
            made_until = _timestamp(subscription.metadata[extension.grant_key]) or subscription.current_period_end
            if made_until is None:
                await self._refused(conn, extension, "made already, but nothing says when the period ends")
            else:
                await self._extended(conn, extension, subscription, made_until)
        elif extension.until and subscription.current_period_end == extension.until:
            # Made unrecorded (no room for a record), its answer lost: the period ends where the change moved it.
            await self._extended(conn, extension, subscription, extension.until)
        elif subscription.status in ENDED_STATUSES:
            await self._refused(conn, extension, f"the subscription is {subscription.status}: there is no period")
        elif subscription.current_period_end is None:
            await self._refused(conn, extension, "the provider did not say when the subscription's period ends")
        elif subscription.current_period_end > _LAST_DATE - timedelta(days=extension.days):
            await self._refused(conn, extension, "the subscription's period ends too late for any date after it")
        else:
            period_end = subscription.current_period_end
            if extension.from_period_end is not None:
                log.warning(
                    "subscription_extension_period_end_moved",
                    fixed_from=extension.from_period_end.isoformat(),
                    period_end=period_end.isoformat(),
                )
            until = period_end + timedelta(days=extension.days)
            room = _grant_records_room(subscription.metadata)
            stale = _stale_grant_keys(subscription.metadata, room)
            await extensions.fix_until(
                conn, extension, until, stale, records_grant=room > 0, from_period_end=period_end
            )
            log.info("subscription_extension_until_fixed", until=until.isoformat(), records_grant=room > 0)

    async def _refused(self, conn: asyncpg.Connection, extension: SubscriptionExtension, message: str) -> None:
        log.error("subscription_extension_refused", error=message)
        title = f"A goodwill extension of {extension.days} days could not be applied: the customer was not told"
        await refuse_extension(conn, extension, message, kind="subscription_extension_failed", title=title)


async def refuse_extension(
    conn: asyncpg.Connection, extension: SubscriptionExtension, message: str, *, kind: str, title: str
) -> None:
    """Record the extension failed, alert the merchant's team, and say so to intake and merchants' systems."""
    await extensions.record_extension_state(conn, extension, "failed", error=message)
    await raise_alert(
        conn,
        merchant_id=extension.merchant_id,
        kind=kind,
        title=title,
        details={"subscription_id": extension.subscription_id, "error": message},
        payment_id=extension.payment_id,
        refund_id=extension.refund_id,
    )
    # Intake shows it on the request and the payment, and merchants' systems hear it: the days did not come.
    await add_event(
        conn,
        SubscriptionExtensionFailed(
            payment_id=extension.payment_id,
            merchant_id=extension.merchant_id,
            subscription_id=extension.subscription_id,
            days=extension.days,
            refund_id=extension.refund_id,
            reason=message[:NOTE_MAX_LENGTH],
        ),
        source=PROCESSOR.source,
    )


def _change_due(extension: SubscriptionExtension, subscription: ProviderSubscription) -> bool:
    """True when the subscription, read just now, is as it was when ``until`` was fixed: running, still ending where
    it was read then, and without this grant's record (made already)."""
    return (
        extension.grant_key not in subscription.metadata
        and subscription.status not in ENDED_STATUSES
        and subscription.current_period_end is not None
        and subscription.current_period_end == extension.from_period_end
    )


def _grant_records(extension: SubscriptionExtension, until: datetime) -> dict[str, str]:
    """The metadata the change sets: this grant's record (its ``until``, a Unix time as ``trial_end``) unless there
    is no room for it, and an empty value (Stripe: remove the key) for each older record no longer kept."""
    record = {extension.grant_key: str(int(until.timestamp()))} if extension.records_grant else {}
    return record | dict.fromkeys(extension.stale_grant_keys, "")


def _grant_records_room(metadata: dict[str, str]) -> int:
    """How many grant records, this grant's included, the subscription can keep: ``GRANT_RECORDS_KEPT``, or fewer
    when the merchant's own keys leave less of Stripe's ``MAX_METADATA_KEYS`` (0: none, not even this grant's)."""
    merchants = sum(1 for key in metadata if not key.startswith(GRANT_KEY_PREFIX))
    return max(min(GRANT_RECORDS_KEPT, MAX_METADATA_KEYS - merchants), 0)


def _stale_grant_keys(metadata: dict[str, str], room: int) -> list[str]:
    """The subscription's grant records beyond the latest ``room - 1``, which this grant's joins: the latest grant
    has the latest ``until`` (a record whose value is not a time, not ours to read, goes first)."""
    records = [key for key in metadata if key.startswith(GRANT_KEY_PREFIX)]
    by_age = sorted(records, key=lambda key: (_timestamp(metadata[key]) or _LONG_AGO, key))
    return by_age[: max(len(by_age) - max(room - 1, 0), 0)]


_LONG_AGO = datetime.min.replace(tzinfo=UTC)
_LAST_DATE = datetime.fromtimestamp(LATEST_TIMESTAMP, UTC)


def _timestamp(value: str) -> datetime | None:
    """A grant record's ``until``, or None when it is not a Unix time a date can hold."""
    if not (value.isascii() and value.isdigit() and len(value) <= 12 and int(value) <= LATEST_TIMESTAMP):
        return None
    return datetime.fromtimestamp(int(value), UTC)
