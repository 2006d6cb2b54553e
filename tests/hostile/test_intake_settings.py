"""Intake refuses settings that would make every customer email say its link has expired."""

from __future__ import annotations

import os
import subprocess

import pytest
from pydantic import ValidationError

from refundflow_intake.settings import IntakeSettings


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
