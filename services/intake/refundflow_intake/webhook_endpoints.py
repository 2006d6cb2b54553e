"""Merchants' webhook endpoints: stored here, announced to the notifier as events.

Each change writes the row and a full-state event in one transaction (outbox), so the notifier always ends
up with what the merchant last saw answered, even if it was down at the time. The endpoint's signing secret
is generated here, returned once (and again when rolled), and travels only encrypted (``SecretBox``, bound to the
endpoint id).
A URL must be one we may call (public, http(s)); a merchant has a bounded number of endpoints, and replays
reach back a bounded time.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from refundflow_intake import idempotency, rate_limit
from refundflow_intake.domain import Channel, DomainError, NotFound, OutboundUrlNotAllowed
from refundflow_intake.merchant_accounts import lock_merchant
from refundflow_intake.notifier_client import NotifierNotReached, NotifierRefusedRequest
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import WebhookEndpointConfigured, WebhookEndpointDisabled
from refundflow_shared.outbound_urls import UrlNotAllowed, check_url
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox

Row = dict[str, Any]

# What the merchant sees; the previous secret's end only while it still signs.
_ENDPOINT_COLUMNS = (
    "id, url, event_types, enabled, disabled_reason, created_at, updated_at,"
    " CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END AS previous_secret_expires_at"
)
# And what the notifier is told besides: the sealed secrets that sign.
_ANNOUNCED_COLUMNS = (
    f"{_ENDPOINT_COLUMNS}, encrypted_secret, version,"
    " CASE WHEN previous_secret_expires_at > now() THEN previous_encrypted_secret END AS previous_encrypted_secret"
)


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class WebhookDeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class TooManyWebhookEndpoints(DomainError):
    code = "too_many_webhook_endpoints"


class WebhookEndpointExists(DomainError):
    """A second enabled endpoint for the same URL and events would deliver every event twice there."""

    code = "endpoint_exists"


class ReplayWindowExceeded(DomainError):
    code = "replay_window_exceeded"


class ReplaySinceInFuture(DomainError):
    code = "replay_since_in_future"


async def checked_url(url: str, *, allow_private: bool) -> str:
    """The URL, when it is one we may call (see ``refundflow_shared.outbound_urls``). Resolves DNS: call it
    before opening a transaction."""
    try:
        await check_url(url, allow_private=allow_private)
    except UrlNotAllowed as exc:
        raise OutboundUrlNotAllowed(str(exc)) from None
    return url


def check_replay_since(since: datetime, *, now: datetime, max_days: int) -> None:
    """A replay reaches from a time within the last ``max_days`` days; checked before it counts against the hour's
    replays."""
    if since > now:
        raise ReplaySinceInFuture("since is later than now: there is nothing to replay after it yet")
    if since < now - timedelta(days=max_days):
        raise ReplayWindowExceeded(f"replays reach back {max_days} days at most")


async def create_endpoint(
    conn: asyncpg.Connection,
    box: SecretBox,
    merchant_id: str,
    *,
    url: str,
    event_types: list[str],
    secret: str,
    max_endpoints: int,
    form_key: str | None = None,
) -> Row:
    event_types = list(dict.fromkeys(event_types))  # each once, in the order given
    await lock_merchant(conn, merchant_id)  # two creations at once cannot both take the last place, nor the same one
    await _check_not_a_second(conn, merchant_id, url, event_types)
    live = await conn.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL", merchant_id
    )
    if live >= max_endpoints:
        raise TooManyWebhookEndpoints(f"a merchant has at most {max_endpoints} webhook endpoints: delete one first")
    endpoint_id = f"we_{uuid.uuid4().hex}"
    row = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, encrypted_secret, secret_form_key)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ANNOUNCED_COLUMNS}",
        endpoint_id,
        merchant_id,
        url,
        event_types,
        box.seal(secret, context=endpoint_id),
        form_key,
    )
    assert row is not None
    await _announce_endpoint(conn, merchant_id, dict(row))
    return dict(row)


async def _check_not_a_second(
    conn: asyncpg.Connection, merchant_id: str, url: str, event_types: list[str], *, endpoint_id: str | None = None
) -> None:
    """Raises ``WebhookEndpointExists`` if another enabled endpoint (not ``endpoint_id``) of the merchant receives
    the same events at ``url``: creating one and changing one to be enabled alike. Called under ``lock_merchant``,
    so two changes at once cannot both pass."""
    same = await conn.fetchval(
        "SELECT id FROM webhook_endpoints WHERE merchant_id = $1 AND url = $2 AND event_types @> $3"
        " AND event_types <@ $3 AND enabled AND deleted_at IS NULL AND id IS DISTINCT FROM $4"
        " ORDER BY created_at, id LIMIT 1",
        merchant_id,
        url,
        event_types,
        endpoint_id,
    )
    if same is not None:
        raise WebhookEndpointExists(
            f"the enabled endpoint {same} already receives these events at this URL: change it, or disable or delete it"
            " first"
        )


async def add_endpoint(
    pool: asyncpg.Pool,
    box: SecretBox,
    merchant_id: str,
    *,
    url: str,
    event_types: list[str],
    max_endpoints: int,
    allow_private: bool,
    form_key: str | None = None,
) -> tuple[Row, str]:
    """The whole of adding an endpoint, for the API and the dashboard alike: the URL checked (DNS, before any
    transaction), a new signing secret, the row and its event. Returns the endpoint and the secret (shown once).

    ``form_key`` is the single-use key of the dashboard's form: the same form sent again answers the endpoint it
    added, with its secret, while that is still the secret the form made."""
    await checked_url(url, allow_private=allow_private)
    secret = new_signing_secret()
    async with pool.acquire() as conn, conn.transaction():
        if form_key is not None:
            await lock_merchant(conn, merchant_id)  # the same form sent at once waits for the first to commit
            if earlier := await _secret_made_by(conn, box, merchant_id, form_key):
                return earlier
        row = await create_endpoint(
            conn, box, merchant_id, url=url, event_types=event_types, secret=secret, max_endpoints=max_endpoints,
            form_key=form_key,
        )  # fmt: skip
    return row, secret


async def add_endpoint_once(
    pool: asyncpg.Pool,
    box: SecretBox,
    merchant_id: str,
    idempotency_key: str | None,
    request: dict[str, Any],
    *,
    url: str,
    event_types: list[str],
    max_endpoints: int,
    allow_private: bool,
) -> tuple[Row, str | None, bool]:
    """``add_endpoint`` once per API ``Idempotency-Key``: (the endpoint, its secret, whether it is the first
    request's replay). ``request`` is what the caller sent, as JSON: the key's first use fixes it.

    A replay answers the endpoint the key made with its secret, kept sealed, while that is still the secret the key
    made (``secret_form_key``, as the dashboard's forms); None once rolled: the roll's answer showed the new one."""
    if idempotency_key is None:
        row, shown = await add_endpoint(
            pool,
            box,
            merchant_id,
            url=url,
            event_types=event_types,
            max_endpoints=max_endpoints,
            allow_private=allow_private,
        )
        return row, shown, False
    request_hash = idempotency.fingerprint(request)
    await checked_url(url, allow_private=allow_private)
    secret = new_signing_secret()
    async with pool.acquire() as conn, conn.transaction():
        if earlier := await idempotency.claim(conn, merchant_id, Channel.API, idempotency_key, request_hash):
            if made := await _secret_made_by(conn, box, merchant_id, idempotency_key, earlier):
                return (*made, True)
            # Its secret was rolled since (the roll's answer showed the new one), or it was deleted (404).
            return await get_endpoint(conn, merchant_id, earlier), None, True
        row = await create_endpoint(
            conn, box, merchant_id, url=url, event_types=event_types, secret=secret, max_endpoints=max_endpoints,
            form_key=idempotency_key,
        )  # fmt: skip
        await idempotency.remember(conn, merchant_id, Channel.API, idempotency_key, webhook_endpoint_id=row["id"])
    return row, secret, False


async def _secret_made_by(
    conn: asyncpg.Connection, box: SecretBox, merchant_id: str, form_key: str, endpoint_id: str | None = None
) -> tuple[Row, str] | None:
    """The endpoint whose current signing secret the dashboard form ``form_key`` (or the API request with that
    ``Idempotency-Key``) made, and that secret."""
    row = await conn.fetchrow(
        f"SELECT {_ANNOUNCED_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND secret_form_key = $2"
        " AND ($3::text IS NULL OR id = $3) AND deleted_at IS NULL",
        merchant_id,
        form_key,
        endpoint_id,
    )
    return (dict(row), box.open(row["encrypted_secret"], context=row["id"])) if row is not None else None


async def counted_replay(
    pool: asyncpg.Pool,
    merchant_id: str,
    endpoint_id: str,
    replay: Callable[[], Awaitable[Row]],
    *,
    per_hour: int,
    now: datetime,
) -> Row:
    """Run ``replay`` (the notifier's answer: ``scheduled``, or whether a replay since a time ``started``) if the
    endpoint is the merchant's and a replay fits the merchant's hourly allowance: replays fan out to every delivery
    they cover, so a few per hour per merchant, across replicas. Only a replay that may send something counts: one
    that scheduled nothing, joined a replay already running, or failed before the notifier could schedule anything
    (``_scheduled_nothing``), gives its slot back (taken first, so that two at once cannot both pass the last
    one)."""
    async with pool.acquire() as conn:
        await get_endpoint(conn, merchant_id, endpoint_id)
    bucket = f"webhook_replays:{merchant_id}"
    attempt = await rate_limit.take(pool, bucket, limit=per_hour, window=timedelta(hours=1), now=now)
    try:
        result = await replay()
    except Exception as exc:
        if _scheduled_nothing(exc):
            await rate_limit.give_back(pool, attempt)
        raise
    if not _may_send_something(result):
        await rate_limit.give_back(pool, attempt)
    return result


def replay_since_answer(answer: Row | None) -> Row:
    """The notifier's answer to a replay since a time, as the API gives it. The previous notifier queued the period
    before answering and said how many (``scheduled``); this one walks it in the background and says whether it
    ``started`` (with ``scheduled`` 0, the deliveries queued by then). None: an endpoint the notifier does not know
    yet."""
    if answer is None:
        return {"replay": "nothing_to_replay", "scheduled": 0}
    scheduled = int(answer.get("scheduled", 0))
    if "replay" in answer:
        return {"replay": answer["replay"], "scheduled": scheduled}
    return {"replay": "started" if scheduled else "nothing_to_replay", "scheduled": scheduled}


def _may_send_something(answer: Row) -> bool:
    """The notifier queued a delivery again, or started walking a period."""
    return bool(answer.get("scheduled")) or answer.get("replay") == "started"


def _scheduled_nothing(failure: BaseException) -> bool:
    """The replay failed before the notifier could schedule anything: an unknown delivery, a request it refused or
    never got. Not its timeout nor its 5xx: it may have scheduled something, or started a replay, before failing."""
    seen: BaseException | None = failure
    while seen is not None:
        if isinstance(seen, WebhookDeliveryNotFound | NotifierNotReached | NotifierRefusedRequest):
            return True
        seen = seen.__cause__  # the API's answer (ApiError) raised from the client's
    return False


async def update_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, changes: Row) -> Row:
    """Apply the given fields; re-enabling an endpoint the notifier disabled also clears its failure count (there)
    and why it was disabled (here). An endpoint left enabled must not be a second for its URL and events (409
    ``endpoint_exists``, as on creation)."""
    await lock_merchant(conn, merchant_id)
    current = await conn.fetchrow(
        "SELECT url, event_types, enabled FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2"
        " AND deleted_at IS NULL",
        endpoint_id,
        merchant_id,
    )
    if current is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    url = changes.get("url") or current["url"]
    event_types = changes.get("event_types") or list(current["event_types"])
    if current["enabled"] if changes.get("enabled") is None else changes["enabled"]:
        await _check_not_a_second(conn, merchant_id, url, event_types, endpoint_id=endpoint_id)
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),"
        " enabled = coalesce($5, enabled), disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason END,"
        " version = version + 1, updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        f" RETURNING {_ANNOUNCED_COLUMNS}",
        endpoint_id,
        merchant_id,
        changes.get("url"),
        changes.get("event_types"),
        changes.get("enabled"),
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    await _announce_endpoint(conn, merchant_id, dict(row))
    return dict(row)


async def replace_sealed_secret(
    conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, sealed: str, previous_sealed: str | None
) -> None:
    """The same signing secrets (and the previous one while it signs; None drops it), sealed again under another
    key, as a new version the notifier takes: its copy of the ciphertexts is replaced too. The merchant changed
    nothing, so ``updated_at`` stays."""
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET encrypted_secret = $3, previous_encrypted_secret = $4,"
        " previous_secret_expires_at = CASE WHEN $4::text IS NOT NULL THEN previous_secret_expires_at END,"
        " version = version + 1"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        f" RETURNING {_ANNOUNCED_COLUMNS}",
        endpoint_id,
        merchant_id,
        sealed,
        previous_sealed,
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    await _announce_endpoint(conn, merchant_id, dict(row))


async def roll_secret(
    pool: asyncpg.Pool,
    box: SecretBox,
    merchant_id: str,
    endpoint_id: str,
    *,
    overlap: timedelta,
    form_key: str | None = None,
) -> tuple[Row, str]:
    """A new signing secret for the endpoint, returned once. The current one becomes the previous one and signs
    beside it for ``overlap``, so the merchant's receivers can switch without refusing a webhook; a roll within
    the overlap drops the one before. Nothing queued for the endpoint is cancelled.

    ``form_key`` is the single-use key of the dashboard's form: the same form sent again (a double click, a
    reload) rolls nothing and answers the secret the first made, or it would end the original's overlap at once."""
    secret = new_signing_secret()
    async with pool.acquire() as conn, conn.transaction():
        # A second sending waits on the row for the first, then finds the secret its key made (READ COMMITTED).
        row = await conn.fetchrow(
            "UPDATE webhook_endpoints SET previous_encrypted_secret = encrypted_secret,"
            " previous_secret_expires_at = now() + $4::interval, encrypted_secret = $3, version = version + 1,"
            " secret_form_key = $5, updated_at = now()"
            " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
            " AND ($5::text IS NULL OR secret_form_key IS DISTINCT FROM $5)"
            f" RETURNING {_ANNOUNCED_COLUMNS}",
            endpoint_id,
            merchant_id,
            box.seal(secret, context=endpoint_id),
            overlap,
            form_key,
        )
        if row is None and form_key is not None:
            if earlier := await _secret_made_by(conn, box, merchant_id, form_key, endpoint_id):
                return earlier
        if row is None:
            raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
        await _announce_endpoint(conn, merchant_id, dict(row))
    return dict(row), secret


async def record_disabled(conn: asyncpg.Connection, data: WebhookEndpointDisabled) -> None:
    """The notifier disabled the endpoint: the merchant sees it disabled, and why. Not when the merchant has
    changed it since (a newer version): that configuration, enabled, went to the notifier after the one it disabled,
    and enables it again there. The version stays: the notifier has this state already."""
    await conn.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $4, updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND version = $3 AND enabled AND deleted_at IS NULL",
        data.endpoint_id,
        data.merchant_id,
        data.version,
        data.reason,
    )


async def delete_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> None:
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, version = version + 1, updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        f" RETURNING {_ANNOUNCED_COLUMNS}",
        endpoint_id,
        merchant_id,
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    await _announce_endpoint(conn, merchant_id, dict(row), deleted=True)


async def get_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> Row:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL",
        endpoint_id,
        merchant_id,
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return dict(row)


async def list_endpoints(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at, id",
        merchant_id,
    )
    return [dict(r) for r in rows]


async def _announce_endpoint(conn: asyncpg.Connection, merchant_id: str, row: Row, *, deleted: bool = False) -> None:
    await add_event(
        conn,
        WebhookEndpointConfigured(
            merchant_id=merchant_id,
            endpoint_id=row["id"],
            url=row["url"],
            event_types=list(row["event_types"]),
            enabled=row["enabled"],
            deleted=deleted,
            encrypted_secret=row["encrypted_secret"],
            version=row["version"],
            previous_encrypted_secret=row["previous_encrypted_secret"],
            previous_secret_expires_at=row["previous_secret_expires_at"],
        ),
        source=INTAKE.source,
    )


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
