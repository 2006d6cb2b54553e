"""The logging setup: one set of processors for the process, so a logger made before a second setup (in-process
tests start several services) follows it, and structlog's capture_logs sees every line."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from refundflow_shared.structured_logging import configure_logging


def test_a_logger_used_before_the_logging_was_set_up_again_follows_the_new_setup() -> None:
    configure_logging("first")
    log = structlog.get_logger("refundflow.tests.made_early")
    log.info("first_use")  # the logger is cached now, with the setup of the moment
    configure_logging("second")
    with capture_logs() as logs:
        log.info("after_the_second_setup")
    assert [line["event"] for line in logs] == ["after_the_second_setup"]
