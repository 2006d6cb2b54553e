from __future__ import annotations

import sys

from pydantic import ValidationError

from refundflow_intake.app import create_app
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.http_service import serve


def main() -> None:
    try:
        settings = IntakeSettings()  # from the environment
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        sys.exit(f"refundflow-intake refuses to start: {problems}")
    serve(create_app(settings), settings)
