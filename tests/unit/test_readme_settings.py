"""README's configuration names every setting of each service: settings that change what merchants see (when an
endpoint is disabled, how long a session lasts, how far back a replay reaches) were read from the environment and
documented nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor.settings import ProcessorSettings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("settings", [IntakeSettings, ProcessorSettings, NotifierSettings], ids=lambda s: s.__name__)
def test_every_setting_of_each_service_is_named_in_the_readme(settings: type[BaseSettings]) -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [name.upper() for name in settings.model_fields if not re.search(rf"\b{name.upper()}\b", readme)]
    assert missing == [], f"settings README does not name: {missing}"
