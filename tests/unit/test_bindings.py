"""Unit tests for etl_tasks.bindings: columns to read, the target key, and target column types."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import NullType

from etl_tasks.bindings import bind_stream, read_columns, source_key, target_columns, target_key
from etl_tasks.spec import MigrationSpec, Stream
from etl_tasks.values.ddl import Target
from etl_tasks.values.types import ColumnType, Kind

# --- helpers -------------------------------------------------------------------------------


def customer_table() -> Table:
    """A legacy table: the primary key is not the first column; one column is untyped."""
    return Table(
        "Customer",
        MetaData(),
        Column("Email", String(120)),
        Column("CustomerId", Integer, primary_key=True),
        Column("Born", String(10)),
        Column("Price", postgresql.NUMERIC(10, 2), nullable=False),
        Column("Active", String(1)),
        Column("Notes", NullType()),
        Column("CreatedAt", postgresql.TIMESTAMP(timezone=True)),
    )


def line_table() -> Table:
    """A table with a composite primary key declared as (order_id, line_no)."""
    return Table(
        "OrderLine",
        MetaData(),
        Column("sku", String(20), nullable=False),
        Column("order_id", Integer, primary_key=True),
        Column("line_no", Integer, primary_key=True),
        Column("qty", Integer),
    )


def customer_types() -> dict[str, ColumnType]:
    """The declared types of :func:`customer_table`, as PostgreSQL's catalog gives them."""
    pg = "postgresql"
    return {
        "Email": ColumnType(pg, Kind.TEXT, "character varying(120)", length=120),
        "CustomerId": ColumnType(pg, Kind.INTEGER, "integer", nullable=False, precision=32),
        "Born": ColumnType(pg, Kind.TEXT, "character varying(10)", length=10),
        "Price": ColumnType(pg, Kind.DECIMAL, "numeric(10,2)", False, precision=10, scale=2),
        "Active": ColumnType(pg, Kind.TEXT, "character varying(1)", length=1),
        "Notes": ColumnType("sqlite", Kind.UNTYPED, ""),
        "CreatedAt": ColumnType(pg, Kind.TIMESTAMPTZ, "timestamp with time zone"),
    }


def stream(**fields: Any) -> Stream:
    base = {"source_table": "Customer", "target_table": "customers"}
    return Stream.model_validate({**base, **fields})


# --- the source key and the columns to read ------------------------------------------------


def test_source_key_defaults_to_the_primary_key() -> None:
    assert source_key(stream(), customer_table()) == ["CustomerId"]
    assert source_key(stream(), line_table()) == ["order_id", "line_no"]


def test_source_key_as_given_wins() -> None:
    assert source_key(stream(key=["Email", "Born"]), customer_table()) == ["Email", "Born"]


def test_read_columns_without_mapping_is_every_column_key_first() -> None:
    table = customer_table()

    cols = read_columns(stream(), table)

    assert cols == ["CustomerId", "Email", "Born", "Price", "Active", "Notes", "CreatedAt"]


def test_read_columns_puts_a_composite_key_first_in_key_order() -> None:
    cols = read_columns(stream(), line_table())

    assert cols == ["order_id", "line_no", "sku", "qty"]


def test_read_columns_reads_each_mapped_source_column_once() -> None:
    # Given a mapping that uses Email twice, renames the key and adds a constant
    s = stream(
        columns={
            "email": "Email",
            "email_lower": {"from": "Email", "transform": "lower"},
            "id": "CustomerId",
            "price": {"from": "Price", "transform": "decimal"},
            "tenant": {"value": "acme"},
            "born": {"from": "Born"},
        }
    )

    # When the columns to read are worked out
    cols = read_columns(s, customer_table())

    # Then the key comes first, then each used column once, in mapping order
    assert cols == ["CustomerId", "Email", "Price", "Born"]


def test_read_columns_reads_the_key_even_when_it_is_not_mapped() -> None:
    cols = read_columns(stream(key=["order_id", "line_no"], columns={"s": "sku"}), line_table())

    assert cols == ["order_id", "line_no", "sku"]


def test_read_columns_with_only_constants_reads_just_the_key() -> None:
    assert read_columns(stream(columns={"t": {"value": 1}}), customer_table()) == ["CustomerId"]


# --- the target key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (["CustomerId"], True)),
        ({"columns": {"customer_id": "CustomerId", "email": "Email"}}, (["customer_id"], True)),
        ({"columns": {"email": "Email", "CustomerId": "CustomerId"}}, (["CustomerId"], True)),
        (
            {
                "columns": {
                    "id": "CustomerId",
                    "id_text": {"from": "CustomerId", "transform": "lower"},
                }
            },
            (["id"], True),
        ),
        ({"columns": {"id": {"from": "CustomerId", "transform": "int"}}}, ([], False)),
        (
            {"columns": {"id": {"from": "CustomerId", "transform": "int"}, "email": "Email"}},
            ([], False),
        ),
        ({"columns": {"email": "Email"}}, ([], False)),
        ({"columns": {"id": {"value": 1}}}, ([], False)),
        ({"key": "Email", "columns": {"mail": "Email", "id": "CustomerId"}}, (["mail"], True)),
    ],
    ids=[
        "default",
        "renamed",
        "same-name",
        "renamed-and-transformed-copy",
        "transformed",
        "transformed-beside-others",
        "not-mapped",
        "constant",
        "explicit-key",
    ],
)
def test_target_key(fields: dict[str, Any], expected: tuple[list[str], bool]) -> None:
    assert target_key(stream(**fields), customer_table()) == expected


def test_composite_target_key_follows_the_source_key_order() -> None:
    s = stream(columns={"line": "line_no", "sku": "sku", "order": "order_id"})

    assert target_key(s, line_table()) == (["order", "line"], True)


def test_composite_target_key_with_one_part_transformed_is_not_identity() -> None:
    s = stream(columns={"line": "line_no", "order": {"from": "order_id", "transform": "int"}})

    assert target_key(s, line_table()) == ([], False)


def test_key_copied_through_from_without_transform_is_identity() -> None:
    s = stream(columns={"id": {"from": "CustomerId"}})

    assert target_key(s, customer_table()) == (["id"], True)


# --- target column types -------------------------------------------------------------------

PG = Target("postgresql", table="customers")


def types_of(s: Stream, table: Table, to: Target = PG) -> dict[str, str]:
    columns, refused = target_columns(s, table, customer_types(), to)
    assert not refused
    return {c.name: c.carried.sql for c in columns}


def nullability_of(s: Stream, table: Table) -> dict[str, bool]:
    columns, _ = target_columns(s, table, customer_types(), PG)
    return {c.name: c.nullable for c in columns}


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("int", "bigint"),
        ("float", "double precision"),
        ("decimal", "numeric"),
        ("bool", "boolean"),
        ("date", "date"),
        ("datetime", "timestamp"),
        ("lower", "text"),
        ("upper", "text"),
        ("strip", "text"),
        ("map", "text"),
    ],
)
def test_transformed_column_type(transform: str, expected: str) -> None:
    s = stream(columns={"id": "CustomerId", "out": {"from": "Born", "transform": transform}})

    assert types_of(s, customer_table())["out"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme", "text"),
        (7, "bigint"),
        (2.5, "double precision"),
        (True, "boolean"),
        (False, "boolean"),
        (None, "text"),
        ({"a": 1}, "json"),
    ],
    ids=["str", "int", "float", "true", "false", "null", "object"],
)
def test_constant_column_type(value: object, expected: str) -> None:
    s = stream(columns={"id": "CustomerId", "c": {"value": value}})

    assert types_of(s, customer_table())["c"] == expected


def test_a_plain_copy_within_one_dialect_keeps_the_declaration() -> None:
    types = types_of(stream(), customer_table())

    assert types["CustomerId"] == "integer"
    assert types["Email"] == "character varying(120)"
    assert types["Price"] == "numeric(10,2)"
    assert types["CreatedAt"] == "timestamp with time zone"


def test_a_plain_copy_across_dialects_gets_the_exact_counterpart() -> None:
    maria = types_of(stream(), customer_table(), Target("mysql", mariadb=True, table="c"))

    assert maria["Price"] == "DECIMAL(10,2)"
    assert maria["CreatedAt"] == "DATETIME(6)"  # an instant, kept in UTC
    assert maria["Email"] == "VARCHAR(120)"
    assert types_of(stream(), customer_table(), Target("sqlite"))["Price"] == "TEXT"


@pytest.mark.parametrize("spec", ["Notes", {"from": "Notes"}], ids=["copy", "from"])
def test_untyped_column_becomes_text(spec: object) -> None:
    s = stream(columns={"id": "CustomerId", "notes": spec})

    assert types_of(s, customer_table())["notes"] == "text"


def test_transform_without_a_known_type_keeps_the_source_type() -> None:
    s = stream(
        columns={
            "id": "CustomerId",
            "p": {"from": "Price", "transform": "null_if", "args": {"value": "0"}},
        }
    )

    assert types_of(s, customer_table())["p"] == "numeric(10,2)"


def test_target_columns_follow_the_mapping_order_and_names() -> None:
    s = stream(columns={"z": {"value": 1}, "id": "CustomerId", "mail": "Email"})

    assert list(types_of(s, customer_table())) == ["z", "id", "mail"]


def test_exclude_drops_columns_from_the_default_mapping() -> None:
    s = stream(exclude=["Notes", "Born"])

    assert "Notes" not in types_of(s, customer_table())
    assert read_columns(s, customer_table()) == [
        "CustomerId",
        "Email",
        "Price",
        "Active",
        "CreatedAt",
    ]


def test_nullability() -> None:
    # Given copies of nullable and not-null columns, a transformed column and a constant
    s = stream(
        columns={
            "id": "CustomerId",
            "price": "Price",
            "email": "Email",
            "price_from": {"from": "Price"},
            "tenant": {"value": "acme"},
        }
    )

    # When the target's shape is worked out
    nullable = nullability_of(s, customer_table())

    # Then plain copies keep the source's nullability; the rest may be null
    assert nullable == {
        "id": False,
        "price": False,
        "email": True,
        "price_from": True,
        "tenant": True,
    }


# --- binding -------------------------------------------------------------------------------


def test_bind_stream_puts_it_together() -> None:
    spec = MigrationSpec.model_validate(
        {
            "name": "m",
            "source": {"url": "sqlite://"},
            "target": {"url": "sqlite://"},
            "streams": [
                {
                    "source_table": "Customer",
                    "target_table": "customers",
                    "columns": {
                        "email": {"from": "Email", "transform": "lower"},
                        "customer_id": "CustomerId",
                    },
                }
            ],
        }
    )

    binding = bind_stream(spec, "customers", customer_table(), customer_types())

    assert binding.name == "customers"
    assert binding.key == ["CustomerId"] and binding.key_width == 1
    assert binding.source.columns == ["CustomerId", "Email"]
    assert (binding.target_key, binding.identity_key) == (["customer_id"], True)
    assert list(binding.mapper.target_columns) == ["email", "customer_id"]
