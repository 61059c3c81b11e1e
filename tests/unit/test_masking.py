"""What a viewer sees of a quarantined row: its columns and the reason's words, no value."""

from __future__ import annotations

import pytest

from etl_tasks.masking import mask_quarantined, mask_reason, mask_row


@pytest.mark.parametrize(
    ("reason", "masked"),
    [
        ("birth_date: not a date: '31/04/2018'", "birth_date: not a date: '***'"),
        (
            "duplicate key value violates unique constraint  Key (id)=(5) already exists.",
            "duplicate key value violates unique constraint  Key (id)=(***) already exists.",
        ),
        (
            "Key (tenant, email)=(acme, a(b)@c.com) is not present in table",
            "Key (tenant, email)=(***) is not present in table",
        ),
        (
            "null value violates not-null constraint DETAIL:  Failing row contains (5, null, Bob).",
            "null value violates not-null constraint DETAIL:  Failing row contains (***).",
        ),
        (
            'invalid input syntax for type integer: "12a"',
            'invalid input syntax for type integer: "***"',
        ),
        ("Duplicate entry 'bob@example.com' for key", "Duplicate entry '***' for key"),
        ("note: no mapping for 'a very long value cut sh...", "note: no mapping for '***'"),
        ("name: not a string: b'\\x00secret'", "name: not a string: b'***'"),
        ("name: no mapping for 'O''Brien'", "name: no mapping for '***'"),
        ("qty: not an integer: 3.5", "qty: not an integer: ***"),
        ("qty: not a boolean: -1", "qty: not a boolean: ***"),
        ("price: not a decimal: Decimal('1.005')", "price: not a decimal: ***"),
        ("day: not a date: datetime.date(2018, 4, 30)", "day: not a date: ***"),
        (
            "value too long for type character varying(10)",
            "value too long for type character varying(10)",
        ),
        ("too many bad rows", "too many bad rows"),
    ],
)
def test_a_reason_keeps_its_words_and_loses_its_values(reason: str, masked: str) -> None:
    assert mask_reason(reason) == masked


def test_a_row_keeps_its_columns_and_nulls() -> None:
    row = {"id": 5, "email": "bob@example.com", "phone": None, "tags": ["a"], "n": 0}
    assert mask_row(row) == {"id": "***", "email": "***", "phone": None, "tags": "***", "n": "***"}
    assert mask_row(None) is None


def test_a_listing_entry_is_masked_whole() -> None:
    item = {"stream": "s", "chunk_id": 1, "key": "[5]", "reason": "x: bad: 'v'", "row": {"x": "v"}}
    assert mask_quarantined(item) == {**item, "reason": "x: bad: '***'", "row": {"x": "***"}}
