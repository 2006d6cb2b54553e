"""`refundflow` as installed (the console script), when what it needs is not there: one line, a documented exit
code, never a traceback, and a JSON error with --json."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.infrastructure import free_port

REFUNDFLOW = str(Path(sys.executable).parent / "refundflow")


def refundflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    unreachable = {
        "DATABASE_URL": f"postgresql://operator:s3cret-password@127.0.0.1:{free_port()}/refundflow",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    return subprocess.run(
        [REFUNDFLOW, *args], env={**os.environ, **unreachable, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_console_script_is_installed_and_documents_its_exit_codes() -> None:
    shown = refundflow("--help", COLUMNS="200")
    assert shown.returncode == 0
    for command in ("topics", "tail", "refund", "dlq", "outbox", "stuck", "consumer"):
        assert command in shown.stdout
    assert "3 the broker or the database cannot be reached" in " ".join(shown.stdout.split())


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["topics"], "broker"),
        (["tail", "refund.approved"], "broker"),
        (["consumer", "rewind", "notifier", "--to", "earliest"], "broker"),
        (["refund", "ref_1"], "database"),
        (["stuck"], "database"),
        (["outbox"], "database"),
        (["dlq", "list"], "database"),
        (["dlq", "replay", "refund.approved", "--all"], "database"),
    ],
)
def test_an_unreachable_broker_or_database_ends_the_command_with_exit_code_3_and_one_line(
    args: list[str], what: str
) -> None:
    result = refundflow(*args)
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"refundflow: cannot reach the {what} at 127.0.0.1:")
    assert "Traceback" not in result.stderr and "s3cret-password" not in result.stderr
    assert result.stdout == ""


def test_with_json_the_error_is_a_json_document_on_stdout() -> None:
    result = refundflow("stuck", "--json")
    assert result.returncode == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unreachable"
    assert "cannot reach the database" in error["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["stuck", "--older-than", "soon"],
        ["dlq", "replay", "refund.approved"],
        ["dlq", "replay", "refund.approved", "--all", "--event-id", "not-a-uuid"],
        ["consumer", "rewind", "notifier", "--to", "2026-11-20T10:00:00"],
        ["stuck", "--older-than", "99999999999d"],
        ["stuck", "--older-than", "999999999d"],
        ["outbox", "--stale-after", "99999999999d"],
        ["consumer", "rewind", "notifier", "--to", "99999999d"],
        ["consumer", "rewind", "processor", "--to", "1969-12-31T00:00:00Z"],
        ["tail"],
        ["no-such-command"],
    ],
)
def test_a_wrong_invocation_is_exit_code_2_before_anything_is_reached(args: list[str]) -> None:
    result = refundflow(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("consumer", "why"),
    [("notfier", "no consumer 'notfier'"), ("intake", "intake does not read refund.approved")],
)
def test_replaying_for_a_consumer_that_does_not_read_the_topic_is_not_found_before_anything_is_reached(
    consumer: str, why: str
) -> None:
    """A misspelt --consumer matched no dead letter: "nothing to replay", exit 0, and a script read it as done."""
    result = refundflow("dlq", "replay", "refund.approved", "--all", "--consumer", consumer)
    assert result.returncode == 4, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert why in line and "notifier, processor" in line, line


def test_settings_that_cannot_be_read_are_a_usage_problem_without_their_values() -> None:
    result = refundflow("stuck", TOPIC_PARTITIONS="many", DATABASE_URL="postgresql://u:hidden-pw@h:5432/db")
    assert result.returncode == 2
    assert "TOPIC_PARTITIONS: Input should be a valid integer" in result.stderr, result.stderr
    assert "hidden-pw" not in result.stderr and "many" not in result.stderr


def test_settings_that_disagree_are_a_usage_problem_saying_why_as_the_services_do() -> None:
    """A check across variables has no field to name: the command said only "(the payload): value_error"."""
    result = refundflow("topics", INBOX_RETENTION_DAYS="5")
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert "INBOX_RETENTION_DAYS must exceed TOPIC_RETENTION_DAYS" in line, line


@pytest.mark.parametrize("password", ["hunter2/x", "909090/x", "hunter2?x", "hunter2#x"])
def test_a_password_that_ends_the_host_part_of_the_url_is_a_usage_problem_never_printed(password: str) -> None:
    """An unencoded /, ? or # ends a URL's host part: the password's first part would be read as the port."""
    result = refundflow("stuck", DATABASE_URL=f"postgresql://ops:{password}@127.0.0.1:{free_port()}/refundflow")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "percent-encode" in result.stderr
    shown = result.stdout + result.stderr
    assert password not in shown and password.split("/")[0].split("?")[0].split("#")[0] not in shown
    assert "Traceback" not in result.stderr


def test_an_interrupted_command_does_not_claim_success() -> None:
    """Ctrl-C ends `tail --follow` (its way to stop, exit 0); any other command it cuts short exits 130, so that
    a script (`timeout -s INT ...`) never reads an interrupted replay or search as done."""
    with socket.socket() as silent:  # accepts the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        command = subprocess.Popen(
            [REFUNDFLOW, "stuck"],
            env={**os.environ, "DATABASE_URL": f"postgresql://operator:pw@127.0.0.1:{port}/refundflow"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Interrupted once it is connecting (past its imports, however long a loaded machine takes over them).
        silent.settimeout(30)
        conn, _ = silent.accept()
        with conn:
            command.send_signal(signal.SIGINT)
            _, stderr = command.communicate(timeout=30)
    assert command.returncode == 130, stderr
    assert "Traceback" not in stderr
