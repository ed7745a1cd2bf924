"""Request and response bodies of the account endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class Credentials(BaseModel):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=8, max_length=1024)


class LoginBody(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    is_admin: bool
    created_at: datetime
    language: str | None = Field(
        None, description="The pages' language the user picked (en, zh-TW, zh-CN), if any."
    )


class LanguageBody(BaseModel):
    language: Literal["en", "zh-TW", "zh-CN"] = Field(
        description="English, Traditional Chinese (Taiwan) or Simplified Chinese."
    )


class SessionRead(BaseModel):
    user: UserRead
    csrf_token: str | None = Field(
        description="Send as X-CSRF-Token on unsafe requests made with the session cookie; "
        "null when authenticated with an API token."
    )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    token_prefix: str
    created_at: datetime
    last_used_at: datetime | None


class TokenCreated(BaseModel):
    id: uuid.UUID
    name: str
    token: str = Field(description="Shown once; only its hash is stored.")
    created_at: datetime


class TokenList(BaseModel):
    # Always sent: required (and nullable) in the published response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    items: list[TokenRead]
    next_cursor: str | None = None
