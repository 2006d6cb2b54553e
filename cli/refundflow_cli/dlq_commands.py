"""`refundflow dlq list` and `refundflow dlq replay`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from refundflow_cli import replay_ledger
from refundflow_cli.connections import database, kafka_reader, kafka_writer
from refundflow_cli.dead_letters import DeadLetter, group_by_message, read_dead_letters, replay_problem, replay_window
from refundflow_cli.outcomes import ExitCode, NotFound, UsageProblem
from refundflow_cli.output import Output, when
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import CONSUMES, event_type_of, short_name
from refundflow_shared.events import EventType, dlq_topic, topic_for


async def list_dead_letters(settings: CliSettings, out: Output, *, topic: str | None) -> ExitCode:
    prefix = settings.topic_prefix
    types = [event_type_of(topic, prefix)] if topic else list(EventType)
    names = [dlq_topic(topic_for(t, prefix)) for t in types]
    async with database(settings) as conn, kafka_reader(settings) as reader:
        letters = await read_dead_letters(reader, names)
        done = await replay_ledger.replayed(conn, letters)
    final = _final_letters([letter for letter in letters if letter.position not in done], settings)
    entries = []
    for letter in letters:
        entry: dict[str, Any] = letter.summary()
        entry["dlq_topic"] = short_name(letter.dlq_topic, prefix)
        if row := done.get(letter.position):
            entry["replayed"] = {"at": row["replayed_at"], "by": row["replayed_by"], "offset": row["published_offset"]}
        else:
            entry["replayed"] = None
        entry["final"] = final.get(letter.position)  # never to be replayed: why
        entries.append(entry)
    # Only what an operator can still replay waits for one: a final letter stays listed until its topic drops it.
    waiting = sum(1 for e in entries if e["replayed"] is None and e["final"] is None)
    if out.json_mode:
        out.document({"dead_letters": entries, "waiting": waiting})
    else:
        out.table(
            "Dead letters",
            ["dlq position", "failed at", "consumer", "reason", "error", "event", "original", "replayed"],
            [
                [
                    f"{e['dlq_topic']}/{e['partition']}/{e['offset']}",
                    when(e["failed_at"]),
                    e["consumer"],
                    e["reason"],
                    e["error"],
                    f"{e['event_type'] or '?'} {e['event_id'] or '(no id)'}",
                    f"{e['original_topic']}[{e['original_partition']}]@{e['original_offset']}",
                    _replayed(e),
                ]
                for e in entries
            ],
            empty="none",
        )
    return ExitCode.PROBLEMS_FOUND if waiting else ExitCode.OK


async def replay_dead_letters(
    settings: CliSettings,
    out: Output,
    *,
    topic: str,
    event_id: str | None,
    every: bool,
    consumer: str | None,
    dry_run: bool,
) -> ExitCode:
    if (event_id is None) == (not every):
        raise UsageProblem("say which dead letters to replay: --event-id ID or --all (not both)")
    wanted = _event_id(event_id) if event_id is not None else None
    prefix = settings.topic_prefix
    event_type = event_type_of(topic, prefix)
    original = topic_for(event_type, prefix)
    if consumer is not None:
        _check_reads(consumer, event_type)
    results: list[dict[str, Any]] = []
    async with database(settings) as conn:
        if not dry_run:
            await replay_ledger.prepare(settings)
        async with kafka_reader(settings) as reader, kafka_writer(settings) as writer:
            letters = await read_dead_letters(reader, [dlq_topic(original)])
            if wanted is not None:
                letters = [letter for letter in letters if letter.event_id == wanted]
                if not letters:
                    raise NotFound(f"no dead letter of event {wanted} on {short_name(dlq_topic(original), prefix)}")
            if consumer is not None:
                letters = [letter for letter in letters if letter.dlq("consumer") == consumer]
            done = await replay_ledger.replayed(conn, letters)
            for letter in letters:
                if row := done.get(letter.position):
                    results.append(_result(letter, "already_replayed", f"replayed at {when(row['replayed_at'])}"))
            now = datetime.now(UTC)
            window = replay_window(settings)
            for group in group_by_message([letter for letter in letters if letter.position not in done]):
                chosen = _published_letter(group)
                if problem := replay_problem(chosen, original, now=now, window=window):
                    # Asked for by its id, a letter not replayed is a problem; among --all, a final one is only told.
                    outcome = "final" if every else "not_replayable"
                    results += [_result(letter, outcome, problem) for letter in group]
                elif dry_run:
                    results += [
                        _result(letter, "would_replay", f"to {short_name(original, prefix)}") for letter in group
                    ]
                else:
                    results += await _replay_once(conn, writer, chosen, group, original, prefix)
    return _report(out, results, dry_run)


async def _replay_once(
    conn: asyncpg.Connection,
    writer: AIOKafkaProducer,
    chosen: DeadLetter,
    group: list[DeadLetter],
    original: str,
    prefix: str,
) -> list[dict[str, Any]]:
    """Publish one message again, exactly once in effect: the ledger rows commit only after the broker took it, and
    a replay running at the same time waits on those rows, then finds them taken."""
    async with conn.transaction():
        claimed = await replay_ledger.claim(conn, group)
        if not claimed:
            return [_result(letter, "already_replayed", "replayed meanwhile by another run") for letter in group]
        sent = await writer.send_and_wait(original, chosen.value, key=chosen.key, headers=chosen.replay_headers())
        await replay_ledger.record_published(conn, claimed, sent.partition, sent.offset)
    return [
        _result(letter, "replayed", f"to {short_name(original, prefix)}[{sent.partition}]@{sent.offset}")
        if letter in claimed
        else _result(letter, "already_replayed", "replayed meanwhile by another run")
        for letter in group
    ]


def _check_reads(consumer: str, event_type: EventType) -> None:
    """A consumer that does not read the topic has no dead letter there: a misspelt name would replay nothing."""
    readers = ", ".join(sorted(service for service, types in CONSUMES.items() if event_type in types))
    if consumer not in CONSUMES:
        raise NotFound(f"no consumer {consumer!r}; the consumers of {event_type.value} are: {readers}")
    if event_type not in CONSUMES[consumer]:
        raise NotFound(f"{consumer} does not read {event_type.value}; its consumers are: {readers}")


def _published_letter(group: list[DeadLetter]) -> DeadLetter:
    """The letter of a message a replay publishes: one that kept the value."""
    return next((letter for letter in group if not letter.dlq("dropped")), group[0])


def _final_letters(letters: list[DeadLetter], settings: CliSettings) -> dict[tuple[str, int, int], str]:
    """Why each of these letters (none replayed) can never be replayed, by position, judged per message as a replay
    judges it: a refusal answered to its sender, a value dropped, a message too old."""
    now, window = datetime.now(UTC), replay_window(settings)
    by_topic: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_topic.setdefault(letter.dlq_topic, []).append(letter)
    final: dict[tuple[str, int, int], str] = {}
    for topic, on_topic in by_topic.items():  # one message per topic: a reused event id is another message
        for group in group_by_message(on_topic):
            original = topic.removesuffix(".dlq")
            if problem := replay_problem(_published_letter(group), original, now=now, window=window):
                final.update(dict.fromkeys((letter.position for letter in group), problem))
    return final


def _replayed(entry: dict[str, Any]) -> str:
    if entry["replayed"]:
        return when(entry["replayed"]["at"])
    return f"final: {entry['final']}" if entry["final"] else "no"


def _event_id(text: str) -> str:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise UsageProblem(f"{text!r} is not an event id (a UUID, the ce_id of the record)") from None


def _result(letter: DeadLetter, outcome: str, detail: str) -> dict[str, Any]:
    return {
        "dlq_position": letter.label,
        "event_id": letter.event_id,
        "consumer": letter.dlq("consumer"),
        "reason": letter.dlq("reason"),
        "outcome": outcome,
        "detail": detail,
    }


def _report(out: Output, results: list[dict[str, Any]], dry_run: bool) -> ExitCode:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    if out.json_mode:
        out.document({"dry_run": dry_run, "results": results, "counts": counts})
    else:
        out.table(
            "Replay" + (" (dry run: nothing published)" if dry_run else ""),
            ["dead letter", "event", "consumer", "outcome", "detail"],
            [[r["dlq_position"], r["event_id"], r["consumer"], r["outcome"], r["detail"]] for r in results],
            empty="nothing to replay",
        )
    return ExitCode.PROBLEMS_FOUND if counts.get("not_replayable") else ExitCode.OK
