"""Optax's own optimizer aliases as "optax.<alias>" IDs, with Optax's keywords."""

from __future__ import annotations

import inspect
from typing import Any

import optax
from optax._src import alias as _alias

from jaxsched._errors import ConfigError, unknown
from jaxsched.optimizers import _inject

# Every public Optax optimizer alias (optax._src.alias), by its name.
ALIASES: dict[str, Any] = {
    name: getattr(optax, name)
    for name, fn in vars(_alias).items()
    if inspect.isfunction(fn) and not name.startswith('_') and fn.__module__ == _alias.__name__
    and hasattr(optax, name)
}


def build(alias: str, learning_rate: Any, kwargs: dict[str, Any]) -> optax.GradientTransformationExtraArgs:
  """``optax.<alias>(learning_rate, **kwargs)`` with its float hyperparameters injected."""
  fn = ALIASES.get(alias)
  if fn is None:
    raise unknown('Optax alias', f'optax.{alias}', [f'optax.{a}' for a in ALIASES])
  params = inspect.signature(fn).parameters
  for key in kwargs:
    if key not in params:
      raise unknown(f'keyword for optax.{alias}', key, list(params))
  args = dict(kwargs)
  if learning_rate is not None:
    if 'learning_rate' not in params:
      raise ConfigError(f'optax.{alias} takes no learning_rate.')
    args['learning_rate'] = learning_rate
  missing = [
      k for k, p in params.items()
      if p.default is inspect.Parameter.empty and k not in args
      and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
  ]
  if missing:
    raise ConfigError(f'optax.{alias} needs {", ".join(missing)}.')
  # Optax's float defaults go into the state too, as optax.inject_hyperparams puts them.
  args = {**{k: p.default for k, p in params.items() if isinstance(p.default, float)}, **args}
  try:
    return _inject.inject(fn, args)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'optax.{alias}: {e}') from None
