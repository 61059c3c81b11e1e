"""Unit tests for etl_tasks.spec: every rule of ``parse_spec``, defaults, storage round-trip."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from etl_tasks.errors import FieldError, SpecError
from etl_tasks.spec import ColumnFrom, ColumnValue, Endpoint, Filter, MigrationSpec, parse_spec

# --- helpers -----------------------------------------------------------------------------


def stream(**fields: Any) -> dict[str, Any]:
    """A minimal valid stream, with ``fields`` on top."""
    return {"source_table": "Customer", "target_table": "customers", **fields}


def spec(*streams: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A minimal valid spec body (one stream unless given), with ``fields`` on top."""
    return {
        "name": "acme",
        "source": {"url": "sqlite:////data/acme.db"},
        "target": {"url_env": "CLOUD_DB_URL"},
        "streams": list(streams) or [stream()],
        **fields,
    }


def where(*filters: dict[str, Any]) -> dict[str, Any]:
    """A spec whose one stream has these filters."""
    return spec(stream(where=list(filters)))


def errors_of(data: object) -> list[FieldError]:
    """The problems ``parse_spec`` reports for ``data`` (it must refuse it)."""
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.errors, "a SpecError must carry at least one FieldError"
    return info.value.errors


def paths_of(data: object) -> set[str]:
    return {e.path for e in errors_of(data)}


def assert_refused(data: object, path: str, message_part: str) -> None:
    """``data`` is refused with a problem at exactly ``path`` whose message mentions the part."""
    errors = errors_of(data)
    at_path = [e.message for e in errors if e.path == path]
    assert at_path, f"no error at {path!r}; got {errors}"
    assert any(message_part in m for m in at_path), f"{message_part!r} not in {at_path}"


CONTRACT_EXAMPLE: dict[str, Any] = {
    "name": "acme-legacy-to-cloud",
    "source": {"url": "sqlite:////data/acme.db"},
    "target": {"url_env": "CLOUD_DB_URL"},
    "streams": [
        {
            "source_table": "Customer",
            "target_table": "customers",
            "key": "CustomerId",
            "where": [{"column": "SupportRepId", "op": "=", "value": 3}],
            "columns": {
                "customer_id": "CustomerId",
                "email": {"from": "Email", "transform": "lower"},
                "tenant_id": {"value": "acme"},
            },
            "create_target": False,
            "write": "upsert",
            "after": [],
        }
    ],
    "chunk_rows": 5000,
    "on_bad_row": "quarantine",
    "max_bad_rows": 1000,
}


# --- the contract's example and defaults --------------------------------------------------


def test_contract_example_is_accepted() -> None:
    parsed = parse_spec(copy.deepcopy(CONTRACT_EXAMPLE))

    s = parsed.streams[0]
    assert parsed.name == "acme-legacy-to-cloud"
    assert s.key_columns == ["CustomerId"]
    assert s.where == [Filter(column="SupportRepId", op="=", value=3)]
    assert s.columns == {
        "customer_id": "CustomerId",
        "email": ColumnFrom(**{"from": "Email", "transform": "lower"}),
        "tenant_id": ColumnValue(value="acme"),
    }


def test_defaults() -> None:
    parsed = parse_spec(spec())

    s = parsed.streams[0]
    assert (parsed.chunk_rows, parsed.on_bad_row, parsed.max_bad_rows) == (5000, "quarantine", 1000)
    assert s.write == "upsert"
    assert s.create_target is False
    assert s.key is None and s.key_columns is None
    assert s.where == [] and s.after == [] and s.columns is None
    assert s.name is None and s.stream_name == "customers"


def test_stream_name_defaults_to_target_table_and_name_wins() -> None:
    parsed = parse_spec(spec(stream(), stream(target_table="orders", name="legacy-orders")))

    assert [s.stream_name for s in parsed.streams] == ["customers", "legacy-orders"]
    assert parsed.stream("legacy-orders").target_table == "orders"
    with pytest.raises(KeyError):
        parsed.stream("orders")


def test_column_from_args_default_to_empty() -> None:
    parsed = parse_spec(spec(stream(columns={"x": {"from": "X"}})))

    col = parsed.streams[0].columns["x"]  # type: ignore[index]
    assert col == ColumnFrom(**{"from": "X"})
    assert isinstance(col, ColumnFrom) and col.transform is None and col.args == {}


def test_models_are_frozen() -> None:
    parsed = parse_spec(spec())

    with pytest.raises(ValueError, match="frozen"):
        parsed.chunk_rows = 1  # type: ignore[misc]


# --- the body and required fields ---------------------------------------------------------


@pytest.mark.parametrize("body", [[], "spec", 3, None, [spec()]], ids=repr)
def test_a_body_that_is_not_an_object_is_refused_at_the_root(body: object) -> None:
    assert errors_of(body) == [FieldError("", "the spec must be a JSON object")]


def test_every_missing_required_field_is_reported_at_once() -> None:
    errors = errors_of({})

    assert {e.path for e in errors} == {"name", "source", "target", "streams"}
    assert all(e.message == "Field required" for e in errors)


@pytest.mark.parametrize("field", ["name", "source", "target", "streams"])
def test_missing_required_field(field: str) -> None:
    data = spec()
    del data[field]

    assert errors_of(data) == [FieldError(field, "Field required")]


def test_empty_streams_is_refused() -> None:
    assert_refused(spec(streams=[]), "streams", "at least 1 item")


@pytest.mark.parametrize("name", ["", "x" * 201])
def test_name_length(name: str) -> None:
    assert paths_of(spec(name=name)) == {"name"}


@pytest.mark.parametrize("field", ["source_table", "target_table"])
def test_stream_tables_are_required_and_non_empty(field: str) -> None:
    missing = stream()
    del missing[field]

    expected = "Field required" if field == "target_table" else "'source_table' or 'query'"
    assert_refused(
        spec(missing), "streams/0" + ("/target_table" if field == "target_table" else ""), expected
    )
    assert_refused(spec(stream(**{field: ""})), f"streams/0/{field}", "at least 1 character")


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("SELECT 1; DROP TABLE customers", "exactly one statement"),
        ("DELETE FROM customers", "only a SELECT"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "'DELETE'"),
        ("SELECT * FROM t FOR UPDATE", "'FOR'"),
        ("SELECT pg_sleep(3600)", "'pg_sleep'"),
    ],
)
def test_a_query_is_one_select_that_changes_nothing(query: str, why: str) -> None:
    data = spec(stream(source_table=None, query=query, key="id"))
    assert_refused(data, "streams/0/query", why)


def test_a_query_needs_a_key_and_excludes_a_source_table() -> None:
    assert_refused(
        spec(stream(source_table=None, query="SELECT 1 AS id")), "streams/0", "needs a 'key'"
    )
    both = stream(query="SELECT 1 AS id", key="id")
    assert_refused(spec(both), "streams/0", "exactly one of 'source_table' or 'query'")


def test_problems_are_located_in_the_right_stream() -> None:
    data = spec(stream(), stream(target_table="b", write="merge"), stream(target_table="c", key=[]))

    assert paths_of(data) == {"streams/1/write", "streams/2/key"}


def test_a_stream_that_is_not_an_object_is_refused() -> None:
    assert paths_of(spec(streams=["Customer"])) == {"streams/0"}
    assert paths_of(spec(streams={"a": stream()})) == {"streams"}


# --- unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (spec(bogus=1), "bogus"),
        (spec(source={"url": "sqlite://", "password": "x"}), "source/password"),
        (spec(stream(bogus=1)), "streams/0/bogus"),
        (where({"column": "c", "op": "=", "value": 1, "x": 2}), "streams/0/where/0/x"),
    ],
    ids=["top", "endpoint", "stream", "filter"],
)
def test_unknown_fields_are_refused(data: dict[str, Any], path: str) -> None:
    assert_refused(data, path, "Extra inputs are not permitted")


def test_unknown_field_in_a_column_spec_is_refused_at_that_column() -> None:
    paths = paths_of(spec(stream(columns={"x": {"from": "X", "bogus": 1}})))

    assert paths, "must be refused"
    assert all(p.startswith("streams/0/columns/x") for p in paths), paths
    assert "streams/0/columns/x/bogus" in paths


# --- endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [{}, {"url": "sqlite://", "url_env": "DB"}, {"url": None, "url_env": None}],
    ids=["neither", "both", "both-null"],
)
@pytest.mark.parametrize("side", ["source", "target"])
def test_endpoint_needs_exactly_one_of_url_and_url_env(side: str, endpoint: dict[str, Any]) -> None:
    assert errors_of(spec(**{side: endpoint})) == [
        FieldError(side, "give exactly one of 'url' or 'url_env'")
    ]


def test_endpoint_that_is_not_an_object_is_refused() -> None:
    assert paths_of(spec(source="sqlite://")) == {"source"}


def test_unchecked_url_returns_a_direct_url() -> None:
    assert Endpoint(url="sqlite:///x.db").unchecked_url() == "sqlite:///x.db"


def test_unchecked_url_reads_url_env_when_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = Endpoint(url_env="BATON_TEST_SPEC_URL")
    monkeypatch.setenv("BATON_TEST_SPEC_URL", "postgresql://db/one")
    assert endpoint.unchecked_url() == "postgresql://db/one"

    monkeypatch.setenv("BATON_TEST_SPEC_URL", "postgresql://db/two")
    assert endpoint.unchecked_url() == "postgresql://db/two"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_unchecked_url_refuses_an_unset_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("BATON_TEST_SPEC_URL", raising=False)
    else:
        monkeypatch.setenv("BATON_TEST_SPEC_URL", value)

    with pytest.raises(SpecError) as info:
        Endpoint(url_env="BATON_TEST_SPEC_URL").unchecked_url()

    assert info.value.errors == [
        FieldError("url_env", "environment variable BATON_TEST_SPEC_URL is not set")
    ]


def test_url_env_is_kept_unresolved_in_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_DB_URL", "postgresql://user:secret@db/x")

    stored = parse_spec(spec()).model_dump(mode="json", by_alias=True, exclude_none=True)

    assert stored["target"] == {"url_env": "CLOUD_DB_URL"}
    assert "secret" not in repr(stored)


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flt",
    [
        {"column": "c", "op": "=", "value": 3},
        {"column": "c", "op": "!=", "value": "x"},
        {"column": "c", "op": "<", "value": 1.5},
        {"column": "c", "op": "<=", "value": "2024-01-01"},
        {"column": "c", "op": ">", "value": None},
        {"column": "c", "op": ">=", "value": True},
        {"column": "c", "op": "in", "value": [1, 2, None]},
        {"column": "c", "op": "in", "value": []},
        {"column": "c", "op": "is_null"},
        {"column": "c", "op": "is_null", "value": False},
    ],
    ids=lambda f: f"{f['op']}-{f.get('value')!r}",
)
def test_valid_filters(flt: dict[str, Any]) -> None:
    parsed = parse_spec(where(flt))

    assert parsed.streams[0].where == [Filter(**flt)]


@pytest.mark.parametrize("value", [3, "1,2", None, {"a": 1}])
def test_in_needs_a_list(value: object) -> None:
    assert errors_of(where({"column": "c", "op": "in", "value": value})) == [
        FieldError("streams/0/where/0", "'in' takes a list as its value")
    ]


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("value", [[1], {"a": 1}], ids=["list", "dict"])
def test_comparisons_need_a_single_value(op: str, value: object) -> None:
    assert errors_of(where({"column": "c", "op": op, "value": value})) == [
        FieldError("streams/0/where/0", f"'{op}' takes a single value")
    ]


@pytest.mark.parametrize("op", ["like", "==", "IN", "", None])
def test_unknown_filter_op_is_refused(op: object) -> None:
    data = where({"column": "c", "op": op, "value": 1})

    assert_refused(data, "streams/0/where/0/op", "Input should be")


def test_filter_needs_column_and_op() -> None:
    assert paths_of(where({"value": 1})) == {"streams/0/where/0/column", "streams/0/where/0/op"}


def test_second_bad_filter_is_located() -> None:
    data = where({"column": "a", "op": "=", "value": 1}, {"column": "b", "op": "in", "value": 1})

    assert paths_of(data) == {"streams/0/where/1"}


# --- column specs --------------------------------------------------------------------------


def test_every_column_spec_form_is_accepted() -> None:
    columns = {
        "id": "Id",
        "email": {"from": "Email", "transform": "lower"},
        "price": {"from": "Price", "transform": "decimal", "args": {"places": 2}},
        "raw": {"from": "Raw"},
        "tenant": {"value": "acme"},
        "n": {"value": 7},
        "nothing": {"value": None},
        "blob": {"value": {"nested": [1, 2]}},
    }

    parsed = parse_spec(spec(stream(columns=columns)))

    got = parsed.streams[0].columns
    assert got is not None
    assert got["id"] == "Id"
    assert got["email"] == ColumnFrom(**{"from": "Email", "transform": "lower"})
    assert got["price"] == ColumnFrom(
        **{"from": "Price", "transform": "decimal", "args": {"places": 2}}
    )
    assert got["raw"] == ColumnFrom(**{"from": "Raw"})
    assert got["tenant"] == ColumnValue(value="acme")
    assert got["n"] == ColumnValue(value=7)
    assert got["nothing"] == ColumnValue(value=None)
    assert got["blob"] == ColumnValue(value={"nested": [1, 2]})
    assert list(got) == list(columns), "target column order is kept"


@pytest.mark.parametrize(
    "column",
    [
        3,
        None,
        ["Id"],
        {},
        {"transform": "lower"},
        {"from": "A", "value": 1},
        {"from": "A", "args": [1]},
        {"from": 3},
    ],
    ids=["int", "null", "list", "empty", "no-from", "from-and-value", "args-list", "from-int"],
)
def test_bad_column_spec_is_refused_at_that_column(column: object) -> None:
    paths = paths_of(spec(stream(columns={"ok": "A", "bad": column})))

    assert paths, "must be refused"
    assert all(p.startswith("streams/0/columns/bad") for p in paths), paths


def test_empty_columns_is_refused() -> None:
    assert errors_of(spec(stream(columns={}))) == [
        FieldError("streams/0/columns", "give at least one column, or leave 'columns' out")
    ]


def test_a_column_named_like_a_union_tag_keeps_its_path() -> None:
    paths = paths_of(spec(stream(columns={"str": {"frm": "A"}})))

    assert all(p.startswith("streams/0/columns/str") for p in paths), paths


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "columns"),
    [
        ("CustomerId", ["CustomerId"]),
        (["a"], ["a"]),
        (["a", "b"], ["a", "b"]),
        (["b", "a"], ["b", "a"]),
    ],
)
def test_key_as_string_or_list(key: str | list[str], columns: list[str]) -> None:
    parsed = parse_spec(spec(stream(key=key)))

    assert parsed.streams[0].key_columns == columns


@pytest.mark.parametrize("key", [[], ["a", "a"], ["a", "b", "a"]], ids=["empty", "dup", "dup-3"])
def test_key_list_must_be_non_empty_without_repeats(key: list[str]) -> None:
    assert errors_of(spec(stream(key=key))) == [
        FieldError("streams/0/key", "a key list must be non-empty and without repeats")
    ]


@pytest.mark.parametrize("key", [3, [1], {"a": 1}], ids=["int", "list-of-int", "dict"])
def test_key_of_wrong_type_is_refused_at_key(key: object) -> None:
    paths = paths_of(spec(stream(key=key)))

    assert paths and paths <= {"streams/0/key", "streams/0/key/0"}


# --- stream graph --------------------------------------------------------------------------


def graph_spec(graph: dict[str, list[str]]) -> dict[str, Any]:
    """One stream per node (named by its target table), waiting for the listed streams."""
    return spec(*[stream(target_table=n, after=deps) for n, deps in graph.items()])


def test_duplicate_stream_names_are_refused_at_the_later_stream() -> None:
    data = spec(stream(), stream(source_table="Other"), stream(source_table="Third"))

    assert errors_of(data) == [
        FieldError("streams/1/target_table", "stream name 'customers' is used twice; give 'name'"),
        FieldError("streams/2/target_table", "stream name 'customers' is used twice; give 'name'"),
    ]


def test_explicit_name_clashing_with_a_target_table_is_refused() -> None:
    data = spec(stream(), stream(target_table="orders", name="customers"))

    paths = paths_of(data)

    assert len(paths) == 1 and paths <= {"streams/1/target_table", "streams/1/name"}


def test_same_target_table_under_distinct_names_is_accepted() -> None:
    parsed = parse_spec(spec(stream(), stream(source_table="Other", name="other")))

    assert [s.stream_name for s in parsed.streams] == ["customers", "other"]


def test_after_an_unknown_stream_is_refused_at_that_entry() -> None:
    data = spec(stream(after=["invoices"]))

    assert errors_of(data) == [FieldError("streams/0/after/0", "no stream named 'invoices'")]


def test_every_unknown_after_entry_is_reported() -> None:
    data = spec(stream(), stream(target_table="orders", after=["customers", "x", "y"]))

    assert paths_of(data) == {"streams/1/after/1", "streams/1/after/2"}


def test_after_refers_to_stream_names_not_target_tables() -> None:
    data = spec(stream(name="cust"), stream(target_table="orders", after=["customers"]))

    assert errors_of(data) == [FieldError("streams/1/after/0", "no stream named 'customers'")]


def test_duplicate_and_unknown_after_are_reported_together() -> None:
    data = spec(stream(), stream(source_table="Other", after=["nope"]))

    assert paths_of(data) == {"streams/1/target_table", "streams/1/after/0"}


def test_graph_is_checked_only_once_the_shape_is_valid() -> None:
    data = spec(stream(after=["nope"]), chunk_rows=0)

    assert paths_of(data) == {"chunk_rows"}


@pytest.mark.parametrize(
    ("graph", "path", "node"),
    [
        ({"a": ["a"]}, "streams/0/after", "a"),
        ({"a": ["b"], "b": ["a"]}, "streams/0/after", "a"),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "streams/0/after", "a"),
        ({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]}, "streams/1/after", "b"),
    ],
    ids=["self", "pair", "triangle", "behind-a-root"],
)
def test_cycles_are_refused_at_a_stream_in_the_cycle(
    graph: dict[str, list[str]], path: str, node: str
) -> None:
    assert errors_of(graph_spec(graph)) == [
        FieldError(path, f"streams wait for each other in a cycle through {node!r}")
    ]


def test_a_diamond_is_not_a_cycle() -> None:
    parsed = parse_spec(graph_spec({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c", "a"]}))

    assert parsed.stream("d").after == ["b", "c", "a"]


# --- numbers and enums ---------------------------------------------------------------------


def test_chunk_rows_left_out_is_known_in_every_worker() -> None:
    parsed = parse_spec(spec())
    assert (parsed.chunk_rows, parsed.chunk_rows_given) == (5000, False)
    # as every worker reads it back from the state DB
    assert parse_spec(parsed.to_stored()).chunk_rows_given is False


@pytest.mark.parametrize("rows", [1, 5000, 200_000])
def test_chunk_rows_given_is_known_in_every_worker(rows: int) -> None:
    parsed = parse_spec(spec(chunk_rows=rows))
    assert (parsed.chunk_rows, parsed.chunk_rows_given) == (rows, True)
    assert parse_spec(parsed.to_stored()).chunk_rows_given is True


@pytest.mark.parametrize("rows", [1, 5000, 1_000_000])
def test_chunk_rows_within_bounds(rows: int) -> None:
    assert parse_spec(spec(chunk_rows=rows)).chunk_rows == rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (0, "greater than or equal to 1"),
        (-5, "greater than or equal to 1"),
        (1_000_001, "less than or equal to 1000000"),
        (10.5, "valid integer"),
        ("many", "valid integer"),
    ],
)
def test_chunk_rows_out_of_bounds(rows: object, message: str) -> None:
    errors = errors_of(spec(chunk_rows=rows))

    assert [e.path for e in errors] == ["chunk_rows"]
    assert message in errors[0].message


@pytest.mark.parametrize("value", ["quarantine", "fail"])
def test_on_bad_row_values(value: str) -> None:
    assert parse_spec(spec(on_bad_row=value)).on_bad_row == value


@pytest.mark.parametrize("value", ["skip", "Fail", "", None])
def test_on_bad_row_unknown(value: object) -> None:
    assert_refused(spec(on_bad_row=value), "on_bad_row", "Input should be")


@pytest.mark.parametrize("value", [0, 1, 10**9])
def test_max_bad_rows_accepts_zero_and_more(value: int) -> None:
    assert parse_spec(spec(max_bad_rows=value)).max_bad_rows == value


def test_max_bad_rows_negative() -> None:
    assert_refused(spec(max_bad_rows=-1), "max_bad_rows", "greater than or equal to 0")


@pytest.mark.parametrize("mode", ["upsert", "insert", "skip_existing"])
def test_write_modes(mode: str) -> None:
    assert parse_spec(spec(stream(write=mode))).streams[0].write == mode


@pytest.mark.parametrize("mode", ["merge", "replace", "UPSERT", ""])
def test_unknown_write_mode(mode: str) -> None:
    assert_refused(spec(stream(write=mode)), "streams/0/write", "Input should be")


# --- storage round-trip --------------------------------------------------------------------


def stored(parsed: MigrationSpec) -> dict[str, Any]:
    """The spec as control.py stores it in the state DB."""
    return parsed.to_stored()


RICH_SPEC = spec(
    stream(
        key=["a", "b"],
        where=[
            {"column": "SupportRepId", "op": "in", "value": [3, 4]},
            {"column": "Deleted", "op": "is_null"},
        ],
        columns={
            "id": "a",
            "b": "b",
            "email": {"from": "Email", "transform": "lower"},
            "price": {"from": "P", "transform": "decimal", "args": {"places": 2}},
            "tenant": {"value": "acme"},
        },
        create_target=True,
        write="insert",
    ),
    stream(
        source_table="Invoice",
        target_table="invoices",
        name="inv",
        key="InvoiceId",
        after=["customers"],
        write="skip_existing",
    ),
    source={"url": "sqlite:////data/acme.db"},
    chunk_rows=250,
    on_bad_row="fail",
    max_bad_rows=0,
)


@pytest.mark.parametrize(
    "data", [CONTRACT_EXAMPLE, RICH_SPEC, spec()], ids=["contract", "rich", "minimal"]
)
def test_stored_spec_round_trips_unchanged(data: dict[str, Any]) -> None:
    parsed = parse_spec(copy.deepcopy(data))

    again = MigrationSpec.model_validate(stored(parsed))

    assert again == parsed
    assert stored(again) == stored(parsed)


def test_stored_spec_uses_the_from_alias() -> None:
    parsed = parse_spec(copy.deepcopy(CONTRACT_EXAMPLE))

    email = stored(parsed)["streams"][0]["columns"]["email"]

    assert email == {"from": "Email", "transform": "lower"}  # only what was written


def test_a_null_constant_column_round_trips() -> None:
    parsed = parse_spec(spec(stream(columns={"id": "Id", "gone": {"value": None}})))

    assert MigrationSpec.model_validate(stored(parsed)) == parsed


HTTP_TARGET = {
    "http": {
        "url": "https://api.example.com/v1/{table}/import",
        "auth": {"bearer_env": "CLOUD_TOKEN"},
        "rows_field": "rows",
        "batch_rows": 100,
        "max_rps": 20,
    }
}
FILE_SOURCE = {"file": {"path": "exports/", "format": "csv", "encoding": "cp1252"}}


def test_endpoint_forms_are_told_apart_by_their_key() -> None:
    parsed = parse_spec(spec(stream(), source=FILE_SOURCE, target=HTTP_TARGET))
    assert parsed.source.kind == "file" and parsed.target.kind == "http"
    assert parsed.target.http.method == "POST" and parsed.target.http.timeout_s == 10  # type: ignore[union-attr]
    assert parsed.target.http.delivery == "exactly_once"  # type: ignore[union-attr]
    # stored as written: the form's key, not a tag of Baton's
    assert parsed.to_stored()["target"] == HTTP_TARGET
    with pytest.raises(SpecError, match="no connector for http targets"):
        parsed.sql("target")


@pytest.mark.parametrize(
    ("endpoint", "path", "part"),
    [
        ({"ftp": {"host": "x"}}, "target", "{'http': {…}} for an HTTP API"),
        ({"http": {"url": "ftp://x"}}, "target/http/url", "starts with http:// or https://"),
        ({"http": {"url": "https://x", "token": "s3cret"}}, "target/http/token", "Extra"),
        (
            {"http": {"url": "https://x", "auth": {"bearer_env": "A", "basic_env": "B"}}},
            "target/http/auth",
            "exactly one of",
        ),
        ({"file": {"path": "x", "encoding": "klingon"}}, "target/file/encoding", "unknown"),
    ],
)
def test_a_bad_endpoint_form_is_refused_where_it_is_wrong(
    endpoint: dict[str, Any], path: str, part: str
) -> None:
    assert_refused(spec(stream(), target=endpoint), path, part)
