"""Subscription cancels, as durable as refunds: the consumer records a request; the dispatcher executes it.

Cancelling is idempotent at the provider, so a repeated call (a crash, an expired lease) is harmless. A
definite refusal (4xx) alerts the merchant's team and tells intake (``subscription.cancel_failed``), so that the
cancel can be asked again; anything else is retried with backoff, for as long as it takes: a customer who was
refunded must stop being billed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog

from refundflow_processor import subscription_cancel_repository as cancels
from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.payment_provider import ENDED_STATUSES, PaymentProvider, ProviderSubscription
from refundflow_processor.provider_answers import AuthFailed, Done, Refused, Retry, ask
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.records import SubscriptionCancel
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.subscription_ownership import PAYMENT_NEVER_CAME, REFUSAL_ALERT
from refundflow_processor.team_alerts import end_auth_episode, raise_alert, raise_auth_alert_once
from refundflow_shared.backoff import jittered
from refundflow_shared.event_contract import PROCESSOR
from refundflow_shared.events import NOTE_MAX_LENGTH, SubscriptionCanceled, SubscriptionCancelFailed, carry
from refundflow_shared.lease_dispatcher import LeaseDispatcher
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AlreadyEnded:
    """The provider refused the cancel because the subscription had ended before it (as read after the refusal)."""

    subscription: ProviderSubscription


CancelAnswer = Done[ProviderSubscription] | AlreadyEnded | Refused | Retry | AuthFailed


class SubscriptionCancelExecutor:
    def __init__(
        self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings, pause: ProviderPause
    ) -> None:
        self._pool, self._provider, self._settings, self._pause = pool, provider, settings, pause
        self._policy = AttemptPolicy.from_settings(settings)
        self.dispatcher: LeaseDispatcher[SubscriptionCancel, str] = LeaseDispatcher(
            pool,
            channel=cancels.CANCELS_CHANNEL,
            claim=self._claim,
            key=lambda cancel: cancel.cancel_id,
            work=self.execute,
            max_in_flight=settings.executor_max_in_flight,
            poll_interval=settings.executor_poll_interval_seconds,
            paused=pause.remaining,
            name="subscription_cancels",
        )

    async def run(self) -> None:
        await self.dispatcher.run()

    async def _claim(self, limit: int, busy: list[str]) -> list[SubscriptionCancel]:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                for waited in await cancels.take_cancels_past_payment_wait(conn):
                    log.error("subscription_cancel_payment_never_came", payment_id=waited.payment_id)
                    await refuse_cancel(conn, waited, PAYMENT_NEVER_CAME, **REFUSAL_ALERT)
            return await cancels.claim_due_cancels(conn, limit, self._settings.executor_lease_seconds, busy)

    async def execute(self, cancel: SubscriptionCancel) -> None:
        structlog.contextvars.bind_contextvars(payment_id=cancel.payment_id, subscription_id=cancel.subscription_id)
        try:
            answer = await self._ask(cancel)
            async with self._pool.acquire() as conn, conn.transaction():
                if await cancels.lock_leased_cancel(conn, cancel):
                    await self._record(conn, cancel, answer)
                else:
                    log.warning("cancel_lease_lost")
        finally:
            structlog.contextvars.unbind_contextvars("payment_id", "subscription_id")

    async def _ask(self, cancel: SubscriptionCancel) -> CancelAnswer:
        # The cancel and the read after a refusal share one deadline: the lease outlives one deadline of calls.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.provider_call_deadline_seconds
        call = self._provider.cancel_subscription(cancel.subscription_id, at_period_end=cancel.at_period_end)
        answer = await ask(call, self._settings.provider_call_deadline_seconds)
        if isinstance(answer, Refused):
            if (left := deadline - loop.time()) <= 0:
                return Retry(f"{answer.message}; no time was left to read the subscription")
            # A subscription already ended cannot be ended again (Stripe answers 404 to cancelling a canceled one,
            # and refuses to schedule its end): that is this request done too, not a customer who may still be
            # billed. Until the read answers, the refusal says nothing final: retry (or pause) as the read says.
            current = await ask(self._provider.get_subscription(cancel.subscription_id), round(left, 3))
            match current:
                case Done(subscription) if subscription.status in ENDED_STATUSES:
                    return AlreadyEnded(subscription)
                case Retry(error):
                    return Retry(f"{answer.message}; the subscription could not be read: {error}")
                case AuthFailed():
                    return current
        return answer

    async def _record_canceled(
        self, conn: asyncpg.Connection, cancel: SubscriptionCancel, subscription: ProviderSubscription, *, before: bool
    ) -> None:
        """Done. ``before``: the subscription had ended before this request (the customer is told so, and when)."""
        await cancels.record_cancel_state(conn, cancel, "succeeded")
        await add_event(
            conn,
            SubscriptionCanceled(
                **carry(cancel.to_customer, SubscriptionCanceled),
                payment_id=cancel.payment_id,
                merchant_id=cancel.merchant_id,
                subscription_id=subscription.id,
                # At the period's end, unless it has ended already (another request cancelled it now).
                at_period_end=cancel.at_period_end and subscription.status not in ENDED_STATUSES,
                ends_at=subscription.ends_at,
                refund_id=cancel.refund_id,
                already_ended=before,
                after_extension=cancel.after_extension,
            ),
            source=PROCESSOR.source,
        )
        log.info("subscription_canceled", at_period_end=cancel.at_period_end, already_ended=before)

    async def _record(self, conn: asyncpg.Connection, cancel: SubscriptionCancel, answer: CancelAnswer) -> None:
        match answer:
            case Done(subscription):
                # Scheduling the end of a subscription that has ended: it had ended before this request.
                ended = subscription.status in ENDED_STATUSES
                await self._record_canceled(conn, cancel, subscription, before=cancel.at_period_end and ended)
            case AlreadyEnded(subscription):
                await self._record_canceled(conn, cancel, subscription, before=True)
            case Refused(message):
                log.error("subscription_cancel_refused", error=message)
                await refuse_cancel(
                    conn,
                    cancel,
                    message,
                    kind="subscription_cancel_failed",
                    title="A subscription could not be canceled: the customer may still be billed",
                    tell_customer=True,
                )
            case Retry(error):
                delay = jittered(self._policy.backoff(cancel.tries + 1))
                log.warning("subscription_cancel_retrying", tries=cancel.tries + 1, error=error)
                await cancels.record_cancel_retry(conn, cancel, delay, error)
            case AuthFailed(error):
                pause = self._pause.trip()
                log.error("provider_auth_failed", error=error, calls_paused_for=pause)
                await cancels.record_cancel_paused(conn, cancel, pause, error)
                await raise_auth_alert_once(conn, self._pause.kind, cancel.merchant_id, error)
        if isinstance(answer, Done | Refused) and self._pause.in_episode:
            await end_auth_episode(conn, self._pause.kind)
            self._pause.clear()


async def refuse_cancel(
    conn: asyncpg.Connection,
    cancel: SubscriptionCancel,
    message: str,
    *,
    kind: str,
    title: str,
    tell_customer: bool = False,
) -> None:
    """Record the cancel failed, alert the merchant's team and tell intake, which then counts the cancel as asked no
    longer (it may be asked again). ``tell_customer``: the provider refused it, so the event carries what the
    request said to the customer, and the notifier tells them; a cancel refused before any call (it named a
    subscription not of its payment) is the team's alone."""
    await cancels.record_cancel_state(conn, cancel, "failed", error=message)
    await raise_alert(
        conn,
        merchant_id=cancel.merchant_id,
        kind=kind,
        title=title,
        details={"subscription_id": cancel.subscription_id, "error": message},
        payment_id=cancel.payment_id,
        refund_id=cancel.refund_id,
    )
    await add_event(
        conn,
        SubscriptionCancelFailed(
            **(carry(cancel.to_customer, SubscriptionCancelFailed) if tell_customer else {}),
            payment_id=cancel.payment_id,
            merchant_id=cancel.merchant_id,
            subscription_id=cancel.subscription_id,
            at_period_end=cancel.at_period_end,
            refund_id=cancel.refund_id,
            reason=message[:NOTE_MAX_LENGTH],
            after_extension=cancel.after_extension,
        ),
        source=PROCESSOR.source,
    )
