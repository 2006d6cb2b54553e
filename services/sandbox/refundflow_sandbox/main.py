"""``refundflow-sandbox``: serve the sandbox on SANDBOX_HOST:SANDBOX_PORT (default 127.0.0.1:12111)."""

from __future__ import annotations

import uvicorn

from refundflow_sandbox.app import create_app
from refundflow_sandbox.logging_config import configure_logging
from refundflow_sandbox.settings import SandboxSettings


def main() -> None:
    settings = SandboxSettings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
