"""The endpoint forms a spec may give besides SQL's ``{"url": …}``: shapes only.

What an endpoint may reach (hosts, paths, environment variables) is decided by
:mod:`etl_tasks.boundary` when it is checked; what it means is its connector's
(:mod:`etl_tasks.connectors.registry`). Nothing secret is ever written here:
credentials are named by environment variable, through the ``*_env`` allow-list.
"""

from __future__ import annotations

import codecs
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # an environment variable's name
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"  # an HTTP token (RFC 9110)


class SpecModel(BaseModel):
    """Every part of a spec: unknown fields refused, nothing changed once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpAuth(SpecModel):
    """Exactly one way to authenticate, each by the name of an environment variable."""

    bearer_env: str | None = Field(None, pattern=ENV_NAME)
    basic_env: str | None = Field(None, pattern=ENV_NAME)  # its value is ``user:password``
    header: str | None = Field(None, pattern=HEADER_NAME)
    env: str | None = Field(None, pattern=ENV_NAME)  # the value of ``header``

    @model_validator(mode="after")
    def _one_form(self) -> HttpAuth:
        forms = [self.bearer_env is not None, self.basic_env is not None, self.header is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of 'bearer_env', 'basic_env' or 'header' with 'env'")
        if (self.header is None) != (self.env is None):
            raise ValueError("'header' and 'env' go together")
        return self

    def env_names(self) -> list[str]:
        return [n for n in (self.bearer_env, self.basic_env, self.env) if n is not None]


class HttpSettings(SpecModel):
    """An HTTP API that takes rows: ``{table}`` in ``url`` stands for the stream's target."""

    url: str = Field(min_length=1, max_length=4096)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    auth: HttpAuth | None = None
    rows_field: str | None = Field(None, min_length=1, max_length=200)  # None: a bare array
    batch_rows: int = Field(100, ge=1, le=10_000)
    max_rps: float | None = Field(None, gt=0, le=10_000)  # None: unlimited
    timeout_s: float = Field(10.0, gt=0, le=300)
    delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    check_url: str | None = Field(None, min_length=1, max_length=4096)

    @field_validator("url", "check_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("an HTTP endpoint's URL starts with http:// or https://")
        return value


class HttpEndpoint(SpecModel):
    """``{"http": {…}}``: a target reached through the cloud product's HTTP API."""

    kind: ClassVar[str] = "http"

    http: HttpSettings


class FileSettings(SpecModel):
    """A folder of exported files; each stream's ``source_table`` is a file name or glob."""

    path: str = Field(min_length=1, max_length=4096)
    format: Literal["csv", "jsonl"] = "csv"
    encoding: str = Field("utf-8", min_length=1, max_length=64)  # or "auto": detected
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', min_length=1, max_length=1)
    header: bool = True

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown encoding {value!r}: give a Python codec name, or 'auto'"
                ) from None
        return value

    @field_validator("path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a path may not contain NUL")
        return value


class FileEndpoint(SpecModel):
    """``{"file": {…}}``: a source of exported CSV or JSON Lines files."""

    kind: ClassVar[str] = "file"

    file: FileSettings
