"""The processor refuses settings that would send a key where it must not go (security review, finding 21)."""

from __future__ import annotations

import os
import subprocess

import pytest
from pydantic import ValidationError

from refundflow_processor.settings import ProcessorSettings


def settings(**values: object) -> ProcessorSettings:
    return ProcessorSettings.model_validate(values)


def test_the_provider_is_stripe_over_https_unless_configured_otherwise() -> None:
    assert settings(stripe_api_key="sk_live_abc").stripe_api_base == "https://api.stripe.com"


def test_a_live_key_is_never_sent_anywhere_but_stripe() -> None:
    for base in ("http://127.0.0.1:12111", "https://stripe.example.com", "https://api.stripe.com.evil.test"):
        with pytest.raises(ValidationError, match="live Stripe key"):
            settings(stripe_api_key="sk_live_abc", stripe_api_base=base, stripe_sandbox=True)


def test_plain_http_needs_the_explicit_sandbox_flag() -> None:
    with pytest.raises(ValidationError, match="STRIPE_SANDBOX"):
        settings(stripe_api_key="sk_test_abc", stripe_api_base="http://127.0.0.1:12111")
    assert settings(stripe_api_key="sk_test_abc", stripe_api_base="http://127.0.0.1:12111", stripe_sandbox=True)


def test_the_key_is_required() -> None:
    with pytest.raises(ValidationError, match="stripe_api_key"):
        settings()


def test_the_process_refuses_to_start_with_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env |= {"STRIPE_API_KEY": "sk_live_abc", "STRIPE_API_BASE": "http://127.0.0.1:12111"}
    started = subprocess.run(["refundflow-processor"], env=env, capture_output=True, text=True, timeout=60, check=False)

    assert started.returncode != 0
    assert "refundflow-processor refuses to start" in started.stderr
    assert "live Stripe key" in started.stderr
    assert "sk_live_abc" not in started.stderr, "the key itself is never printed"


def test_a_refusal_names_the_base_by_scheme_and_host_never_its_credentials() -> None:
    """STRIPE_API_BASE may hold a proxy's user and password: the refusal, printed at start, shows neither."""
    for key, base, sandbox in (
        ("sk_test_abc", "http://user:secretpw@proxy.example:3128/v1", False),  # plain http, no sandbox flag
        ("sk_live_abc", "https://user:secretpw@proxy.example:3128/v1", False),  # a live key, not to Stripe
        ("sk_test_abc", "ftp://user:secretpw@proxy.example/", True),  # not a web address at all
    ):
        with pytest.raises(ValidationError) as refused:
            settings(stripe_api_key=key, stripe_api_base=base, stripe_sandbox=sandbox)
        message = str(refused.value.errors()[0]["msg"])
        assert "proxy.example" in message, message
        assert "secretpw" not in message and "user" not in message, message
    with pytest.raises(ValidationError) as refused:  # no "//": read as scheme "user", nothing of it is shown
        settings(stripe_api_key="sk_test_abc", stripe_api_base="user:secretpw@proxy.example", stripe_sandbox=True)
    message = str(refused.value.errors()[0]["msg"])
    assert "secretpw" not in message and "user" not in message, message
