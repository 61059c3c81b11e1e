"""CLI tables: ids whole on the narrowest terminal, values shown as they are."""

from __future__ import annotations

from rich.console import Console

from ops.tables import UNBOUNDED, console, table

ID = "0123456789abcdef0123456789abcdef"


def _render(width: int, *rows: tuple[object, ...]) -> str:
    out = Console(width=width, force_terminal=True, color_system=None, record=True)
    out.print(table(("id", "name", "reason"), rows))
    return out.export_text()


def test_an_id_is_never_cut_on_a_narrow_terminal() -> None:
    text = _render(40, (ID, "a rather long migration name", "a reason"), ("ab", None, "x"))
    assert ID in text


def test_cells_are_text_not_markup() -> None:
    text = _render(120, (ID, "[red]not red[/red]", "bad value [bold]x"), ("ab", None, "x"))
    assert "[red]not red[/red]" in text and "[bold]x" in text
    assert "—" in text  # None is shown as an em dash


def test_off_a_terminal_nothing_is_cut() -> None:
    # pytest captures stdout: this is not a terminal
    assert console().width == UNBOUNDED
