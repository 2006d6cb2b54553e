"""Request and response bodies of merchants and their API keys."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from refundflow_intake.api import examples as ex
from refundflow_intake.api.fields import AccountEmail, Line
from refundflow_intake.api.schemas import Body


class MerchantCreate(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Acme Software", "owner_email": "ada@acme.example"}]}
    )

    name: Line = Field(min_length=1)
    owner_email: AccountEmail | None = Field(
        default=None,
        description="invite this person as the merchant's first owner (dashboard sign-in); plain ASCII",
    )


class MerchantCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=ex.examples(
            {
                "id": "mer_7a01",
                "api_key": "rfk_Yk3v...",
                "api_key_id": "key_3c1d",
                "api_key_already_shown": False,
                "owner_invite_url": "https://refunds.example/dashboard/invite/Xb3...",
            }
        )
    )

    id: str
    api_key: str | None = Field(
        description="the first API key's secret, shown once: store it, Refundflow keeps only a hash (null on a retry"
        " answered with the first request's merchant: see api_key_already_shown)"
    )
    api_key_id: str = Field(description="the first API key's id")
    api_key_already_shown: bool = Field(
        default=False,
        description="true on a retry with the first request's Idempotency-Key (Idempotent-Replayed: true): the key's"
        " secret and the owner's invite link were in the first answer only, so api_key and owner_invite_url are null;"
        " a lost key is replaced with POST /v1/merchants/{id}/api-keys, the owner was emailed the link",
    )
    owner_invite_url: str | None = Field(
        default=None, description="with owner_email: a one-time link, valid 72 h, that sets the owner's password"
    )


class ApiKeyCreate(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "billing backend"}]})

    name: Line | None = Field(default=None, examples=["billing backend"])


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.API_KEY))

    id: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    model_config = ConfigDict(json_schema_extra=ex.examples({**ex.API_KEY, "api_key": "rfk_Yk3v..."}))

    api_key: str = Field(description="shown once; store it, Refundflow keeps only a hash")


class ApiKeyList(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples({"data": [ex.API_KEY]}))

    data: list[ApiKeyOut]
