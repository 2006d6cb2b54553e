from __future__ import annotations

from refundflow_processor.app import create_app
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.http_service import serve
from refundflow_shared.settings import settings_from_environment


def main() -> None:
    settings = settings_from_environment(ProcessorSettings, "processor")
    serve(create_app(settings), settings)
