from __future__ import annotations

from refundflow_notifier.app import create_app
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.http_service import serve
from refundflow_shared.settings import settings_from_environment


def main() -> None:
    settings = settings_from_environment(NotifierSettings, "notifier")
    serve(create_app(settings), settings)
