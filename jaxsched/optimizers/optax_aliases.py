"""Optax's own optimizer aliases as "optax.<alias>" IDs, with Optax's keywords."""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping

import optax
from optax._src import alias as _alias

from jaxsched._errors import ConfigError, unknown
from jaxsched.optimizers import _inject

# Every public Optax optimizer alias (optax._src.alias), by its name.
ALIASES: dict[str, Any] = {
  name: getattr(optax, name)
  for name, fn in vars(_alias).items()
  if inspect.isfunction(fn) and not name.startswith('_') and fn.__module__ == _alias.__name__ and hasattr(optax, name)
}


def parameters(alias: str) -> Mapping[str, inspect.Parameter]:
  fn = ALIASES.get(alias)
  if fn is None:
    raise unknown('Optax alias', f'optax.{alias}', [f'optax.{a}' for a in ALIASES])
  return inspect.signature(fn).parameters


def convert(alias: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """``kwargs`` with numbers given as strings (YAML 1.1 reads ``1e-8`` as one) read
  as floats, for every keyword of ``optax.<alias>`` whose default is not a string.

  Raises:
    ConfigError: an unknown alias or keyword.
  """
  params = parameters(alias)
  out = {}
  for key, value in kwargs.items():
    if key not in params:
      raise unknown(f'keyword for optax.{alias}', key, list(params))
    default = params[key].default
    if isinstance(value, str) and not isinstance(default, str):
      try:
        value = float(value)
      except ValueError:
        if key == 'learning_rate' or (isinstance(default, (int, float)) and not isinstance(default, bool)):
          raise ConfigError(f'optax.{alias}: {key}={value!r} is not a number.') from None
    if isinstance(value, float) and math.isnan(value):
      raise ConfigError(
        f'optax.{alias}: {key}={kwargs[key]!r} is not a number (NaN would train every parameter into NaN).'
      )
    out[key] = value
  return out


def build(alias: str, learning_rate: Any, kwargs: dict[str, Any]) -> optax.GradientTransformationExtraArgs:
  """``optax.<alias>(learning_rate, **kwargs)`` with its float hyperparameters injected;
  numbers given as strings are read as floats (:func:`convert`)."""
  params = parameters(alias)
  if learning_rate is not None and 'learning_rate' not in params:
    raise ConfigError(f'optax.{alias} takes no learning_rate.')
  args = convert(alias, {**kwargs, **({} if learning_rate is None else {'learning_rate': learning_rate})})
  fn = ALIASES[alias]
  missing = [
    k
    for k, p in params.items()
    if p.default is inspect.Parameter.empty and k not in args and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
  ]
  if missing:
    raise ConfigError(f'optax.{alias} needs {", ".join(missing)}.')
  # Optax's float defaults go into the state too, as optax.inject_hyperparams puts them.
  args = {**{k: p.default for k, p in params.items() if isinstance(p.default, float)}, **args}
  try:
    return _inject.inject(fn, args)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'optax.{alias}: {e}') from None
