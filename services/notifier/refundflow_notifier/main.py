from __future__ import annotations

from refundflow_shared.http_service import serve

from refundflow_notifier.app import create_app
from refundflow_notifier.settings import NotifierSettings


def main() -> None:
    settings = NotifierSettings()  # from the environment
    serve(create_app(settings), settings)
