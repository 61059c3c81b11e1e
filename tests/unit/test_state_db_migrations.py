"""The state DB's schema changes expand-then-contract (DESIGN.md, invariant 7).

During a rolling deploy versions N and N+1 run side by side on one state DB, and
the schema is upgraded before N+1 starts. So a release's migration may only add
(tables, nullable columns, indexes): everything version N reads or writes must
still be there, under the same name, accepting what N writes. Removing,
renaming or tightening waits for a later release, in a script whose docstring
says ``Phase: contract``, once no running version uses the old shape.

The checker reads each script with ``ast`` (nothing is imported or run) and
looks at everything but ``downgrade()``.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from etl_tasks.state.db import MIGRATIONS_DIR, alembic_config

VERSIONS = MIGRATIONS_DIR / "versions"
PHASE = re.compile(r"^Phase:\s*(\S+)\s*$", re.MULTILINE)
PHASES = ("expand", "contract")

# Operations that break the running version, allowed only in a contract script.
ALWAYS_BREAKING = {"drop_column", "drop_table", "drop_constraint", "rename_table"}
# Raw SQL that does the same behind op.execute().
BREAKING_SQL = re.compile(
    r"\b(DROP\s+(TABLE|COLUMN|CONSTRAINT)|RENAME\b|SET\s+NOT\s+NULL)", re.IGNORECASE
)


# --- the checker -----------------------------------------------------------------------------


@dataclass
class Script:
    """What the checker needs from one migration script."""

    path: Path
    phase: str | None
    revision: str | None
    down_revision: object
    problems: list[str] = field(default_factory=list)


def _constant(node: ast.expr | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _module_values(tree: ast.Module) -> dict[str, object]:
    """Top-level ``name = constant`` and ``name: type = constant`` assignments."""
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values[node.target.id] = _constant(node.value)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = _constant(node.value)
    return values


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


class _Finder(ast.NodeVisitor):
    """Breaking operations on ``op`` and on any name bound by ``with ... as X``."""

    def __init__(self) -> None:
        self.receivers: dict[str, str | None] = {"op": None}  # name -> its batch's table
        self.new_tables: set[str] = set()  # created here: nothing running uses them yet
        self.new_columns: set[tuple[str | None, str]] = set()
        self.found: list[tuple[int, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if not node.name.startswith("downgrade"):  # a downgrade may drop what it added
            self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            if isinstance(item.optional_vars, ast.Name):
                expr = item.context_expr
                table = (
                    _constant(expr.args[0]) if isinstance(expr, ast.Call) and expr.args else None
                )
                self.receivers[item.optional_vars.id] = table if isinstance(table, str) else None
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.receivers
        ):
            self._check(func.value.id, func.attr, node)
        self.generic_visit(node)

    def _table(self, receiver: str, call: ast.Call) -> str | None:
        """The table a call works on: its first argument on ``op``, else its batch's table."""
        if receiver != "op":
            return self.receivers[receiver]
        name = _constant(call.args[0]) if call.args else None
        return name if isinstance(name, str) else None

    def _check(self, receiver: str, method: str, call: ast.Call) -> None:
        where = f"{receiver}.{method}"
        if method == "create_table" and (table := self._table(receiver, call)):
            self.new_tables.add(table)
        elif method == "add_column":
            self._added_column(receiver, where, call)
        elif method in ALWAYS_BREAKING:
            self.found.append((call.lineno, where))
        elif method == "alter_column":
            self._altered_column(receiver, where, call)
        elif method == "execute" and call.args:
            sql = _constant(call.args[0])
            if isinstance(sql, str) and (m := BREAKING_SQL.search(sql)):
                self.found.append((call.lineno, f"{where}({m.group(0)!r})"))

    def _added_column(self, receiver: str, where: str, call: ast.Call) -> None:
        column = call.args[-1] if call.args else None
        if not isinstance(column, ast.Call) or not column.args:
            return
        name = _constant(column.args[0])
        if isinstance(name, str):
            self.new_columns.add((self._table(receiver, call), name))
        # Version N inserts rows without the new column: it needs a default or NULL.
        if _is_false(_keyword(column, "nullable")) and _keyword(column, "server_default") is None:
            self.found.append((call.lineno, f"{where}(nullable=False without server_default)"))

    def _altered_column(self, receiver: str, where: str, call: ast.Call) -> None:
        if _keyword(call, "new_column_name") is not None:
            self.found.append((call.lineno, f"{where}(new_column_name=...)"))
        if _is_false(_keyword(call, "nullable")) and not self._is_new(receiver, call):
            self.found.append((call.lineno, f"{where}(nullable=False)"))

    def _is_new(self, receiver: str, call: ast.Call) -> bool:
        """A column this script created (its table, or the column itself), known by name."""
        table = self._table(receiver, call)
        names = call.args[1:] if receiver == "op" else call.args[:1]
        column = _constant(names[0]) if names else None
        return table in self.new_tables or (table, column) in self.new_columns


def read_script(path: Path) -> Script:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstring = ast.get_docstring(tree) or ""
    phases = PHASE.findall(docstring)
    values = _module_values(tree)
    revision = values.get("revision")
    script = Script(
        path=path,
        phase=phases[0] if len(phases) == 1 else None,
        revision=revision if isinstance(revision, str) else None,
        down_revision=values.get("down_revision"),
    )
    if len(phases) != 1 or phases[0] not in PHASES:
        script.problems.append(
            f"{path.name}: the docstring must say exactly one of 'Phase: expand' or "
            f"'Phase: contract' (found {phases or 'none'})"
        )
    if script.revision is None:
        script.problems.append(f"{path.name}: no string `revision`")
    if script.phase != "contract":
        finder = _Finder()
        finder.visit(tree)
        script.problems += [
            f"{path.name}:{line}: {what} breaks the running version; "
            "it belongs in a later 'Phase: contract' script"
            for line, what in finder.found
        ]
    return script


def check_chain(scripts: list[Script]) -> list[str]:
    """One root, no merges, no branches, nothing dangling: a single line to one head."""
    problems: list[str] = []
    revisions = [s.revision for s in scripts if s.revision is not None]
    if len(revisions) != len(set(revisions)):
        problems.append(f"revision ids repeat: {sorted(revisions)}")
    children: dict[object, list[str]] = {}
    for s in scripts:
        down = s.down_revision
        if down is not None and not isinstance(down, str):
            problems.append(f"{s.path.name}: down_revision {down!r} merges branches")
            continue
        if down is not None and down not in revisions:
            problems.append(f"{s.path.name}: down_revision {down!r} is no script here")
        children.setdefault(down, []).append(s.path.name)
    for parent, names in sorted(children.items(), key=lambda kv: str(kv[0])):
        if len(names) > 1:
            problems.append(f"{sorted(names)} all revise {parent!r}: the chain forks")
    if scripts and None not in children:
        problems.append("no script has down_revision None: the chain has no start")
    return problems


def check_migrations(folder: Path) -> list[str]:
    """Every rule, for every script in ``folder``; an empty list when all hold."""
    scripts = [read_script(p) for p in sorted(folder.glob("*.py"))]
    problems = [p for s in scripts for p in s.problems]
    return problems + check_chain(scripts)


# --- the shipped scripts -----------------------------------------------------------------------


def shipped() -> list[Path]:
    return sorted(VERSIONS.glob("*.py"))


def test_there_are_scripts_to_check() -> None:
    assert shipped(), VERSIONS


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.name)
def test_each_script_states_its_phase_and_breaks_nothing_outside_contract(path: Path) -> None:
    assert read_script(path).problems == []


def test_shipped_migrations_follow_expand_then_contract() -> None:
    assert check_migrations(VERSIONS) == []


def test_alembic_sees_one_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(scripts.get_heads()) == 1, scripts.get_heads()
    assert len(list(scripts.walk_revisions())) == len(shipped())


def test_new_scripts_start_as_expand() -> None:
    # `alembic revision` writes from this template: a new script is expand until its
    # author decides otherwise.
    assert re.search(r"^Phase: expand$", (MIGRATIONS_DIR / "script.py.mako").read_text(), re.M)


# --- the checker catches what it must ------------------------------------------------------------


def write(folder: Path, revision: str, down: str | None, body: str, phase: str = "expand") -> Path:
    phase_line = f"Phase: {phase}\n" if phase else ""
    path = folder / f"{revision}_script.py"
    path.write_text(
        f'"""a change\n\nRevision ID: {revision}\n{phase_line}"""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {revision!r}\ndown_revision = {down!r}\n\n\n"
        f"def upgrade() -> None:\n{textwrap.indent(textwrap.dedent(body), '    ')}\n\n"
        "def downgrade() -> None:\n    op.drop_table('things')\n"
    )
    return path


def one_problem(folder: Path, expected: str) -> None:
    problems = check_migrations(folder)
    assert len(problems) == 1, problems
    assert expected in problems[0], problems


def test_a_clean_expand_passes_and_its_downgrade_may_drop(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a1",
        None,
        """
        op.create_table("things", sa.Column("id", sa.Integer(), nullable=False))
        op.alter_column("things", "id", nullable=False)
        op.add_column("leases", sa.Column("note", sa.Text(), nullable=True))
        op.add_column("leases", sa.Column("n", sa.Integer(), nullable=False, server_default="0"))
        with op.batch_alter_table("leases") as batch_op:
            batch_op.create_index("ix_note", ["note"])
        op.execute("UPDATE leases SET note = ''")
        """,
    )
    assert check_migrations(tmp_path) == []


def test_drop_column_in_an_expand_script(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, 'op.drop_column("chunks", "rows")')
    one_problem(tmp_path, "op.drop_column breaks the running version")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('op.drop_table("events")', "op.drop_table"),
        ('op.drop_constraint("uq_x", "chunks")', "op.drop_constraint"),
        ('op.rename_table("events", "journal")', "op.rename_table"),
        ('op.alter_column("chunks", "rows", new_column_name="n")', "new_column_name"),
        ('op.alter_column("chunks", "rows", nullable=False)', "nullable=False"),
        ('op.add_column("chunks", sa.Column("x", sa.Integer(), nullable=False))', "add_column"),
        ('op.execute("ALTER TABLE chunks DROP COLUMN rows")', "op.execute"),
    ],
)
def test_each_breaking_op_in_an_expand_script(tmp_path: Path, body: str, expected: str) -> None:
    write(tmp_path, "a1", None, body)
    one_problem(tmp_path, expected)


def test_rename_and_drop_inside_a_batch_block(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a1",
        None,
        """
        with op.batch_alter_table("chunks", schema=None) as b:
            b.alter_column("rows", new_column_name="row_count")
            if True:
                b.drop_column("worker")
        """,
    )
    problems = check_migrations(tmp_path)
    assert len(problems) == 2, problems
    assert "b.alter_column(new_column_name=...)" in problems[0]
    assert "b.drop_column" in problems[1]


def test_a_missing_phase_line(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, 'op.create_table("things")', phase="")
    one_problem(tmp_path, "must say exactly one of 'Phase: expand' or 'Phase: contract'")


def test_an_unknown_phase(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, 'op.create_table("things")', phase="migrate")
    one_problem(tmp_path, "found ['migrate']")


def test_a_drop_in_a_contract_script_is_allowed(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, 'op.add_column("chunks", sa.Column("n", sa.Integer()))')
    write(
        tmp_path,
        "a2",
        "a1",
        """
        op.drop_column("chunks", "rows")
        with op.batch_alter_table("chunks") as batch_op:
            batch_op.alter_column("n", new_column_name="rows", nullable=False)
        """,
        phase="contract",
    )
    assert check_migrations(tmp_path) == []


def test_a_forked_chain(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, "pass")
    write(tmp_path, "a2", "a1", "pass")
    write(tmp_path, "a3", "a1", "pass")
    one_problem(tmp_path, "the chain forks")


def test_a_merge_and_a_dangling_parent(tmp_path: Path) -> None:
    write(tmp_path, "a1", None, "pass")
    write(tmp_path, "a2", "a1", "pass")
    write(tmp_path, "a3", "zz", "pass")
    (tmp_path / "a4_script.py").write_text(
        '"""merge\n\nPhase: expand\n"""\n\nrevision = "a4"\ndown_revision = ("a2", "a3")\n'
    )
    problems = check_migrations(tmp_path)
    assert any("'zz' is no script here" in p for p in problems), problems
    assert any("merges branches" in p for p in problems), problems
