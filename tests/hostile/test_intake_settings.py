"""Intake refuses settings that would break the links its emails carry: every one expired, or a broken address."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from refundflow_intake.settings import IntakeSettings, loopback_public_urls
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, service_env


def settings(**values: object) -> IntakeSettings:
    return IntakeSettings.model_validate({"refundflow_admin_token": "t" * 32, **values})


def test_a_portal_link_must_outlive_the_hour_the_notifier_keeps_in_hand() -> None:
    """The notifier offers no link that stops working within the hour: a link of an hour would never be offered."""
    with pytest.raises(ValidationError, match="PORTAL_TOKEN_TTL_HOURS must be more than 1 hour"):
        settings(portal_token_ttl_hours=1)
    assert settings(portal_token_ttl_hours=2).portal_token_ttl_hours == 2


def test_the_process_refuses_to_start_with_a_clear_error() -> None:
    env = os.environ | {"REFUNDFLOW_ADMIN_TOKEN": "t" * 32, "PORTAL_TOKEN_TTL_HOURS": "1"}
    started = subprocess.run(["refundflow-intake"], env=env, capture_output=True, text=True, timeout=60, check=False)

    assert started.returncode != 0
    assert "refundflow-intake refuses to start" in started.stderr
    assert "PORTAL_TOKEN_TTL_HOURS must be more than 1 hour" in started.stderr
    assert "Traceback" not in started.stderr


@pytest.mark.parametrize("variable", ["DASHBOARD_PUBLIC_URL", "PORTAL_PUBLIC_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "refunds.example.com",
        "//refunds.example.com",
        "ftp://refunds.example.com",
        "https://",
        "https:///refunds",
        "https://refunds.example.com/?ref=mail",
        "https://refunds.example.com/#portal",
        "javascript:alert(1)",
    ],
)
def test_a_public_url_must_be_an_absolute_http_address(variable: str, url: str) -> None:
    """Links built on it go out in emails: a relative, scheme-less or query-carrying base makes broken links."""
    with pytest.raises(ValidationError, match=variable):
        settings(**{variable.lower(): url})


def test_a_public_url_may_have_a_path_and_a_port() -> None:
    configured = settings(
        dashboard_public_url="https://dashboard.example.com:8443/refundflow",
        portal_public_url="http://refunds.example.com/",
    )
    assert configured.dashboard_public_url == "https://dashboard.example.com:8443/refundflow"
    assert loopback_public_urls(configured) == {}


def test_an_empty_portal_url_falls_back_to_the_dashboards_as_it_did() -> None:
    """Compose files pass ``${PORTAL_PUBLIC_URL:-}``: empty meant "the dashboard's address", and still does."""
    assert settings(portal_public_url="").portal_public_url is None


def test_loopback_public_urls_are_named_for_the_start_up_warning() -> None:
    assert loopback_public_urls(settings()) == {"DASHBOARD_PUBLIC_URL": "http://127.0.0.1:8000"}
    local = settings(dashboard_public_url="https://dash.example.com", portal_public_url="http://localhost:8000")
    assert loopback_public_urls(local) == {"PORTAL_PUBLIC_URL": "http://localhost:8000"}
    assert loopback_public_urls(settings(dashboard_public_url="http://[::1]:8000")) == {
        "DASHBOARD_PUBLIC_URL": "http://[::1]:8000"
    }


def test_an_intake_whose_links_point_at_loopback_warns_once_at_start(
    tmp_path: Path, postgres_url: str, kafka_bootstrap: str
) -> None:
    """The defaults suit `make dev`; in production every customer and invitee would get a link to their own
    machine, so the process says so when it starts."""
    port = free_port()
    env = service_env(
        DATABASE_URL=asyncio.run(create_database(postgres_url)),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        REFUNDFLOW_ADMIN_TOKEN="t" * 32,
        HTTP_PORT=str(port),
    )
    env.pop("DASHBOARD_PUBLIC_URL", None)
    env.pop("PORTAL_PUBLIC_URL", None)
    intake = ServiceProcess("intake", ["refundflow-intake"], env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    try:
        intake.wait_ready()
    finally:
        intake.stop()

    warnings = [
        json.loads(line)
        for line in intake.log_path.read_text(errors="replace").splitlines()
        if '"public_url_is_loopback"' in line
    ]
    assert len(warnings) == 1, intake.log_tail()
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["urls"] == {"DASHBOARD_PUBLIC_URL": "http://127.0.0.1:8000"}
