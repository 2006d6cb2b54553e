"""The `refundflow` command: thin wrappers that parse options, run one async operation and exit with its code."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
import typer
from pydantic import ValidationError

from refundflow_cli.consumer_rewind import rewind
from refundflow_cli.dlq_commands import list_dead_letters, replay_dead_letters
from refundflow_cli.durations import parse_duration
from refundflow_cli.outbox_status import show_outboxes
from refundflow_cli.outcomes import ExitCode, OperatorError, UsageProblem
from refundflow_cli.output import Output
from refundflow_cli.refund_story import show_refund
from refundflow_cli.sealed_values import show_sealed_values
from refundflow_cli.settings import CliSettings
from refundflow_cli.stuck import find_stuck
from refundflow_cli.tail import tail_topic
from refundflow_cli.topics_view import show_topics
from refundflow_shared.settings import settings_problems

EXIT_CODES = (
    "Exit codes: 0 ok; 1 problems found (stuck refunds, dead letters waiting, parked events, a dead letter asked for "
    "by its event id that cannot be replayed); 2 usage (bad arguments or settings); "
    "3 the broker or the database cannot be reached; "
    "4 not found (refund, topic, group, event, consumer); 5 refused as unsafe (rewinding a group that is running); "
    "130 cut short by Ctrl-C (tail --follow ends with 0)."
)

app = typer.Typer(
    name="refundflow",
    help="Operate Refundflow: topics and lag, records, one refund's story, dead letters, outboxes, stuck refunds, "
    "consumer rewinds. Reads DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX, INBOX_RETENTION_DAYS and "
    "TOPIC_RETENTION_DAYS like the services (default: the local stack of `make dev`).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold settings: a database password must never be printed
)
dlq_app = typer.Typer(help="Dead-lettered records: list them, replay them to their topic.", no_args_is_help=True)
consumer_app = typer.Typer(help="Consumer groups.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(consumer_app, name="consumer")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (one document; JSON lines for tail).")]
Operation = Callable[[CliSettings, Output], Coroutine[Any, Any, ExitCode]]


def _run(json_mode: bool, operation: Operation, *, stopped_by_interrupt: bool = False) -> None:
    """Run one command; ``stopped_by_interrupt``: Ctrl-C is how it ends (``tail --follow``), not a cut short."""
    quiet_libraries()
    out = Output(json_mode)
    try:
        settings = CliSettings()
    except ValidationError as exc:
        out.error(UsageProblem(f"the settings are invalid: {'; '.join(settings_problems(exc))}"))
        raise typer.Exit(ExitCode.USAGE) from None
    try:
        code = asyncio.run(operation(settings, out))
    except OperatorError as exc:
        out.error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.OK if stopped_by_interrupt else ExitCode.INTERRUPTED) from None
    raise typer.Exit(code)


@app.command()
def topics(json: Json = False) -> None:
    """Every topic with its partitions and end offsets, and each service's consumer group lag."""
    _run(json, show_topics)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="e.g. refund.approved or refund.approved.dlq (without the prefix)")],
    key: Annotated[
        str | None, typer.Option(help="Only records with this key (a payment id, or a merchant id).")
    ] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Every record, not the last few.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records (Ctrl-C ends).")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many of the last records.")] = 10,
    json: Json = False,
) -> None:
    """Records of a topic, decoded as CloudEvents, one line each (undecodable ones say why)."""
    _run(
        json,
        lambda s, o: tail_topic(s, o, topic=topic, key=key, from_beginning=from_beginning, follow=follow, lines=lines),
        stopped_by_interrupt=follow,
    )


@app.command()
def refund(refund_id: Annotated[str, typer.Argument(help="e.g. ref_...")], json: Json = False) -> None:
    """One refund across intake, the processor and the notifier, in time order."""
    _run(json, lambda s, o: show_refund(s, o, refund_id=refund_id))


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Argument(help="One topic (e.g. refund.approved); all when left out.")] = None,
    json: Json = False,
) -> None:
    """Dead-lettered records: reason, error, consumer, original position, when, and whether replayed."""
    _run(json, lambda s, o: list_dead_letters(s, o, topic=topic))


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="The topic whose dead letters to replay, e.g. refund.approved.")],
    event_id: Annotated[str | None, typer.Option("--event-id", help="Replay this event's dead letters.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every dead letter not replayed yet.")] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Only those this consumer dead-lettered (intake, processor or notifier).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed; publish nothing.")] = False,
    json: Json = False,
) -> None:
    """Publish dead letters again to their original topic, with their key and headers; each one once."""
    _run(
        json,
        lambda s, o: replay_dead_letters(
            s, o, topic=topic, event_id=event_id, every=every, consumer=consumer, dry_run=dry_run
        ),
    )


@app.command()
def outbox(
    retry_parked: Annotated[
        bool, typer.Option("--retry-parked", help="Put parked events back in line for the relay.")
    ] = False,
    event_id: Annotated[
        list[str] | None, typer.Option("--event-id", help="Only this parked event (repeatable).")
    ] = None,
    service: Annotated[list[str] | None, typer.Option(help="Only this service's outbox (repeatable).")] = None,
    stale_after: Annotated[str, typer.Option(help="An unsent event older than this is a problem (exit 1).")] = "5m",
    json: Json = False,
) -> None:
    """Each service's outbox: unsent events, parked events, the oldest unsent one's age."""
    _run(
        json,
        lambda s, o: show_outboxes(
            s,
            o,
            retry=retry_parked,
            event_ids=event_id or [],
            services=service or [],
            stale_after=parse_duration(stale_after),
        ),
    )


@app.command()
def stuck(
    older_than: Annotated[str, typer.Option(help="Processing for longer than this is stuck (90s, 15m, 2h).")] = "15m",
    limit: Annotated[int, typer.Option(min=1, help="At most this many of each kind.")] = 100,
    json: Json = False,
) -> None:
    """Refunds processing too long, outcomes unknown at the provider, requests past their review target."""
    _run(json, lambda s, o: find_stuck(s, o, older_than=parse_duration(older_than), limit=limit))


@app.command("secret-keys")
def secret_keys(
    retiring: Annotated[
        str | None,
        typer.Option(help="The key id to be removed: exit 1 while anything intake or the notifier keeps needs it."),
    ] = None,
    json: Json = False,
) -> None:
    """Which key of WEBHOOK_SECRET_KEYS sealed the webhook signing secrets and Slack URLs intake and the notifier
    keep: remove an old key once nothing needs it."""
    _run(json, lambda s, o: show_sealed_values(s, o, retiring=retiring))


@consumer_app.command("rewind")
def consumer_rewind(
    group: Annotated[str, typer.Argument(help="A service (intake, processor, notifier) or a group id.")],
    to: Annotated[str, typer.Option(help="RFC 3339 time, a duration ago (2h), an offset, or 'earliest'.")],
    topic: Annotated[list[str] | None, typer.Option(help="Only this topic (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the new offsets; change nothing.")] = False,
    confirm_stopped: Annotated[
        bool,
        typer.Option(
            "--confirm-stopped",
            help="Every instance is stopped, though the broker still lists members (Tansu keeps members that left):"
            " join the group to make sure, and rewind only when alone in it.",
        ),
    ] = False,
    json: Json = False,
) -> None:
    """Make a stopped consumer group read again from a time or offset (its inbox keeps effects exactly once)."""
    _run(
        json,
        lambda s, o: rewind(
            s, o, group_name=group, to=to, topics=topic or [], dry_run=dry_run, confirm_stopped=confirm_stopped
        ),
    )


def quiet_libraries() -> None:
    """Keep stdout for the answer: aiokafka logs every failed connection attempt (the command says it once, in one
    line) and the shared code logs what it does (migrations applied, say) through structlog."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger().addHandler(logging.NullHandler())
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main() -> None:
    app()
