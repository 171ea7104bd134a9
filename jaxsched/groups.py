"""Parameter groups as DynVision makes them.

A parameter joins a group by its '/'-joined path (:func:`path_name`, :func:`param_labels`);
each group has its base LR (the config's times its ``lr_factor``) and its optimizer keywords
(:class:`Group`). Each group's schedule is :mod:`jaxsched.learning_rates`'.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from jaxsched._errors import ConfigError
from jaxsched.config import Config
from jaxsched.optimizers import spec_of

REGULAR, RECURRENT = 'regular', 'recurrent'


@dataclasses.dataclass(frozen=True)
class Group:
  """A parameter group: its name, its base LR (the config's times ``lr_factor``)
  and its optimizer keywords."""

  name: str
  learning_rate: float
  optimizer_kwargs: Mapping[str, Any]
  lr_factor: float = 1.0


def path_name(path: tuple) -> str:
  """A param's '/'-joined path, as DynVision's named_parameters ('layer/kernel'), without the
  trailing ``value`` attribute of a Flax NNX variable: ``nnx.state(model, nnx.Param)``'s
  ``fc/kernel/value`` is ``fc/kernel``, the name a Linen tree (and torch's layout rule) gives it."""
  if path and getattr(path[-1], 'name', None) == 'value':
    path = path[:-1]
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _has_recurrent(config: Config) -> bool:
  return config.recurrent_learning_rate_multiplier != 1.0 or RECURRENT in config.lr_parameter_groups


def labeller(config: Config) -> Callable[[str], str]:
  """The config's group of a '/'-joined parameter path: the first named lr_parameter_group that is a
  substring of it (DynVision's rule), else recurrent where a recurrent pattern matches (any case), else
  regular."""
  named = [name for name in config.lr_parameter_groups if name not in (REGULAR, RECURRENT)]
  patterns = [p.lower() for p in config.recurrent_param_patterns]
  recurrent = _has_recurrent(config)

  def label(path: str) -> str:
    for name in named:  # DynVision's rule: substring of the path, first match wins
      if name in path:
        return name
    if recurrent and any(p in path.lower() for p in patterns):
      return RECURRENT
    return REGULAR

  return label


def param_labels(config: Config, params: Any) -> Any:
  """The group name of every parameter, as a tree like ``params``."""
  label = labeller(config)
  return jax.tree_util.tree_map_with_path(lambda path, _: label(path_name(path)), params)


def configured_groups(config: Config) -> list[Group]:
  """Every group the config defines, in torch's param_groups order: regular,
  recurrent (with a multiplier other than 1, or configured in lr_parameter_groups),
  then the other lr_parameter_groups as given.

  ``lr_parameter_groups.regular`` and ``lr_parameter_groups.recurrent`` configure
  those two groups (their lr_factor and keywords) rather than naming new ones.

  Raises:
    ConfigError: the recurrent group's LR is set both by
      recurrent_learning_rate_multiplier and by lr_parameter_groups.recurrent.lr_factor.
  """
  spec = spec_of(config.optimizer)  # None: an optax alias
  base_lr = config.learning_rate
  if base_lr is None:
    base_lr = spec.lr if spec is not None else None
  given = {name: dict(kw) for name, kw in config.lr_parameter_groups.items()}
  multiplier = config.recurrent_learning_rate_multiplier
  if multiplier != 1.0 and 'lr_factor' in given.get(RECURRENT, {}):
    raise ConfigError(
      f"the recurrent group's LR is set twice: recurrent_learning_rate_multiplier={multiplier} and "
      f'lr_parameter_groups.recurrent.lr_factor={given[RECURRENT]["lr_factor"]}. Set it with one of them.'
    )
  kinds = [(REGULAR, given.pop(REGULAR, {}))]
  if _has_recurrent(config):
    recurrent = given.pop(RECURRENT, {})
    kinds.append((RECURRENT, {'lr_factor': multiplier, **recurrent}))
  kinds += list(given.items())
  ignored = spec.constructor_only if spec is not None else ()
  out = []
  for name, kw in kinds:
    factor = kw.pop('lr_factor', 1.0)
    kw = {**config.optimizer_kwargs, **{k: v for k, v in kw.items() if k not in ignored}}
    lr = None if base_lr is None else base_lr * factor  # None: an optax alias without a default (validate checks)
    out.append(Group(name, lr, kw, factor))  # type: ignore[arg-type]
  return out


def groups(config: Config, params: Any) -> list[Group]:
  """The parameter groups that hold parameters, in torch's param_groups order:
  regular, recurrent, then lr_parameter_groups as given.

  Raises:
    ConfigError: a configured group (a named one, or recurrent with a
      multiplier other than 1) matches no parameter.
  """
  labels = param_labels(config, params)
  used = set(jax.tree.leaves(labels))
  paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  configured = configured_groups(config)
  for name in (g.name for g in configured if g.name != REGULAR):
    if name in used:
      continue
    if name == RECURRENT:
      patterns = list(config.recurrent_param_patterns)
      what = (
        f'the recurrent group (recurrent_learning_rate_multiplier={config.recurrent_learning_rate_multiplier})'
        f' takes params whose path contains one of {patterns} (case-insensitive)'
      )
      taken = {
        path: label
        for path, label in zip(paths, jax.tree.leaves(labels))
        if any(p.lower() in path.lower() for p in patterns)
      }
    else:
      what, taken = f'lr_parameter_groups.{name} takes params whose path contains {name!r}', {}
    if not paths:
      raise ConfigError(f'{what}, but the parameter tree is empty (it has no leaves).')
    if taken:
      listed = ', '.join(f'{path} (to lr_parameter_groups.{label})' for path, label in list(taken.items())[:5])
      raise ConfigError(
        f'{what}, but the named groups, which are matched first, took them all: {listed}. Rename '
        f'the named group, or give it the lr_factor the recurrent params should have.'
      )
    shown = ', '.join(paths[:20]) + (f' ... ({len(paths)} in all)' if len(paths) > 20 else '')
    raise ConfigError(f'{what}, but none does. Parameter paths: {shown}.')

  return [g for g in configured if g.name in used]
