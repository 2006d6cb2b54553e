"""The command line reads the services' own settings (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX, ...), so
it points where they do; with nothing set, at the local stack of `make dev`."""

from __future__ import annotations

from pydantic import Field

from refundflow_shared.settings import ServiceSettings


class CliSettings(ServiceSettings):
    # How long to wait for the database or the broker before saying it cannot be reached.
    cli_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long `consumer rewind` waits to be the group's only member (a stopped member must expire first).
    cli_group_join_timeout_seconds: float = Field(default=60.0, gt=0)
