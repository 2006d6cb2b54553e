from __future__ import annotations

import sys

from pydantic import ValidationError

from refundflow_processor.app import create_app
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.http_service import serve


def main() -> None:
    try:
        settings = ProcessorSettings()  # from the environment
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        sys.exit(f"refundflow-processor refuses to start: {problems}")
    serve(create_app(settings), settings)
