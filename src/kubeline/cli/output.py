"""``-o table|wide|json|yaml`` for every listing and status command, in one place.

kubectl and Argo users pipe listings into ``jq`` and ``yq`` and read tables on narrow terminals.
So: JSON and YAML are the API's shapes (the same objects ``GET /api/v1/...`` answers, whether the
command read a server or the local database) written straight to stdout, never through Rich's
80-column wrapping; a table never truncates an id (the other columns fold first, and on a
terminal too narrow even for the ids the line is left to the terminal to wrap); piped, a table is
as wide as its content. Log lines are one format everywhere (``lines.display``), written and
flushed one by one so ``kubeline logs -f | grep`` sees each line when it happens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kubeline.logs import lines


class Format(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


Option = Annotated[Format, typer.Option(
    "--output", "-o", case_sensitive=False,
    help="table, wide (more columns), json or yaml (the API's objects, for jq/yq).")]
Cell = str | Text
_SHORT = 24  # a non-key column up to this wide keeps its width while flex columns fold


@dataclasses.dataclass(frozen=True, kw_only=True)
class Column:
    """One table column: ``key`` columns (ids, names) are never truncated nor wrapped; ``flex``
    columns (errors, free text) fold first, then the others."""

    header: str
    value: Callable[[Any], Cell]
    key: bool = False
    flex: bool = False
    wide: bool = False  # only with ``-o wide``


def console() -> Console:
    """stdout as it is now (CliRunner and pipes replace ``sys.stdout``)."""
    return Console(file=sys.stdout, highlight=False)


def plain(value: Any) -> Any:
    """JSON-able data of a pydantic model, dataclass or plain value."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return json.loads(json.dumps(value, default=str))


def write_data(data: Any, *, fmt: Format) -> None:
    """``data`` as JSON (indented) or YAML on stdout, unwrapped."""
    if fmt is Format.YAML:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=2**31 - 1)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def table(items: Iterable[Any], *, columns: Sequence[Column], fmt: Format = Format.TABLE,
          title: str | None = None) -> Table:
    shown = [c for c in columns if fmt is Format.WIDE or not c.wide]
    rows = [[c.value(item) for c in shown] for item in items]
    result = Table(title=title, title_justify="left")
    for index, column in enumerate(shown):
        longest = max([len(cell_text(row[index])) for row in rows] + [len(column.header)])
        if column.key:
            result.add_column(column.header, no_wrap=True, min_width=longest)
        elif column.flex:
            result.add_column(column.header, overflow="fold")
        else:
            result.add_column(column.header, overflow="fold", min_width=min(longest, _SHORT))
    for row in rows:
        result.add_row(*row)
    return result


def print_table(rendered: Table, *, to: Console | None = None) -> None:
    """On a terminal: its width, unless the key columns alone need more (then the terminal wraps
    the line; an id is never cut). Piped: as wide as the content, so no cell is folded."""
    target = to or console()
    width = fit(rendered, width=target.width) if target.is_terminal else 100_000
    saved, target.width = target.width, width  # print(width=) can only narrow
    try:
        target.print(rendered, crop=False)
    finally:
        target.width = saved


def fit(rendered: Table, *, width: int) -> int:
    """The width to draw ``rendered`` at on a ``width`` terminal: wider only when its key columns
    need it. Short columns give up their kept width when there is no room for all of them."""
    borders = 3 * len(rendered.columns) + 1
    needed = sum(c.min_width or 1 for c in rendered.columns if c.no_wrap) + len(rendered.columns) + borders
    if max(width, needed) < sum(c.min_width or 1 for c in rendered.columns) + borders:
        for column in rendered.columns:  # not room for every short column whole: fold them too
            if not column.no_wrap:
                column.min_width = None
    return max(width, needed)


def emit(items: Iterable[Any], *, columns: Sequence[Column], fmt: Format, title: str | None = None) -> None:
    """A listing: a table (``table``/``wide``), or a JSON/YAML list of the items' data."""
    found = list(items)
    if fmt in (Format.JSON, Format.YAML):
        write_data([plain(item) for item in found], fmt=fmt)
    else:
        print_table(table(found, columns=columns, fmt=fmt, title=title))


def emit_one(item: Any, *, fmt: Format, show: Callable[[Console, Format], None]) -> None:
    """A single object (``status``): its data as JSON/YAML, or ``show`` draws it for people."""
    if fmt in (Format.JSON, Format.YAML):
        write_data(plain(item), fmt=fmt)
    else:
        show(console(), fmt)


def log_line(*, at: dt.datetime, stage_id: str, attempt: int, stream: str, text: str) -> None:
    """One log line in the shared format, flushed at once (line-buffered even when piped)."""
    sys.stdout.write(lines.display(at=at, stage_id=stage_id, attempt=attempt, stream=stream, text=text) + "\n")
    sys.stdout.flush()


def cell_text(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell
