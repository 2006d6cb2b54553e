from __future__ import annotations

import uvicorn

from refundflow_intake.app import create_app
from refundflow_intake.settings import IntakeSettings


def main() -> None:
    settings = IntakeSettings()  # values come from the environment
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)
