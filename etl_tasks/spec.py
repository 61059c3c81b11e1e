"""The migration spec: what an operator submits, validated with pydantic.

This module checks the spec's *shape*; :mod:`etl_tasks.preflight` checks it
against the real source and target.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from etl_tasks.boundary.names import control_character, is_reserved_table
from etl_tasks.endpoints import ENV_NAME, FileEndpoint, HttpEndpoint
from etl_tasks.endpoints import SpecModel as _Model
from etl_tasks.errors import FieldError, SpecError
from etl_tasks.query_check import query_problem

FilterOp = Literal["=", "!=", "<", "<=", ">", ">=", "in", "is_null"]
WriteMode = Literal["upsert", "insert", "skip_existing"]
Representation = Literal["text", "json"]
MAX_VALUE_DEPTH = 16  # nesting of a constant, a filter value or a transform's args


def _depth(value: Any) -> int:
    """How deeply a JSON value nests (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if deepest > MAX_VALUE_DEPTH:
            break
        if isinstance(item, dict):
            todo.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, level + 1) for v in item)
    return deepest


def _shallow(value: Any) -> Any:
    if _depth(value) > MAX_VALUE_DEPTH:
        raise ValueError(f"nested more than {MAX_VALUE_DEPTH} levels deep")
    return value


def _name(value: str) -> str:
    """A table or column name: used exactly as written, so no control characters."""
    if control_character(value):
        raise ValueError("names may not contain control characters (NUL, tab, newline, …)")
    return value


def _table(value: str | None) -> str | None:
    if value is None:
        return None
    _name(value)
    if is_reserved_table(value):
        raise ValueError("baton_* tables are Baton's own: a stream may not read or write one")
    return value


def endpoint_kind(endpoint: dict[str, Any]) -> str:
    """What kind of system an endpoint object names: ``sql`` (``url``, ``url_env``), or its
    form's own key (``http``, ``file``); a sealed one keeps its kind beside the seal."""
    if "kind" in endpoint:
        return str(endpoint["kind"])
    if "url" in endpoint or "url_env" in endpoint or not endpoint:
        return "sql"
    return next(iter(endpoint))


class Endpoint(_Model):
    """A source or target: a SQLAlchemy URL, given directly or by environment variable.

    What it may reach is decided by :mod:`etl_tasks.boundary`, when it is checked.
    """

    kind: ClassVar[str] = "sql"

    url: str | None = Field(None, min_length=1, max_length=4096)
    url_env: str | None = Field(None, pattern=ENV_NAME)

    @model_validator(mode="after")
    def _one_of(self) -> Endpoint:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of 'url' or 'url_env'")
        return self

    def unchecked_url(self) -> str:
        """The URL, reading ``url_env`` straight from the environment: only for operator
        tooling running its own specs (the demo, tests). Steps and preflight go through
        :class:`etl_tasks.boundary.policy.Boundary`, which applies the allow-lists."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        value = os.environ.get(self.url_env)
        if not value:
            raise SpecError(
                [FieldError("url_env", f"environment variable {self.url_env} is not set")]
            )
        return value


def _endpoint_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = endpoint_kind(value)
        return kind if kind in ENDPOINT_KINDS else None
    return getattr(value, "kind", None)


ENDPOINT_KINDS = ("sql", "http", "file")

#: Any endpoint a spec may give, told apart by its form (:func:`endpoint_kind`).
AnyEndpoint = Annotated[
    Annotated[Endpoint, Tag("sql")]
    | Annotated[HttpEndpoint, Tag("http")]
    | Annotated[FileEndpoint, Tag("file")],
    Discriminator(
        _endpoint_tag,
        custom_error_type="endpoint_form",
        custom_error_message=(
            "give {'url': …} or {'url_env': …} for a database, {'http': {…}} for an HTTP API, "
            "or {'file': {…}} for exported files"
        ),
    ),
]


class Filter(_Model):
    column: str
    op: FilterOp
    value: Any = None

    _column_name = field_validator("column")(_name)
    _value_shallow = field_validator("value")(_shallow)

    @model_validator(mode="after")
    def _value_fits_op(self) -> Filter:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("'in' takes a list as its value")
        if self.op not in ("in", "is_null") and isinstance(self.value, (list, dict)):
            raise ValueError(f"'{self.op}' takes a single value")
        return self


class ColumnFrom(_Model):
    """A target column taken from a source column, optionally through a transform."""

    from_: str = Field(alias="from")
    transform: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    # Carry a type the target has no exact counterpart for as its text, or as JSON.
    as_: Representation | None = Field(None, alias="as")

    _from_name = field_validator("from_")(_name)
    _args_shallow = field_validator("args")(_shallow)


class ColumnValue(_Model):
    """A target column holding a constant (a tenant id, say)."""

    value: Any

    _value_shallow = field_validator("value")(_shallow)


ColumnSpec = str | ColumnFrom | ColumnValue


class Stream(_Model):
    """One source table (or query) to one target table."""

    source_table: str | None = Field(None, min_length=1)
    # Instead of source_table, on a SQL source (admins only): exactly one SELECT, keyed by
    # a column it returns, run read-only with a statement timeout.
    query: str | None = Field(None, min_length=1)
    target_table: str = Field(min_length=1)
    name: str | None = None
    key: str | list[str] | None = None
    where: list[Filter] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] | None = None
    create_target: bool = False
    write: WriteMode = "upsert"
    after: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)  # on top of the default mapping
    # Source column → representation, for columns mapped by default ("as" in a mapping).
    as_: dict[str, Representation] = Field(default_factory=dict, alias="as")
    # Rows whose key is NULL (SQLite allows it outside INTEGER PRIMARY KEY): refused at
    # preflight with their count, or quarantined with their reason.
    on_null_key: Literal["fail", "quarantine"] = "fail"
    # Stored only when false, so a version without the field still reads the spec.
    advance_sequences: bool = Field(True, exclude_if=lambda v: v is True)

    @property
    def stream_name(self) -> str:
        return self.name or self.target_table

    @property
    def key_columns(self) -> list[str] | None:
        if self.key is None:
            return None
        return [self.key] if isinstance(self.key, str) else list(self.key)

    _tables = field_validator("source_table", "target_table")(_table)

    @field_validator("query")
    @classmethod
    def _one_select(cls, v: str | None) -> str | None:
        if v is not None:
            problem = query_problem(v)
            if problem:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _table_or_query(self) -> Stream:
        if (self.source_table is None) == (self.query is None):
            raise ValueError("give exactly one of 'source_table' or 'query'")
        if self.query is not None and not self.key:
            raise ValueError("a stream with a query needs a 'key': a column the query returns")
        return self

    @property
    def source_name(self) -> str:
        """What the source side is called in messages: its table, or ``query``."""
        return self.source_table or "query"

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a key list must be non-empty and without repeats")
        for name in [v] if isinstance(v, str) else v or []:
            _name(name)
        return v

    @model_validator(mode="after")
    def _exclude_only_defaults(self) -> Stream:
        if self.exclude and self.columns is not None:
            raise ValueError("'exclude' applies to the default mapping: leave out 'columns'")
        for name in self.exclude:
            _name(name)
        return self

    @field_validator("columns")
    @classmethod
    def _columns_not_empty(cls, v: dict[str, ColumnSpec] | None) -> dict[str, ColumnSpec] | None:
        if v is not None and not v:
            raise ValueError("give at least one column, or leave 'columns' out")
        for name, spec in (v or {}).items():
            _name(name)
            if isinstance(spec, str):
                _name(spec)
        return v


NotifyOn = Literal["succeeded", "failed", "cancelled"]


def _every_end() -> list[NotifyOn]:
    return ["succeeded", "failed", "cancelled"]


class Notify(_Model):
    """A webhook announcing the migration's end: its URL and signing secret named by
    environment variable, through the ``*_env`` allow-list (:mod:`etl_tasks.notifications`)."""

    url_env: str = Field(pattern=ENV_NAME)
    secret_env: str | None = Field(None, pattern=ENV_NAME)  # unset: deliveries are unsigned
    on: list[NotifyOn] = Field(default_factory=_every_end, min_length=1)


class MigrationSpec(_Model):
    """The whole spec, exactly as CONTRACT.md describes it."""

    name: str = Field(min_length=1, max_length=200)
    source: AnyEndpoint
    target: AnyEndpoint
    streams: list[Stream] = Field(min_length=1)
    chunk_rows: int = Field(5000, ge=1, le=1_000_000)
    on_bad_row: Literal["quarantine", "fail"] = "quarantine"
    max_bad_rows: int = Field(1000, ge=0)
    # Compare the target with the source once the migration has succeeded (a verification,
    # as `POST /api/v1/migrations/{id}/verify` starts one).
    verify: bool = False
    # Announce the migration's end to a webhook; kept beside the spec, not in it (see
    # to_stored), so a worker of the previous version still reads the spec.
    notify: Notify | None = None

    def sql(self, which: str) -> Endpoint:
        """The source or target as a SQL endpoint; another kind is this version's limit."""
        endpoint = self.source if which == "source" else self.target
        if not isinstance(endpoint, Endpoint):
            raise SpecError([FieldError(which, f"no connector for {endpoint.kind} {which}s")])
        return endpoint

    def to_stored(self) -> dict[str, Any]:
        """The form kept in the state DB: JSON, aliases, nulls kept (a constant may be null).

        Only what the operator wrote is kept, not the defaults: a worker of the previous
        version can then read every spec that uses none of the fields added since. For the
        same reason ``verify`` is never kept: it is recorded as a pending verification of
        the migration instead, which workers of the previous version never read; ``notify``
        goes to the migration's own ``notify`` column."""
        return self.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude={"verify", "notify"}
        )

    @property
    def chunk_rows_given(self) -> bool:
        """Whether the operator set ``chunk_rows`` (the first and largest chunk size), or
        left it to Baton (:func:`etl_tasks.budget.largest_chunk`). Only what the operator
        wrote is stored (:meth:`to_stored`), so every worker reads the same."""
        return "chunk_rows" in self.model_fields_set

    def stream(self, name: str) -> Stream:
        for s in self.streams:
            if s.stream_name == name:
                return s
        raise KeyError(name)


def graph_errors(streams: list[Stream]) -> list[FieldError]:
    """Stream names unique, ``after`` naming known streams, no cycles: each error located."""
    errors: list[FieldError] = []
    names = [s.stream_name for s in streams]
    for i, name in enumerate(names):
        if names.index(name) != i:
            field = "name" if streams[i].name else "target_table"
            errors.append(
                FieldError(
                    f"streams/{i}/{field}", f"stream name {name!r} is used twice; give 'name'"
                )
            )
    known = set(names)
    for i, s in enumerate(streams):
        for j, dep in enumerate(s.after):
            if dep not in known:
                errors.append(FieldError(f"streams/{i}/after/{j}", f"no stream named {dep!r}"))
    if not errors:
        cycle = _find_cycle({s.stream_name: s.after for s in streams})
        if cycle is not None:
            errors.append(
                FieldError(
                    f"streams/{names.index(cycle)}/after",
                    f"streams wait for each other in a cycle through {cycle!r}",
                )
            )
    return errors


def _find_cycle(graph: dict[str, list[str]]) -> str | None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> str | None:
        if node in done:
            return None
        if node in visiting:
            return node
        visiting.add(node)
        for dep in graph[node]:
            found = visit(dep)
            if found is not None:
                return found
        visiting.discard(node)
        done.add(node)
        return None

    for node in graph:
        found = visit(node)
        if found is not None:
            return found
    return None


def parse_spec(data: object) -> MigrationSpec:
    """Validate a decoded JSON body; raise :class:`SpecError` listing every problem."""
    if not isinstance(data, dict):
        raise SpecError([FieldError("", "the spec must be a JSON object")])
    try:
        spec = MigrationSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_field_error(e) for e in exc.errors()]) from None
    errors = graph_errors(spec.streams)
    if errors:
        raise SpecError(errors)
    return spec


def _field_error(err: Any) -> FieldError:
    loc = list(err["loc"])
    if len(loc) > 1 and loc[0] in ("source", "target") and loc[1] in ENDPOINT_KINDS:
        del loc[1]  # the union's tag: ('source', 'http', 'http', 'url') reads source/http/url
    kept = [
        p for i, p in enumerate(loc) if not (_is_union_tag(p) and i and loc[i - 1] != "columns")
    ]
    path = "/".join(str(p) for p in kept)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return FieldError(path, msg)


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in {"str", "list[str]", "ColumnFrom", "ColumnValue"}
