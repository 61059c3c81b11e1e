"""Unit tests for etl_tasks.bindings: columns to read, the target key, and target column types."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import NullType, TypeEngine

from etl_tasks.bindings import bind_stream, read_columns, source_key, target_columns, target_key
from etl_tasks.spec import MigrationSpec, Stream

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


def stream(**fields: Any) -> Stream:
    base = {"source_table": "Customer", "target_table": "customers"}
    return Stream.model_validate({**base, **fields})


def types_of(s: Stream, table: Table) -> dict[str, TypeEngine[Any]]:
    return {name: sa_type for name, sa_type, _ in target_columns(s, table)}


def nullability_of(s: Stream, table: Table) -> dict[str, bool]:
    return {name: nullable for name, _, nullable in target_columns(s, table)}


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


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("int", BigInteger),
        ("float", Float),
        ("decimal", Numeric),
        ("bool", Boolean),
        ("date", Date),
        ("datetime", DateTime),
        ("lower", Text),
        ("upper", Text),
        ("strip", Text),
        ("map", Text),
    ],
)
def test_transformed_column_type(transform: str, expected: type[TypeEngine[Any]]) -> None:
    s = stream(columns={"id": "CustomerId", "out": {"from": "Born", "transform": transform}})

    assert type(types_of(s, customer_table())["out"]) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme", Text),
        (7, BigInteger),
        (2.5, Float),
        (True, Boolean),
        (False, Boolean),
        (None, Text),
        ({"a": 1}, Text),
    ],
    ids=["str", "int", "float", "true", "false", "null", "object"],
)
def test_constant_column_type(value: object, expected: type[TypeEngine[Any]]) -> None:
    s = stream(columns={"id": "CustomerId", "c": {"value": value}})

    assert type(types_of(s, customer_table())["c"]) is expected


def test_plain_copy_keeps_the_generic_type() -> None:
    types = types_of(stream(), customer_table())

    assert type(types["CustomerId"]) is Integer
    assert type(types["Email"]) is String and types["Email"].length == 120  # type: ignore[attr-defined]
    assert type(types["Price"]) is Numeric
    assert (types["Price"].precision, types["Price"].scale) == (10, 2)  # type: ignore[attr-defined]
    assert type(types["CreatedAt"]) is DateTime
    assert types["CreatedAt"].timezone is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", ["Notes", {"from": "Notes"}], ids=["copy", "from"])
def test_untyped_column_becomes_text(spec: object) -> None:
    s = stream(columns={"id": "CustomerId", "notes": spec})

    assert type(types_of(s, customer_table())["notes"]) is Text


def test_transform_without_a_known_type_keeps_the_source_type() -> None:
    s = stream(
        columns={
            "id": "CustomerId",
            "p": {"from": "Price", "transform": "null_if", "args": {"value": "0"}},
        }
    )

    assert type(types_of(s, customer_table())["p"]) is Numeric


def test_target_columns_follow_the_mapping_order_and_names() -> None:
    s = stream(columns={"z": {"value": 1}, "id": "CustomerId", "mail": "Email"})

    assert [name for name, _, _ in target_columns(s, customer_table())] == ["z", "id", "mail"]


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

    binding = bind_stream(spec, "customers", customer_table())

    assert binding.name == "customers"
    assert binding.key == ["CustomerId"] and binding.key_width == 1
    assert binding.source.columns == ["CustomerId", "Email"]
    assert (binding.target_key, binding.identity_key) == (["customer_id"], True)
    assert list(binding.mapper.target_columns) == ["email", "customer_id"]
