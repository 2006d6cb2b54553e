"""The sync job can never die (security review, finding 12): a payment the provider does not know is flagged
and retried later, and every other payment is still scanned. What it finds is booked as made outside Refundflow
only when it is: never our own refund that a database restore made us forget."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refundflow_notifier.notification_rules import team_alerts
from refundflow_processor.app import MIGRATIONS as PROCESSOR_MIGRATIONS
from refundflow_processor.payment_provider import (
    PaymentProvider,
    ProviderRefund,
    ProviderUnavailable,
)
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.refund_sync import RefundSync
from refundflow_processor.stripe_provider import StripeProvider
from refundflow_shared.events import PaymentSucceeded, Product, TeamAlertRaised
from refundflow_shared.migrations_runner import apply_migrations
from tests.conftest import create_database
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, approval, payment_intent, running_processor
from tests.support.subscription_providers import NoSubscriptionsHere

pytestmark = pytest.mark.asyncio(loop_scope="session")


def paid(provider_payment_id: str, payment_id: str | None = None, merchant_id: str = "mer_sync") -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=payment_id or f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id=merchant_id,
        amount=10_000,
        currency="EUR",
        customer_email="ada@example.com",
        provider_payment_id=provider_payment_id,
        paid_at=datetime.now(UTC),
        product=Product(id="prod", name="Pro", kind="one_time"),
    )


async def detected(processor: ProcessorUnderTest, provider_refund_id: str) -> None:
    async def found() -> bool:
        return bool(await processor.staged("refund.external_detected", about=provider_refund_id))

    await eventually(found, timeout=30)


async def test_a_payment_the_provider_does_not_know_is_flagged_and_the_others_are_still_scanned(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # A scan's lease (the call's deadline + margin) ends before the next run, as with the default settings.
    lease_ends_before_the_next_run: dict[str, Any] = {
        "sync_interval_seconds": 1.5,
        "provider_call_deadline_seconds": 1.0,
        "executor_lease_margin_seconds": 0.1,
    }
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, **lease_ends_before_the_next_run
    ) as processor:
        unknown = paid(payment_intent("missing_"))  # e.g. a mistyped pi_: Stripe answers resource_missing
        await processor.publish(unknown)

        async def flagged() -> bool:
            row = await processor.db.fetchrow(
                "SELECT sync_error, sync_failures FROM payments WHERE payment_id = $1", unknown.payment_id
            )
            return row is not None and row["sync_failures"] >= 1

        await eventually(flagged, timeout=30)
        error = await processor.db.fetchval("SELECT sync_error FROM payments WHERE payment_id = $1", unknown.payment_id)
        assert "resource_missing" in error

        dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
        for _ in range(2):  # one scan after the other: the job lives on
            known = paid(payment_intent())
            await processor.publish(known)
            made = await dashboard.v1.refunds.create_async(
                params={"payment_intent": known.provider_payment_id, "amount": 1_000}
            )
            await detected(processor, made.id)
        failures = await processor.db.fetchval(
            "SELECT sync_failures FROM payments WHERE payment_id = $1", unknown.payment_id
        )
        assert failures >= 1
        never_synced = await processor.db.fetchval(
            "SELECT last_synced_at = '-infinity' FROM payments WHERE payment_id = $1", unknown.payment_id
        )
        assert never_synced, "a payment is marked scanned only once it was"

        # Flagged for long (a thousand failed scans): its next pause is still a time, and the others still scanned.
        # The pause doubled past what PostgreSQL's numbers hold (at 1019 failures with the default 60 s interval,
        # at 1024 whatever the interval), so the failed scan could not be recorded, and the payment, never scanned
        # and so first in line, stayed due and stopped every run.
        await processor.db.execute(
            "UPDATE payments SET sync_failures = 1024, sync_retry_at = '-infinity' WHERE payment_id = $1",
            unknown.payment_id,
        )
        made = await dashboard.v1.refunds.create_async(
            params={"payment_intent": known.provider_payment_id, "amount": 1_000}
        )
        await detected(processor, made.id)
        retry_later = await processor.db.fetchval(
            "SELECT sync_failures = 1025 AND sync_retry_at > now() FROM payments WHERE payment_id = $1",
            unknown.payment_id,
        )
        assert retry_later, "the failed scan was recorded, with its pause"


async def scanned_since(processor: ProcessorUnderTest, payment_id: str, moment: datetime) -> None:
    async def scanned() -> bool:
        return bool(
            await processor.db.fetchval(
                "SELECT last_synced_at > $2 FROM payments WHERE payment_id = $1", payment_id, moment
            )
        )

    await eventually(scanned, timeout=30)


async def test_our_refund_a_restore_forgot_is_not_booked_as_external_while_its_approval_is_read_again(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """After a database restore the scan meets our refund (its metadata names our refund id) before the rewound
    consumer reads its approval again: it waits for it, alerting once if it stays unknown, and books nothing; the
    approval read again then adopts it, within the payment's room."""
    intent = payment_intent()
    approved = approval(intent, amount=10_000)  # all of the payment: booked as external, it would leave no room
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, sync_unrecorded_refund_alert_after_seconds=1
    ) as processor:
        await processor.publish(paid(intent, approved.payment_id, approved.merchant_id))
        event = await processor.publish(approved)

        async def succeeded() -> bool:
            return await processor.refund_status(approved.refund_id) == "succeeded"

        await eventually(succeeded, timeout=60)
        # The outcome pulls the payment's scan forward: let that scan end first, or it may read the refund before
        # the "restore" and its attempts after (a live processor the test rewinds; a real restore stops it first).
        await scanned_since(processor, approved.payment_id, await processor.db.fetchval("SELECT now()"))
        [made] = await processor.provider_refunds(intent)
        await processor.restore_before(event, approved.refund_id)
        restored_at = await processor.db.fetchval("SELECT now()")
        await scanned_since(processor, approved.payment_id, restored_at)
        assert await processor.staged("refund.external_detected", about=made["id"]) == []

        async def alerted() -> bool:
            return bool(await processor.staged("team_alert.raised", about=approved.refund_id))

        await eventually(alerted, timeout=30)
        await scanned_since(processor, approved.payment_id, await processor.db.fetchval("SELECT now()"))
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)  # once
        assert (alert["kind"], alert["details"]["provider_refund_id"]) == ("unrecorded_provider_refund", made["id"])

        await processor.deliver_again(event)
        await eventually(succeeded, timeout=60)
        await scanned_since(processor, approved.payment_id, await processor.db.fetchval("SELECT now()"))
        assert await processor.staged("refund.external_detected", about=made["id"]) == []
        adopted = await processor.db.fetchval(
            "SELECT provider_refund_id FROM refunds WHERE refund_id = $1", approved.refund_id
        )
        assert adopted == made["id"], "the approval read again adopted the refund made before the restore"
        assert len(await processor.provider_refunds(intent)) == 1


async def test_a_second_provider_refund_made_for_our_finished_refund_is_booked_and_alerted(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Another refund at the provider carries our refund's id (a retry by hand in Stripe's dashboard, a script):
    once ours is done, the money it moved left all the same, so it is booked as external (the payment's room and
    the balance count it) and the team is told it may be a duplicate; a plain one is booked as before."""
    intent = payment_intent()
    approved = approval(intent)
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, webhooks=False) as processor:
        await processor.publish(approved)

        async def succeeded() -> bool:
            return await processor.refund_status(approved.refund_id) == "succeeded"

        await eventually(succeeded, timeout=60)
        dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
        again = await dashboard.v1.refunds.create_async(
            params={"payment_intent": intent, "amount": 2_500, "metadata": {"refund_id": approved.refund_id}}
        )
        plain = await dashboard.v1.refunds.create_async(params={"payment_intent": intent, "amount": 1_000})
        await detected(processor, plain.id)
        await detected(processor, again.id)
        [booked] = await processor.staged("refund.external_detected", about=again.id)
        assert (booked["amount"], booked["status"], booked["payment_id"]) == (2_500, "succeeded", approved.payment_id)

        await scanned_since(processor, approved.payment_id, await processor.db.fetchval("SELECT now()"))
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)  # once
        assert (alert["kind"], alert["details"]["provider_refund_id"]) == ("duplicate_refund", again.id)
        [told] = team_alerts(TeamAlertRaised.model_validate(alert))
        assert "• refund: €25.00\n" in told.slack_text(), "the team reads amounts as they read them everywhere"
        assert await processor.staged("team_alert.raised", about=plain.id) == []
        assert await processor.refund_status(approved.refund_id) == "succeeded"


class SlowProvider(NoSubscriptionsHere):
    """Each list or read takes ``seconds``; it notes how many calls about one payment or refund overlap."""

    name = "stripe"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.in_flight: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.overlapping: set[str] = set()

    async def _slow(self, about: str) -> None:
        self.calls[about] = self.calls.get(about, 0) + 1
        self.in_flight[about] = self.in_flight.get(about, 0) + 1
        if self.in_flight[about] > 1:
            self.overlapping.add(about)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight[about] -= 1

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        await self._slow(payment_ref)
        return []

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        await self._slow(provider_refund_id)
        return ProviderRefund(provider_refund_id, "pending", 1_000, "eur")

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        raise ProviderUnavailable("not in this test")


def another_instance(processor: ProcessorUnderTest, provider: PaymentProvider) -> RefundSync:
    """The sync job of another processor instance, on the same database."""
    settings = processor.settings
    pause = ProviderPause("refunds", settings.provider_auth_pause_seconds, settings.provider_auth_pause_max_seconds)
    return RefundSync(processor.db, provider, settings, pause)


async def registered(processor: ProcessorUnderTest, payments: list[PaymentSucceeded]) -> None:
    for payment in payments:
        await processor.publish(payment)

    async def all_there() -> bool:
        ids = [p.payment_id for p in payments]
        found: int = await processor.db.fetchval("SELECT count(*) FROM payments WHERE payment_id = ANY($1)", ids)
        return found == len(ids)

    await eventually(all_there, timeout=30)


# The processor's own job runs once, at its start (before any payment): the tests run two instances' jobs.
ONE_RUN: dict[str, Any] = {"sync_interval_seconds": 3600.0, "sync_payments_per_run": 8}


async def test_two_instances_never_scan_one_payment_at_once_however_long_a_run_takes(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = SlowProvider(seconds=0.8)  # 8 payments: 6.4 s in one run, past the 3 s lease of a claim
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, provider=provider, **ONE_RUN
    ) as processor:
        await registered(processor, [paid(payment_intent()) for _ in range(8)])
        first, second = another_instance(processor, provider), another_instance(processor, provider)

        async def later() -> int:
            await asyncio.sleep(processor.settings.executor_lease_seconds + 0.2)
            return await second.scan_payments()

        await asyncio.gather(first.scan_payments(), later())
        assert provider.overlapping == set(), "another instance scanned a payment still being scanned"


async def test_two_instances_never_poll_one_pending_refund_together(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = SlowProvider(seconds=0.3)
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, provider=provider, **ONE_RUN
    ) as processor:
        payment = paid(payment_intent())
        await registered(processor, [payment])
        pending = [f"re_pending_{n}" for n in range(6)]
        for provider_refund_id in pending:  # made outside Refundflow, pending for an hour
            await processor.db.execute(
                "INSERT INTO external_refunds (provider_refund_id, payment_id, amount, currency, status, updated_at)"
                " VALUES ($1, $2, 1000, 'EUR', 'pending', now() - interval '1 hour')",
                provider_refund_id,
                payment.payment_id,
            )
        first, second = another_instance(processor, provider), another_instance(processor, provider)

        await asyncio.gather(first.poll_pending_refunds(), second.poll_pending_refunds())
        assert provider.calls == dict.fromkeys(pending, 1), "each pending refund asked about once"


async def time_passes(processor: ProcessorUnderTest, by: timedelta) -> None:
    """Every time the processor keeps about its payments moves back ``by``, as if that much time had passed."""
    columns = await processor.db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'processor'"
        " AND table_name = 'payments' AND data_type = 'timestamp with time zone'"
    )
    moved = ", ".join(f"{c['column_name']} = {c['column_name']} - $1::interval" for c in columns)
    await processor.db.execute(f"UPDATE payments SET {moved}", by)


async def test_a_scan_reports_an_older_refunds_failure_before_a_newer_refund(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The provider lists refunds newest first: reported in that order, a new refund would reach intake before an
    older one's failure, and the payment would look refunded past its amount meanwhile."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, webhooks=False, **ONE_RUN) as processor:
        payment = paid(payment_intent())
        await registered(processor, [payment])
        settings = processor.settings
        stripe_api = StripeProvider(
            settings.stripe_api_key.get_secret_value(), settings.stripe_api_base, settings.stripe_timeout_seconds
        )
        try:
            scan = another_instance(processor, stripe_api)
            dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
            older = await dashboard.v1.refunds.create_async(
                params={"payment_intent": payment.provider_payment_id, "amount": 10_000}
            )
            await scan.scan_payments()
            await processor.sandbox("POST", f"refunds/{older.id}/fail")
            newer = await dashboard.v1.refunds.create_async(
                params={"payment_intent": payment.provider_payment_id, "amount": 10_000}
            )
            await time_passes(processor, timedelta(hours=1))  # its next scan is due
            await scan.scan_payments()

            reported = [
                (r["provider_refund_id"], r["status"])
                for r in await processor.staged("refund.external_detected", about=payment.payment_id)
            ]
            assert reported == [(older.id, "succeeded"), (older.id, "failed"), (newer.id, "succeeded")]
        finally:
            await stripe_api.close()


class AnswersRewritten:
    """A real HTTP server in front of the sandbox that passes every call on, except that it answers a read of a
    refund named in ``reads`` with the refund the entry names (read from the sandbox, ``changes`` applied), and adds
    to a payment's listing in ``listings`` the refunds of the payment the entry names."""

    def __init__(self) -> None:
        self.upstream = ""
        self.reads: dict[str, tuple[str, dict[str, Any]]] = {}
        self.listings: dict[str, str] = {}
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        path, body = request.url.path, await request.body()
        async with httpx.AsyncClient(base_url=self.upstream, headers=headers) as client:
            asked = path.removeprefix("/v1/refunds/")
            if request.method == "GET" and asked in self.reads:
                other, changes = self.reads[asked]
                answered = (await client.get(f"/v1/refunds/{other}")).json() | changes
                return Response(json.dumps(answered), 200, media_type="application/json")
            answer = await client.request(request.method, f"{path}?{request.url.query}", content=body)
            listed = request.query_params.get("payment_intent", "")
            if request.method == "GET" and path == "/v1/refunds" and listed in self.listings:
                extra = await client.get("/v1/refunds", params={"payment_intent": self.listings[listed]})
                merged = answer.json()
                merged["data"] = extra.json()["data"] + merged["data"]
                return Response(json.dumps(merged), 200, media_type="application/json")
            return Response(answer.content, answer.status_code, media_type="application/json")


async def provider_refund_id_of(processor: ProcessorUnderTest, refund_id: str) -> str:
    async def recorded() -> str | None:
        found: str | None = await processor.db.fetchval(
            "SELECT provider_refund_id FROM refund_attempts WHERE refund_id = $1 AND provider_refund_id IS NOT NULL",
            refund_id,
        )
        return found

    async def is_recorded() -> bool:
        return await recorded() is not None

    await eventually(is_recorded, timeout=30)
    found = await recorded()
    assert found is not None
    return found


async def test_a_poll_answered_with_another_refund_changes_neither(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The poll asked for refund A and recorded the answer under the answer's own id: an answer about B failed B,
    which had not failed. An answer about another refund than the one asked for is malformed, and changes nothing."""
    gateway, port = AnswersRewritten(), free_port()
    async with (
        serving(gateway.app, port) as gateway_url,
        running_processor(
            database_url,
            kafka_bootstrap,
            topic_prefix,
            webhooks=False,
            stripe_api_base=gateway_url,
            sandbox={"pending_seconds": 8.0},
            sync_pending_after_seconds=0,
        ) as processor,
    ):
        gateway.upstream = processor.sandbox_url
        first, second = approval(payment_intent("pending_")), approval(payment_intent("pending_"))
        await processor.publish(first)
        await processor.publish(second)
        refund_a = await provider_refund_id_of(processor, first.refund_id)
        refund_b = await provider_refund_id_of(processor, second.refund_id)
        gateway.reads[refund_a] = (refund_b, {"status": "failed", "failure_reason": "declined"})

        async def second_finished() -> bool:
            return await processor.refund_status(second.refund_id) != "processing"

        await eventually(second_finished, timeout=40)
        assert await processor.refund_status(second.refund_id) == "succeeded", "B is what the provider says of B"
        # A's polls never answer about A (its payment's scan may still find it settled): a failure came from none.
        assert await processor.refund_status(first.refund_id) != "failed"


async def test_a_listing_holding_another_payments_refund_books_none_of_it(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The scan booked every refund listed for a payment against it: one of another payment (the answer's own
    payment_intent says so) was booked as made outside Refundflow on the scanned payment. It is skipped, and the team
    told once."""
    gateway, port = AnswersRewritten(), free_port()
    async with (
        serving(gateway.app, port) as gateway_url,
        running_processor(database_url, kafka_bootstrap, topic_prefix, stripe_api_base=gateway_url) as processor,
    ):
        gateway.upstream = processor.sandbox_url
        scanned, elsewhere = payment_intent(), payment_intent()
        payment = paid(scanned)
        await processor.publish(payment)
        dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
        foreign = await dashboard.v1.refunds.create_async(params={"payment_intent": elsewhere, "amount": 1_000})
        gateway.listings[scanned] = elsewhere

        async def scanned_once() -> bool:
            return bool(
                await processor.db.fetchval(
                    "SELECT last_synced_at > '-infinity' FROM payments WHERE payment_id = $1", payment.payment_id
                )
            )

        await eventually(scanned_once, timeout=30)
        await scanned_since(processor, payment.payment_id, await processor.db.fetchval("SELECT now()"))
        alerts = await processor.staged("team_alert.raised", about=payment.payment_id)
        assert [(a["kind"], a["details"]["provider_refund_id"]) for a in alerts] == [
            ("provider_refund_of_another_payment", foreign.id)
        ], "told once"
        assert await processor.staged("refund.external_detected", about=foreign.id) == []


async def test_recent_payments_are_scanned_often_old_ones_seldom_and_none_past_the_refund_window(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Scanning every payment ever known in turn, a refund made in the provider's dashboard on today's payment
    waited for the scan of every older one: with a million payments, a week."""
    provider = SlowProvider(seconds=0)
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, provider=provider, **ONE_RUN
    ) as processor:
        ages = {"today": timedelta(hours=1), "last_month": timedelta(days=30), "last_year": timedelta(days=400)}
        payments = {name: paid(payment_intent(f"{name}_")) for name in ages}
        await registered(processor, list(payments.values()))
        for name, age in ages.items():
            await processor.db.execute(
                "UPDATE payments SET created_at = now() - $2::interval WHERE payment_id = $1",
                payments[name].payment_id,
                age,
            )
        job = another_instance(processor, provider)

        async def scanned_after(passed: timedelta) -> set[str]:
            await time_passes(processor, passed)
            provider.calls.clear()
            await job.scan_payments()
            return {name for name, p in payments.items() if p.provider_payment_id in provider.calls}

        # Each is scanned once it is known; the one past the refund window (a year) one last time.
        assert await scanned_after(timedelta(0)) == set(ages)
        assert await scanned_after(timedelta(minutes=1)) == set()
        assert await scanned_after(timedelta(hours=1)) == {"today"}  # the job's interval (an hour here) apart, at least
        assert await scanned_after(timedelta(days=3)) == {"today"}
        assert await scanned_after(timedelta(days=5)) == {"today", "last_month"}
        assert await scanned_after(timedelta(days=400)) == {"today", "last_month"}  # each one last time
        assert await scanned_after(timedelta(days=400)) == set()


async def test_payments_known_before_the_upgrade_are_scheduled_by_their_age(postgres_url: str, tmp_path: Path) -> None:
    """Never scanned: due now; the others a quarter of their age after their last scan, at most a week. One scanned
    a year after it was known: due for the sync job to decide under its configured window (migration 0862; 0840 had
    closed it for good, whatever the window)."""
    dsn = await create_database(postgres_url)
    before = tmp_path / "before"
    before.mkdir()
    for path in PROCESSOR_MIGRATIONS.glob("*.sql"):
        if path.name < "0840":
            shutil.copy(path, before / path.name)
    await apply_migrations(dsn, "processor", before)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "processor"})
    try:
        known = [
            ("never", "now() - interval '1 day'", "'-infinity'"),
            ("past_window", "now() - interval '400 days'", "now() - interval '1 day'"),
            ("day_old", "now() - interval '25 hours'", "now() - interval '1 hour'"),
            ("month_old", "now() - interval '31 days'", "now() - interval '1 day'"),
        ]
        for name, created_at, last_synced_at in known:
            await conn.execute(
                "INSERT INTO payments (payment_id, merchant_id, provider_payment_id, amount, currency, created_at,"
                f" last_synced_at) VALUES ($1, 'mer', $1, 100, 'EUR', {created_at}, {last_synced_at})",
                name,
            )
        await apply_migrations(dsn, "processor", PROCESSOR_MIGRATIONS)
        due = await conn.fetch(
            "SELECT payment_id, CASE WHEN isfinite(next_sync_at) THEN next_sync_at - last_synced_at END AS after,"
            " next_sync_at = '-infinity' AS now,"
            " next_sync_at IS NULL AS never FROM payments"
        )
    finally:
        await conn.close()
    assert {r["payment_id"]: (r["now"], r["never"], r["after"]) for r in due} == {
        "never": (True, False, None),
        "past_window": (True, False, None),
        "day_old": (False, False, timedelta(hours=6)),
        "month_old": (False, False, timedelta(days=7)),
    }


async def test_payments_the_upgrade_closed_after_a_year_are_scanned_under_a_longer_configured_window(
    postgres_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Migration 0840 closed every payment scanned a year after it was known, whatever SYNC_REFUND_WINDOW_DAYS says:
    with a window of 540 days, a refund made in the provider's dashboard on a payment 365 to 540 days old was never
    booked. The first run under the configured window decides each again: a scan for one still in it, a last scan
    for one whose window closed since its last scan, and none, with no call, for one scanned after it closed."""
    dsn = await create_database(postgres_url)
    before = tmp_path / "before"
    before.mkdir()
    for path in PROCESSOR_MIGRATIONS.glob("*.sql"):
        if path.name < "0840":
            shutil.copy(path, before / path.name)
    await apply_migrations(dsn, "processor", before)
    known = {  # days since the processor learned of it, days since its last scan: each past 0840's year
        "in_the_window": (400, 30),
        "closed_since_its_last_scan": (600, 230),
        "scanned_after_it_closed": (700, 100),
    }
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "processor"})
    try:
        for name, (age, last_scan) in known.items():
            await conn.execute(
                "INSERT INTO payments (payment_id, merchant_id, provider_payment_id, amount, currency, created_at,"
                " last_synced_at) VALUES ($1, 'mer', $1, 100, 'EUR', now() - make_interval(days => $2),"
                " now() - make_interval(days => $3))",
                name,
                age,
                last_scan,
            )
    finally:
        await conn.close()
    provider = SlowProvider(seconds=0)
    async with running_processor(
        dsn, kafka_bootstrap, topic_prefix, webhooks=False, provider=provider, sync_refund_window_days=540, **ONE_RUN
    ) as processor:
        await another_instance(processor, provider).scan_payments()

        async def decided() -> bool:
            rows = await processor.db.fetch("SELECT payment_id, next_sync_at FROM payments")
            return {r["payment_id"]: r["next_sync_at"] is None for r in rows} == {
                "in_the_window": False,
                "closed_since_its_last_scan": True,
                "scanned_after_it_closed": True,
            }

        await eventually(decided, timeout=30)
        assert provider.calls == {"in_the_window": 1, "closed_since_its_last_scan": 1}


# The restore runbook's statement (README, "Rebuilding a consumer after a database restore"), with the default window.
EVERY_PAYMENT_IN_THE_WINDOW_DUE = (
    "UPDATE payments SET next_sync_at = now() WHERE created_at > now() - make_interval(days => 365)"
)


async def test_a_month_old_payments_forgotten_refund_is_alerted_after_an_hour_not_a_week(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A month-old payment is scanned a week apart: the refund a restore forgot was first seen at a scan up to a
    week after the restore, and alerted a week after that (the runbook promised an hour); a refund of ours just made
    was looked at a week later too. The runbook now makes every payment due; the first sight of the refund brings
    the next scan forward to when the alert is due; an approval or its outcome brings it to the job's next run."""
    intent = payment_intent()
    approved = approval(intent, amount=10_000)
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        webhooks=False,
        sync_unrecorded_refund_alert_after_seconds=3600,
        **ONE_RUN,
    ) as processor:
        await registered(processor, [paid(intent, approved.payment_id, approved.merchant_id)])
        settings = processor.settings
        stripe_api = StripeProvider(
            settings.stripe_api_key.get_secret_value(), settings.stripe_api_base, settings.stripe_timeout_seconds
        )
        try:
            job = another_instance(processor, stripe_api)
            await time_passes(processor, timedelta(days=30))
            await job.scan_payments()

            async def next_scan_in() -> timedelta:
                due: timedelta = await processor.db.fetchval(
                    "SELECT next_sync_at - now() FROM payments WHERE payment_id = $1", approved.payment_id
                )
                return due

            assert await next_scan_in() > timedelta(days=6), "a month-old payment is scanned a week apart"

            event = await processor.publish(approved)

            async def succeeded() -> bool:
                return await processor.refund_status(approved.refund_id) == "succeeded"

            await eventually(succeeded, timeout=60)
            assert await next_scan_in() <= timedelta(seconds=settings.sync_interval_seconds), "looked at soon"

            await job.scan_payments()
            assert await next_scan_in() > timedelta(days=6), "then back to its schedule"
            await processor.restore_before(event, approved.refund_id)
            await processor.db.execute(EVERY_PAYMENT_IN_THE_WINDOW_DUE)
            await job.scan_payments()  # the refund is first seen, unrecorded
            assert await next_scan_in() <= timedelta(hours=1), "scanned again when the alert is due"
            assert await processor.staged("team_alert.raised", about=approved.refund_id) == []

            async def an_hour_passes() -> None:
                await time_passes(processor, timedelta(hours=1, minutes=1))
                await processor.db.execute(
                    "UPDATE unrecorded_provider_refunds SET first_seen_at = first_seen_at - interval '61 minutes'"
                )

            await an_hour_passes()
            await job.scan_payments()
            [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
            assert alert["kind"] == "unrecorded_provider_refund"
            assert await next_scan_in() > timedelta(days=6), "alerted, back to its schedule"
        finally:
            await stripe_api.close()
