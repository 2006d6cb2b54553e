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
                "owner_invite_url": "https://refunds.example/dashboard/invite/Xb3...",
            }
        )
    )

    id: str
    api_key: str = Field(description="shown once; store it, Refundflow keeps only a hash")
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
