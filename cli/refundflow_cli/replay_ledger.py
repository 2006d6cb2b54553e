"""``operations.dlq_replays``: which dead letters were replayed, so that none is replayed twice."""

from __future__ import annotations

import getpass
from pathlib import Path

import asyncpg

from refundflow_cli.dead_letters import DeadLetter
from refundflow_cli.settings import CliSettings
from refundflow_shared.migrations_runner import apply_migrations

SCHEMA = "operations"
MIGRATIONS = Path(__file__).parent / "migrations"

Position = tuple[str, int, int]


async def prepare(settings: CliSettings) -> None:
    """Create or upgrade the command line's own schema (it has no outbox or inbox)."""
    await apply_migrations(settings.database_url, SCHEMA, MIGRATIONS, backbone=False)


async def replayed(conn: asyncpg.Connection, letters: list[DeadLetter]) -> dict[Position, asyncpg.Record]:
    """The ledger rows of those dead letters that were replayed (none before the first replay ever)."""
    if not letters or not await conn.fetchval("SELECT to_regclass('operations.dlq_replays') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        f"SELECT r.* FROM operations.dlq_replays r JOIN {_LETTERS} ON {_SAME_LETTER}", *_letter_arrays(letters)
    )
    return {(r["dlq_topic"], r["dlq_partition"], r["dlq_offset"]): r for r in rows}


async def claim(conn: asyncpg.Connection, letters: list[DeadLetter]) -> list[DeadLetter]:
    """In the caller's transaction, record the dead letters as replayed; returns those nobody had recorded. A
    concurrent replay of the same letters waits here until this transaction ends, then finds them taken."""
    assert conn.is_in_transaction(), "the claim must commit only once the replay was published"
    claimed = []
    operator = _operator()
    for letter in letters:
        inserted = await conn.fetchval(
            "INSERT INTO operations.dlq_replays (dlq_topic, dlq_partition, dlq_offset, event_id, original_topic,"
            " original_partition, original_offset, consumer, reason, replayed_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING true",
            letter.dlq_topic,
            letter.partition,
            letter.offset,
            letter.event_id,
            letter.original_topic or letter.dlq_topic.removesuffix(".dlq"),
            letter.original_partition,
            letter.original_offset,
            letter.dlq("consumer"),
            letter.dlq("reason"),
            operator,
        )
        if inserted:
            claimed.append(letter)
    return claimed


async def record_published(conn: asyncpg.Connection, letters: list[DeadLetter], partition: int, offset: int) -> None:
    """Where the replay landed, on every dead letter of the message."""
    await conn.execute(
        "UPDATE operations.dlq_replays r SET published_partition = $5, published_offset = $6"
        f" FROM {_LETTERS} WHERE {_SAME_LETTER}",
        *_letter_arrays(letters),
        partition,
        offset,
    )


# A letter is its position and its event: a topic created again numbers its records from 0 again.
_LETTERS = "unnest($1::text[], $2::int[], $3::bigint[], $4::text[]) AS d (topic, part, off, event_id)"
_SAME_LETTER = (
    "r.dlq_topic = d.topic AND r.dlq_partition = d.part AND r.dlq_offset = d.off"
    " AND coalesce(r.event_id, '') = coalesce(d.event_id, '')"
)


def _letter_arrays(letters: list[DeadLetter]) -> tuple[list[str], list[int], list[int], list[str | None]]:
    return (
        [letter.dlq_topic for letter in letters],
        [letter.partition for letter in letters],
        [letter.offset for letter in letters],
        [letter.event_id for letter in letters],
    )


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"
