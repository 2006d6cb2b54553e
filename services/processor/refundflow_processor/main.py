from __future__ import annotations

import uvicorn

from refundflow_processor.app import create_app
from refundflow_processor.settings import ProcessorSettings


def main() -> None:
    settings = ProcessorSettings()
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)
