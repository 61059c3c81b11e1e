"""A stored spec stays readable by the version before this one (DESIGN.md, invariant 7)."""

from __future__ import annotations

from etl_tasks.spec import MigrationSpec, parse_spec
from tests.data import items_spec


def test_advance_sequences_is_stored_only_when_it_is_turned_off() -> None:
    # The previous version refuses unknown fields: a default spec must not carry it
    spec = items_spec("sqlite:////data/legacy.db", "sqlite:////data/cloud.db")
    stored = parse_spec(spec).to_stored()
    assert "advance_sequences" not in stored["streams"][0]
    assert MigrationSpec.model_validate(stored).streams[0].advance_sequences is True
    spec["streams"][0]["advance_sequences"] = False
    stored = parse_spec(spec).to_stored()
    assert stored["streams"][0]["advance_sequences"] is False
    assert MigrationSpec.model_validate(stored).streams[0].advance_sequences is False
