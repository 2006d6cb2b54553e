"""Every service refuses a bad environment the same way: one line per problem naming the variable, exit code 1,
no traceback, and never a value (pydantic's own report echoes the input, secrets included)."""

from __future__ import annotations

import os
import subprocess

import pytest
from pydantic import ValidationError

from refundflow_shared.secret_box import generate_key
from refundflow_shared.settings import ServiceSettings

# What each service needs besides its defaults to get as far as its settings; the database is one nobody answers.
REQUIRED = {
    "intake": {"REFUNDFLOW_ADMIN_TOKEN": "t" * 32},
    "processor": {"STRIPE_API_KEY": "sk_test_abc"},
    "notifier": {},
}
SECRET = "s3cr3t-value-that-must-not-be-printed"


def start(service: str, **values: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "WEBHOOK_SECRET_KEY", "STRIPE_"))}
    env |= {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere", "LOG_LEVEL": "INFO"}
    env |= REQUIRED[service] | values
    command = [f"refundflow-{service}"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def assert_refused_clearly(started: subprocess.CompletedProcess[str], service: str, variable: str) -> None:
    output = started.stdout + started.stderr
    assert started.returncode == 1, output
    assert "Traceback" not in output
    refusals = [line for line in started.stderr.splitlines() if line.startswith(f"refundflow-{service} refuses")]
    assert any(variable in line for line in refusals), started.stderr


def test_the_notifier_refuses_credentials_in_clear_text_without_printing_the_password() -> None:
    started = start("notifier", SMTP_USERNAME="u", SMTP_TLS="none", SMTP_PASSWORD=SECRET)

    assert_refused_clearly(started, "notifier", "SMTP_USERNAME")
    assert SECRET[-12:] not in started.stdout + started.stderr


def test_the_notifier_names_a_value_out_of_its_choices() -> None:
    started = start("notifier", SMTP_TLS="sometimes", SMTP_PASSWORD=SECRET)

    assert_refused_clearly(started, "notifier", "SMTP_TLS")
    assert SECRET[-12:] not in started.stdout + started.stderr


@pytest.mark.parametrize("service", ["intake", "processor", "notifier"])
def test_an_unknown_log_level_is_refused_before_start(service: str) -> None:
    started = start(service, LOG_LEVEL="verbose")

    assert_refused_clearly(started, service, "LOG_LEVEL")


@pytest.mark.parametrize("service", ["intake", "notifier"])
def test_a_malformed_secret_key_ring_is_refused_without_printing_it(service: str) -> None:
    good = generate_key()
    started = start(service, WEBHOOK_SECRET_KEYS=f"new:{good},old:{SECRET}")

    assert_refused_clearly(started, service, "WEBHOOK_SECRET_KEYS")
    output = started.stdout + started.stderr
    assert good not in output and SECRET[-12:] not in output


def test_a_log_level_is_one_of_the_standard_names_in_any_case() -> None:
    assert ServiceSettings(log_level="debug").log_level == "DEBUG"
    assert ServiceSettings(log_level="Warning").log_level == "WARNING"
    with pytest.raises(ValidationError, match="log_level"):
        ServiceSettings(log_level="verbose")


def test_the_standard_librarys_other_names_for_levels_are_still_taken() -> None:
    """WARN and FATAL worked before the names were checked: a deployment that sets them must still start."""
    assert ServiceSettings(log_level="warn").log_level == "WARNING"
    assert ServiceSettings(log_level="FATAL").log_level == "CRITICAL"


def test_an_empty_secret_key_means_none_as_it_did() -> None:
    """Compose files pass ``${WEBHOOK_SECRET_KEY:-}``: empty was no key before the ring was checked, and still is."""
    assert ServiceSettings(webhook_secret_key="", webhook_secret_keys="").webhook_secret_key is None


@pytest.mark.parametrize("special", ["/", "#", "?"])
@pytest.mark.parametrize("service", ["intake", "processor", "notifier"])
def test_a_database_url_whose_password_is_not_percent_encoded_is_refused_without_printing_it(
    service: str, special: str
) -> None:
    password = f"{SECRET[:10]}{special}{SECRET[10:]}"
    started = start(service, DATABASE_URL=f"postgresql://refundflow:{password}@127.0.0.1:1/refundflow")

    assert_refused_clearly(started, service, "DATABASE_URL")
    output = started.stdout + started.stderr
    assert SECRET[:10] not in output and SECRET[10:] not in output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db1:5432,db2:5432/refundflow?target_session_attrs=read-write",
        "postgresql://db1,db2:6432/refundflow",
        "postgresql://refundflow@[::1]:5432/refundflow",
        "postgresql://db.internal/refundflow?user=svc@project.iam",
        "postgresql://postgres@/refundflow?host=/srv/pg&port=5433",
    ],
)
def test_a_database_url_asyncpg_reads_as_meant_is_taken(url: str) -> None:
    """The check refuses only a password that ends the host part early: several hosts (db1:5432,db2:5432, which
    asyncpg connects to in turn) or an @ in a query value (user=svc@project.iam) stopped every service."""
    assert ServiceSettings(database_url=url).database_url == url
