"""The API's request bodies as pydantic models (a spec has its own, in etl_tasks.spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from etl_tasks.tokens import NAME_MAX


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenCreate(_Request):
    """A new token: who holds it and what it may do."""

    name: str = Field(min_length=1, max_length=NAME_MAX)
    role: Literal["viewer", "operator", "admin"]
