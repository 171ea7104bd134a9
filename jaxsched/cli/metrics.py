"""Reading a per-epoch metrics file (``--metrics``, CSV or JSON) for ReduceLROnPlateau.

Touches the one file it is given; any problem with it is a :class:`CliError`
naming the file and what was found.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Mapping

from jaxsched.cli.output import CliError


def read_metrics(path: str, monitor: str) -> list[float]:
  """Per-epoch values of ``monitor`` from a CSV or JSON file.

  JSON: a list of numbers, a list of {metric: value} records (one per epoch),
  or {metric: [values]}. CSV: a header row naming ``monitor`` (rows without a
  value are skipped; with an ``epoch`` column the last value of each epoch is
  used, as Lightning's CSVLogger writes several rows per epoch), or a single
  column of numbers without a header.

  Raises:
    CliError: the file cannot be read or is not UTF-8 text, is malformed, has
      no values of ``monitor`` (a header without a ``monitor`` column names the
      columns it has), or holds something that is not a number.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise CliError(f'cannot read metrics file {path!r}: {e.strerror or e}') from None
  except UnicodeDecodeError as e:
    raise CliError(
      f'cannot read metrics file {path!r}: not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start})'
    ) from None
  if path.lower().endswith('.json') or text.lstrip()[:1] in ('[', '{'):
    return _from_json(text, path, monitor)
  return _from_csv(text, path, monitor)


def _from_json(text: str, path: str, monitor: str) -> list[float]:
  try:
    data = json.loads(text)
  except (json.JSONDecodeError, RecursionError) as e:
    raise CliError(f'{path}: malformed JSON: {e}') from None
  if isinstance(data, Mapping):
    if monitor not in data:
      raise CliError(
        f"{path} has no {monitor!r} (the config's scheduler_configs.monitor); it has: "
        f'{", ".join(map(str, data)) or "nothing"}.'
      )
    data = data[monitor]
  if not isinstance(data, list):
    raise CliError(f'{path}: expected a list of per-epoch values of {monitor!r}.')
  values = []
  for i, item in enumerate(data):
    if isinstance(item, Mapping):
      if monitor not in item:
        continue
      item = item[monitor]
    values.append(_number(item, f'{path}: entry {i}'))
  return _nonempty(values, path, monitor)


def _from_csv(text: str, path: str, monitor: str) -> list[float]:
  try:
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
  except csv.Error as e:
    raise CliError(f'{path}: malformed CSV: {e}') from None
  if not rows:
    raise CliError(f'{path} is empty.')
  header = [c.strip() for c in rows[0]]
  if all(_is_number(c) for c in header if c):
    if max(len(r) for r in rows) != 1:
      raise CliError(f'{path}: a CSV without a header must have one column of per-epoch values.')
    return _nonempty([_number(r[0], f'{path}: line {i + 1}') for i, r in enumerate(rows)], path, monitor)
  if monitor not in header:
    raise CliError(
      f"{path} has no column {monitor!r} (the config's scheduler_configs.monitor); columns: {', '.join(header)}."
    )
  col = header.index(monitor)
  ecol = header.index('epoch') if 'epoch' in header else None
  by_epoch: dict[int, float] = {}
  values = []
  for i, r in enumerate(rows[1:], start=2):
    cell = r[col].strip() if col < len(r) else ''
    if not cell:
      continue
    v = _number(cell, f'{path}: line {i}')
    if ecol is not None and ecol < len(r) and r[ecol].strip():
      by_epoch[_epoch(r[ecol], f'{path}: line {i}')] = v
    else:
      values.append(v)
  if by_epoch:
    values = [by_epoch[e] for e in sorted(by_epoch)]
  return _nonempty(values, path, monitor)


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _number(x: Any, where: str) -> float:
  try:
    if isinstance(x, bool):
      raise TypeError
    return float(x)
  except (TypeError, ValueError, OverflowError):
    raise CliError(f'{where}: {x!r} is not a number.') from None


def _epoch(cell: str, where: str) -> int:
  value = _number(cell.strip(), where)
  if not math.isfinite(value) or value != int(value):
    raise CliError(f'{where}: epoch {cell.strip()!r} is not a whole number.')
  return int(value)


def _nonempty(values: list[float], path: str, monitor: str) -> list[float]:
  if not values:
    raise CliError(f'{path} holds no values of {monitor!r}.')
  return values
