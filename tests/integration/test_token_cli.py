"""``baton token create|list|revoke`` against a state DB of the test's own (in process)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from etl_tasks.tokens import authenticate
from ops.cli import main

ROW_FIELDS = {"id", "name", "role", "created_at", "revoked_at"}


class TokenCli:
    def __init__(self, settings: Settings) -> None:
        self.runner = CliRunner(env={"BATON_DATABASE_URL": settings.database_url})
        self.db = StateDB(settings.database_url)

    def run(self, *args: str) -> Result:
        return self.runner.invoke(main, ["token", *args], catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)


@pytest.fixture
def cli(make_settings: Callable[..., Settings]) -> TokenCli:
    return TokenCli(make_settings())


def test_create_json_shows_the_token_once_and_list_never_does(cli: TokenCli) -> None:
    # Given two tokens made with --json
    alice = cli.json("create", "--name", "alice", "--role", "operator")
    bob = cli.json("create", "--name", "bob", "--role", "viewer")
    # Then each answer is the token's row plus the token itself, which authenticates
    assert set(alice) == ROW_FIELDS | {"token"}
    assert alice["name"] == "alice" and alice["role"] == "operator"
    assert alice["revoked_at"] is None and alice["token"].startswith("bt_")
    principal = authenticate(cli.db, alice["token"])
    assert principal is not None and principal.token_id == alice["id"]
    # And the list shows both rows, never a token or its hash
    listed = cli.json("list")
    assert listed == {"items": [_row(alice), _row(bob)]}
    text = cli.run("list").output
    assert "alice" in text and "bob" in text
    assert alice["token"] not in text and alice["token"] not in json.dumps(listed)


def test_revoke_by_name_or_id(cli: TokenCli) -> None:
    # Given two live tokens
    alice = cli.json("create", "--name", "alice", "--role", "operator")
    bob = cli.json("create", "--name", "bob", "--role", "admin")
    # When one is revoked by name and the other by id
    by_name = cli.json("revoke", "alice")
    by_id = cli.run("revoke", str(bob["id"]))
    # Then both are revoked, shown as such, and no longer authenticate
    assert by_name["id"] == alice["id"] and by_name["revoked_at"] is not None
    assert by_id.exit_code == 0 and f"token {bob['id']} (bob) revoked" in by_id.output
    assert all(t["revoked_at"] for t in cli.json("list")["items"])
    assert authenticate(cli.db, alice["token"]) is None
    assert authenticate(cli.db, bob["token"]) is None
    # And revoking again changes nothing
    assert cli.json("revoke", str(alice["id"])) == by_name


def test_revoke_refuses_an_unknown_or_ambiguous_token(cli: TokenCli) -> None:
    first = cli.json("create", "--name", "ci", "--role", "viewer")
    second = cli.json("create", "--name", "ci", "--role", "viewer")
    for args, message in (
        (["nobody"], "no live token named 'nobody'"),
        (["999"], "no live token named '999'"),
        (["ci"], "give an id"),
    ):
        result = cli.run("revoke", *args)
        assert result.exit_code == 1 and message in result.output, result.output
    assert [t["revoked_at"] for t in cli.json("list")["items"]] == [None, None]
    # an id settles it
    assert cli.json("revoke", str(second["id"]))["revoked_at"] is not None
    assert cli.json("revoke", "ci")["id"] == first["id"]


def test_create_refuses_a_name_too_long(cli: TokenCli) -> None:
    result = cli.run("create", "--name", "n" * 201, "--role", "viewer")
    assert result.exit_code == 1 and "1 to 200 characters" in result.output
    assert cli.json("list") == {"items": []}


def _row(created: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in created.items() if k != "token"}
