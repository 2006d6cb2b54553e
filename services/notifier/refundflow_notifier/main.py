from __future__ import annotations

from refundflow_notifier.app import create_app
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.http_service import serve


def main() -> None:
    settings = NotifierSettings()  # from the environment
    serve(create_app(settings), settings)
