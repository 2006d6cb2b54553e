"""Secrets (review findings 14 and 23): a key ring that rotates without an outage, sub-keys derived with HKDF, and
an internal API token of its own, compared so that no input can turn a 401 into a 500; a sealed value the ring
cannot open is said to be unreadable, not a 500."""

from __future__ import annotations

import base64
import os

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from structlog.testing import capture_logs

from refundflow_notifier.app import create_app as create_notifier
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.secret_box import SecretBox, SecretBoxError, UnknownKeyId, generate_key
from refundflow_shared.settings import ServiceSettings
from tests.support.dashboard_people import PASSWORD, browser, csrf_of, merchant_with_owner
from tests.support.intake_harness import running_intake

OLD, NEW = generate_key(), generate_key()
SECRET = "whsec_c2VjcmV0IHNpZ25pbmcga2V5"
UNREADABLE = "unreadable: save it again"  # what a merchant is shown of a Slack URL the ring cannot open


def test_a_key_rotates_without_an_outage() -> None:
    sealed_before = SecretBox(f"k0:{OLD}").seal(SECRET, context="we_1")

    rotated = SecretBox(f"k1:{NEW},k0:{OLD}")  # the new key first, the old one still listed
    sealed_after = rotated.seal(SECRET, context="we_1")

    assert sealed_before.startswith("v2.k0.")
    assert sealed_after.startswith("v2.k1."), "the primary key seals"
    assert rotated.open(sealed_before, context="we_1") == SECRET
    assert rotated.open(sealed_after, context="we_1") == SECRET


def test_a_ciphertext_of_a_key_no_longer_listed_is_a_clear_error() -> None:
    sealed = SecretBox(f"k0:{OLD}").seal(SECRET, context="we_1")
    with pytest.raises(UnknownKeyId, match="'k0'"):
        SecretBox(f"k1:{NEW}").open(sealed, context="we_1")


def test_todays_v1_ciphertexts_still_open() -> None:
    nonce = os.urandom(12)
    legacy = AESGCM(base64.b64decode(OLD)).encrypt(nonce, SECRET.encode(), b"we_1")  # how v1 sealed: the raw key
    v1 = "v1." + base64.urlsafe_b64encode(nonce + legacy).decode()

    assert SecretBox(OLD).open(v1, context="we_1") == SECRET
    assert SecretBox(f"k1:{NEW},k0:{OLD}").open(v1, context="we_1") == SECRET
    with pytest.raises(SecretBoxError):
        SecretBox(NEW).open(v1, context="we_1")


def test_the_aes_key_is_derived_never_the_configured_key_itself() -> None:
    sealed = SecretBox(OLD).seal(SECRET, context="we_1")
    raw = base64.urlsafe_b64decode(sealed.split(".", 2)[2])
    with pytest.raises(InvalidTag):
        AESGCM(base64.b64decode(OLD)).decrypt(raw[:12], raw[12:], b"we_1")


def test_a_ciphertext_is_bound_to_its_context() -> None:
    box = SecretBox(OLD)
    with pytest.raises(SecretBoxError):
        box.open(box.seal(SECRET, context="we_1"), context="we_2")


@pytest.mark.parametrize(
    "ring",
    [
        f"k1:{NEW},k1:{OLD}",  # a kid twice
        f"k 1:{NEW}",  # not a kid
        "k1:c2hvcnQ=",  # not 32 bytes
        "k1:not base64!",
        "",
    ],
    ids=["kid-twice", "not-a-kid", "short-key", "not-base64", "empty"],  # the keys are random: ids stay the same
)
def test_a_malformed_key_ring_is_refused(ring: str) -> None:
    with pytest.raises(SecretBoxError):
        SecretBox(ring)


def test_settings_take_a_key_ring_and_still_a_single_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_KEY", OLD)
    single = ServiceSettings().webhook_secret_key
    assert single is not None
    sealed = SecretBox(single.get_secret_value()).seal(SECRET, context="m_1")

    monkeypatch.setenv("WEBHOOK_SECRET_KEYS", f"k1:{NEW},k0:{OLD}")
    ring = ServiceSettings().webhook_secret_key
    assert ring is not None, "the ring is what every SecretBox(settings.webhook_secret_key) gets"
    box = SecretBox(ring.get_secret_value())
    assert box.primary_kid == "k1"
    assert box.open(sealed, context="m_1") == SECRET


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        (b"Bearer wrong-token", 401),
        (b"Bearer \xc3\xa9t\xc3\xa9", 401),  # not ASCII: compare_digest on str raised TypeError (a 500)
        (b"Bearer internal-\xff", 401),
    ],
)
async def test_the_notifier_internal_api_refuses_any_other_token_with_401(
    authorization: bytes | None, status: int
) -> None:
    app = create_notifier(NotifierSettings(refundflow_internal_token="internal-token", webhook_secret_key=OLD))
    headers = {b"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as client:
        response = await client.get("/internal/v1/merchants/m_1/webhook-endpoints/we_1/deliveries", headers=headers)
    assert response.status_code == status, response.text


async def test_the_internal_api_is_closed_until_its_own_token_is_set() -> None:
    # The sealing key is set; the token is not derived from it anymore.
    app = create_notifier(NotifierSettings(webhook_secret_key=OLD))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as client:
        response = await client.get(
            "/internal/v1/merchants/m_1/webhook-endpoints/we_1/deliveries", headers={"Authorization": "Bearer x"}
        )
    assert response.status_code == 503


async def test_a_slack_url_the_key_ring_cannot_open_is_shown_as_unreadable_not_a_500(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    """WEBHOOK_SECRET_KEY replaced rather than rotated: the saved Slack URL no longer opens. The merchant's settings
    still answer, in the API and the dashboard, saying to save the URL again; saving it again makes it readable."""
    async with running_intake(postgres_url, kafka_bootstrap, webhook_secret_key=OLD) as before:
        merchant, owner = await merchant_with_owner(before)
        saved = await before.client.put(
            "/v1/notification-settings",
            headers=merchant,
            json={"slack_webhook_url": "http://127.0.0.1:9/hooks/secret-x"},
        )
        assert saved.status_code == 200, saved.text
    database = before.settings.database_url
    async with running_intake(postgres_url, kafka_bootstrap, database_url=database, webhook_secret_key=NEW) as after:
        with capture_logs() as logs:
            shown = await after.client.get("/v1/notification-settings", headers=merchant)
            kept = await after.client.put(
                "/v1/notification-settings", headers=merchant, json={"team_email": "ops@acme.example"}
            )
        assert shown.status_code == 200, shown.text
        assert shown.json()["slack_webhook_url"] == UNREADABLE
        assert kept.status_code == 200, kept.text
        assert (kept.json()["team_email"], kept.json()["slack_webhook_url"]) == (
            "ops@acme.example",
            UNREADABLE,
        )
        unreadable = [line for line in logs if line["event"] == "slack_url_unreadable"]
        assert unreadable and all(line["log_level"] == "warning" for line in unreadable)
        assert "secret-x" not in repr(logs)

        dashboard = browser(after)
        signed_in = await dashboard.post(
            "/dashboard/login",
            data={
                "csrf_token": csrf_of((await dashboard.get("/dashboard/login")).text),
                "email": owner.email,
                "password": PASSWORD,
            },
        )
        assert signed_in.status_code == 303, signed_in.text[:500]
        page = await dashboard.get("/dashboard/settings")
        assert page.status_code == 200, page.text[:500]
        assert UNREADABLE in page.text

        again = await after.client.put(
            "/v1/notification-settings",
            headers=merchant,
            json={"slack_webhook_url": "http://127.0.0.1:9/hooks/secret-y"},
        )
        assert again.json()["slack_webhook_url"] == "http://127.0.0.1/…"
