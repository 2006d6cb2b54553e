"""Named points where a process can be made to die, for crash tests.

``REFUNDFLOW_CRASH_AT=outbox.after_publish`` makes the process SIGKILL itself the first time it passes
that point: no cleanup, no rollback messages, exactly like a power cut. Unset in production.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if name in os.environ.get("REFUNDFLOW_CRASH_AT", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
