"""Argument checks shared by optimizers, schedules and configs.

A check is a callable ``check(key, value) -> value`` that returns the value in
canonical form (a float, an int, a tuple) or raises :class:`ConfigError` naming
the key, the value and what is allowed. ``str(check)`` says what it accepts, for
listings and messages.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from jaxsched._errors import ConfigError

Check = Callable[[str, Any], Any]


def shown(value: Any, limit: int = 60) -> str:
  """``repr(value)`` cut to ``limit`` characters, for messages (a 400-digit integer, a huge list)."""
  try:
    text = repr(value)
  except (RecursionError, ValueError):  # a self-referencing list; an int beyond str()'s digit limit
    text = f'<{type(value).__name__}>'
  return text if len(text) <= limit else f'{text[: limit - 20]}...{text[-12:]} ({len(text)} characters)'


def _bad(key: str, value: Any, allowed: object) -> ConfigError:
  return ConfigError(f'{key}={shown(value)} is not allowed: expected {allowed}.')


def _num(x: float | int) -> str:
  return f'{x:g}' if isinstance(x, float) else str(x)


def _interval(lo, hi, lo_open, hi_open) -> str:
  """The range in words: '', ' >= 0', ' in [0, 1)'."""
  if lo is None and hi is None:
    return ''
  if hi is None:
    return f' {">" if lo_open else ">="} {_num(lo)}'
  if lo is None:
    return f' {"<" if hi_open else "<="} {_num(hi)}'
  return f' in {"(" if lo_open else "["}{_num(lo)}, {_num(hi)}{")" if hi_open else "]"}'


def _in_range(x, lo, hi, lo_open, hi_open) -> bool:
  if lo is not None and (x < lo or (lo_open and x == lo)):
    return False
  if hi is not None and (x > hi or (hi_open and x == hi)):
    return False
  return True


@dataclasses.dataclass(frozen=True)
class Real:
  """A finite real number in an interval. Numeric strings ("1e-8") are read as
  numbers, since YAML 1.1 loads ``1e-8`` (no dot) as a string."""

  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  finite: bool = True

  def __call__(self, key: str, value: Any) -> float:
    if isinstance(value, str):
      try:
        value = float(value)
      except ValueError:
        raise _bad(key, value, self) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      if not _is_numeric_scalar(value):
        raise _bad(key, value, self)
    try:
      x = float(value)
    except OverflowError:  # an int beyond any float, e.g. 10**400
      raise _bad(key, value, self) from None
    if (
      math.isnan(x) or (self.finite and math.isinf(x)) or not _in_range(x, self.lo, self.hi, self.lo_open, self.hi_open)
    ):
      raise _bad(key, value, self)
    return x

  def __str__(self) -> str:
    what = 'a finite real number' if self.finite else 'a real number (inf allowed, not NaN)'
    return what + _interval(self.lo, self.hi, self.lo_open, self.hi_open)


@dataclasses.dataclass(frozen=True)
class Integer:
  """An integer in an interval (a float with an integral value is accepted)."""

  lo: int | None = None
  hi: int | None = None

  def __call__(self, key: str, value: Any) -> int:
    if isinstance(value, str):
      try:
        value = float(value) if any(c in value for c in '.eE') else int(value)
      except ValueError:
        raise _bad(key, value, self) from None
    if isinstance(value, bool) or not (
      isinstance(value, int) or (isinstance(value, float) and value.is_integer()) or _is_numeric_scalar(value)
    ):
      raise _bad(key, value, self)
    if isinstance(value, float) or _is_numeric_scalar(value):
      if not float(value).is_integer():
        raise _bad(key, value, self)
    n = int(value)
    if not _in_range(n, self.lo, self.hi, False, False):
      raise _bad(key, value, self)
    return n

  def __str__(self) -> str:
    return 'an integer' + _interval(self.lo, self.hi, False, False)


@dataclasses.dataclass(frozen=True)
class Boolean:
  """True or False (YAML's true/false)."""

  def __call__(self, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
      raise _bad(key, value, self)
    return value

  def __str__(self) -> str:
    return 'true or false'


@dataclasses.dataclass(frozen=True)
class Text:
  """A non-empty string."""

  def __call__(self, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
      raise _bad(key, value, self)
    return value

  def __str__(self) -> str:
    return 'a non-empty string'


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of a fixed set of strings."""

  options: tuple[str, ...]

  def __call__(self, key: str, value: Any) -> str:
    if value not in self.options:
      from jaxsched._errors import nearest

      guess = nearest(str(value), self.options) if isinstance(value, str) else None
      hint = f' Did you mean {guess!r}?' if guess is not None else ''
      raise ConfigError(f'{key}={shown(value)} is not allowed: expected {self}.{hint}')
    return value

  def __str__(self) -> str:
    return 'one of ' + ', '.join(repr(o) for o in self.options)


@dataclasses.dataclass(frozen=True)
class Optional:
  """None, or what ``check`` accepts."""

  check: Check

  def __call__(self, key: str, value: Any) -> Any:
    return None if value is None else self.check(key, value)

  def __str__(self) -> str:
    return f'null or {self.check}'


@dataclasses.dataclass(frozen=True)
class Sequence:
  """A list or tuple of ``length`` items (any length if None), each checked."""

  check: Check
  length: int | None = None

  def __call__(self, key: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
      raise _bad(key, value, self)
    items = tuple(value)
    if self.length is not None and len(items) != self.length:
      raise _bad(key, value, self)
    return tuple(self.check(f'{key}[{i}]', v) for i, v in enumerate(items))

  def __str__(self) -> str:
    n = f'{self.length} ' if self.length is not None else ''
    return f'a list of {n}items, each {self.check}'  # every check in this module has a __str__


@dataclasses.dataclass(frozen=True)
class Schedulable:
  """What ``check`` accepts, or a schedule: a callable of the update count."""

  check: Check

  def __call__(self, key: str, value: Any) -> Any:
    return value if callable(value) else self.check(key, value)

  def __str__(self) -> str:
    return f'{self.check}, or a schedule (a callable of the step count)'


def _is_numeric_scalar(value: Any) -> bool:
  """numpy/JAX scalars (0-d arrays of a real dtype), but not bools."""
  shape = getattr(value, 'shape', None)
  dtype = getattr(value, 'dtype', None)
  return shape == () and dtype is not None and getattr(dtype, 'kind', '') in 'iuf'


def representable_count(key: str, value: Any) -> None:
  """ConfigError for an integer (or a list of them) that JAX's counts cannot hold:
  beyond int32 with jax_enable_x64 off, beyond int64 with it on."""
  import jax
  import numpy as np

  items = value if isinstance(value, (list, tuple)) else [value]
  limit = np.iinfo(np.int64 if jax.config.read('jax_enable_x64') else np.int32).max
  for v in items:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit:
      hint = ' (enable jax_enable_x64 for int64 counts)' if limit < np.iinfo(np.int64).max else ''
      raise ConfigError(f'{key}={v} does not fit in the step counter: |value| <= {limit}{hint}.')


COUNT_MAX = 2**31 - 1  # jaxsched's step and batch counters are int32 unless jax_enable_x64 is on
COUNT = Integer(1, COUNT_MAX)  # a number of batches or steps: accumulate_grad_batches, frequency, batches_per_epoch
PROBABILITY = Real(0.0, 1.0, hi_open=True)  # betas, alpha, rho, momentum-like decays
NON_NEGATIVE = Real(0.0)
POSITIVE = Real(0.0, lo_open=True)
