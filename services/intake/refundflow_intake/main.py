from __future__ import annotations

from refundflow_intake.app import create_app
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.http_service import serve
from refundflow_shared.settings import settings_from_environment


def main() -> None:
    settings = settings_from_environment(IntakeSettings, "intake")
    serve(create_app(settings), settings)
