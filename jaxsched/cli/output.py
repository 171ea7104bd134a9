"""What the ``jaxsched`` command writes: tables on stdout; notes, warnings and its one error line on stderr."""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table


class CliError(Exception):
  """A user-facing error: printed as one ``error: ...`` line, exit status 1."""


def _stdout_is_tty() -> bool:
  return sys.stdout.isatty() and not os.environ.get('JAXSCHED_PLAIN')


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
  """A table: rich on a terminal, aligned plain text in a pipe."""
  rows = [['' if c is None else str(c) for c in row] for row in rows]
  if _stdout_is_tty():
    table = Table(title=title, title_justify='left', show_lines=False)
    for h in headers:
      table.add_column(h, overflow='fold')
    for row in rows:
      table.add_row(*row)
    Console().print(table)
    return
  if title:
    print(title)
  widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
  line = lambda cells: '  '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
  print(line(headers))
  print(line(['-' * w for w in widths]))
  for row in rows:
    print(line(row))


def plural(n: int, what: str = 'step') -> str:
  """``'1 step'``, ``'2 steps'``, ``'3 batches'``."""
  return f'{n} {what}{("es" if what.endswith("ch") else "s") if n != 1 else ""}'


def warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def note(message: str) -> None:
  print(f'note: {message}', file=sys.stderr)


def error(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)


def fmt(x: Any) -> str:
  """A keyword's default as ``jaxsched list`` shows it."""
  if isinstance(x, float):
    return f'{x:.6g}'
  if isinstance(x, tuple):
    return '(' + ', '.join(fmt(v) for v in x) + ')'
  return repr(x) if isinstance(x, str) else str(x)
