from __future__ import annotations

import uvicorn

from refundflow_notifier.app import create_app
from refundflow_notifier.settings import NotifierSettings


def main() -> None:
    settings = NotifierSettings()
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)
