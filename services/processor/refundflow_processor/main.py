from __future__ import annotations

from refundflow_processor.app import create_app
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.http_service import serve


def main() -> None:
    settings = ProcessorSettings()  # from the environment
    serve(create_app(settings), settings)
