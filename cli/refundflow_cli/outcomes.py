"""Exit codes scripts can rely on, and the errors that end a command with one of them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    PROBLEMS_FOUND = 1  # the command worked and found something that needs an operator (stuck refunds, DLQ records)
    USAGE = 2  # bad arguments or settings
    UNREACHABLE = 3  # the broker or the database cannot be reached
    NOT_FOUND = 4  # no such refund, topic, consumer group, dead-lettered event, or consumer of the topic
    REFUSED = 5  # the operation would be unsafe now (e.g. rewinding a consumer group that is running)
    INTERRUPTED = 130  # Ctrl-C cut the command short (as shells report SIGINT); `tail --follow` ends with 0


class OperatorError(Exception):
    """Ends the command with one line for the operator (no traceback) and a distinct exit code."""

    exit_code = ExitCode.USAGE
    code = "usage"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageProblem(OperatorError):
    exit_code = ExitCode.USAGE
    code = "usage"


class Unreachable(OperatorError):
    exit_code = ExitCode.UNREACHABLE
    code = "unreachable"


class NotFound(OperatorError):
    exit_code = ExitCode.NOT_FOUND
    code = "not_found"


class Refused(OperatorError):
    exit_code = ExitCode.REFUSED
    code = "refused"
