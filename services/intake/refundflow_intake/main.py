from __future__ import annotations

from refundflow_intake.app import create_app
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.http_service import serve


def main() -> None:
    settings = IntakeSettings()  # from the environment
    serve(create_app(settings), settings)
