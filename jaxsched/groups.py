"""Parameter groups as DynVision makes them, or as timm does.

A parameter joins a group by its '/'-joined path (:func:`path_name`, :func:`param_labels`);
each group has its base LR (the config's times its ``lr_factor``) and its optimizer keywords
(:class:`Group`). Each group's schedule is :mod:`jaxsched.learning_rates`'.

With timm's keys (:data:`jaxsched.config.TIMM_KEYS`) the groups are timm's instead
(:func:`timm_groups`): ``timm.optim.param_groups_weight_decay`` and
``param_groups_layer_decay``, as ``timm.optim.create_optimizer_v2`` makes them. A parameter's
group then depends on its number of dimensions and, for layer decay, on the whole tree, so
those labels are made from the tree given to :func:`jaxsched.build` (:func:`labels_of`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxsched._errors import ConfigError
from jaxsched.config import TIMM_KEYS, Config
from jaxsched.optimizers import optax_aliases, spec_of

REGULAR, RECURRENT = 'regular', 'recurrent'
NO_DECAY, DECAY = 'no_decay', 'decay'
# The label of the parameters that layer_decay_no_opt_scale leaves out of the optimizer (no group).
FROZEN = 'frozen'
# timm's auto_group_layers: trunk parameters per layer, in parameter order.
LAYERS_PER_GROUP = 12


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
  regular.

  Raises:
    ConfigError: timm's keys (:func:`uses_timm`): a timm group depends on the leaf's
      dimensions and on the whole tree, not on the path alone.
  """
  if uses_timm(config):
    raise ConfigError(
      "timm's parameter groups (weight_decay_exclude_1d, no_weight_decay_list, layer_decay) depend on each "
      "parameter's dimensions and on the whole tree, not on its path alone: label a tree with "
      'jaxsched.groups.param_labels or group_paths.'
    )
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
  """The group name of every parameter, as a tree like ``params`` (:data:`FROZEN` for a
  parameter timm's ``layer_decay_no_opt_scale`` leaves out)."""
  if uses_timm(config):
    return labels_of(config, params)(params)
  label = labeller(config)
  return jax.tree_util.tree_map_with_path(lambda path, _: label(path_name(path)), params)


def labels_of(config: Config, params: Any) -> Callable[[Any], Any]:
  """The labels of :func:`param_labels` as a function of a tree with the paths of ``params``
  (the updates, inside ``optax.multi_transform``): with timm's groups, each path's group is
  fixed from ``params``, whose own order gives timm's fallback layers (a traced tree has its
  keys sorted)."""
  if not uses_timm(config):
    return lambda tree: param_labels(config, tree)
  placed = _timm_placement(config, params)[0]

  def label(path: tuple) -> str:
    name = path_name(path)
    if name not in placed:
      raise ConfigError(f'{name}: a parameter path that the tree given to build() does not have.')
    return placed[name]

  return lambda tree: jax.tree_util.tree_map_with_path(lambda path, _: label(path), tree)


def uses_timm(config: Config) -> bool:
  """Whether timm's keys make the groups (:func:`timm_groups`) rather than DynVision's."""
  return any(getattr(config, k) not in (None, False, ()) for k in TIMM_KEYS)


def group_paths(config: Config, params: Any) -> dict[str, list[str]]:
  """Each group's parameter paths, in the tree's order (with timm's groups, the tree's own
  mapping order), groups in :func:`groups`' order; :data:`FROZEN` last, where
  ``layer_decay_no_opt_scale`` leaves parameters out. What the torch side needs to build
  ``param_groups`` from torch names mapped to paths (:mod:`jaxsched.interop.layouts`)."""
  if uses_timm(config):
    placed = _timm_placement(config, params)[0]
    out: dict[str, list[str]] = {}
    for name in [g.name for g in groups(config, params)] + [FROZEN]:
      taken = [p for p, label in placed.items() if label == name]
      if taken:
        out[name] = taken
    return out
  label = labeller(config)
  paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return {g.name: [p for p in paths if label(p) == g.name] for g in groups(config, params)}


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
  if uses_timm(config):
    return timm_groups(config)
  spec = spec_of(config.optimizer)  # None: an optax alias
  base = base_lr(config)
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
    lr = None if base is None else base * factor  # None: an optax alias without a default (validate checks)
    out.append(Group(name, lr, kw, factor))  # type: ignore[arg-type]
  return out


def groups(config: Config, params: Any) -> list[Group]:
  """The parameter groups that hold parameters, in torch's param_groups order:
  regular, recurrent, then lr_parameter_groups as given.

  With timm's keys, timm's groups that hold parameters, in timm's order
  (:func:`timm_groups`).

  Raises:
    ConfigError: a configured group (a named one, or recurrent with a
      multiplier other than 1) matches no parameter; a ``layer_groups`` entry that
      matches no parameter.
  """
  if uses_timm(config):
    return _timm_placement(config, params)[1]
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


def base_lr(config: Config) -> float | None:
  """The config's learning_rate, else its optimizer's default; None for an optax alias without one."""
  if config.learning_rate is not None:
    return config.learning_rate
  spec = spec_of(config.optimizer)  # None: an optax alias
  return spec.lr if spec is not None else None


def _weight_decay(config: Config) -> float | None:
  """The optimizer's weight decay (optimizer_kwargs.weight_decay, else its default); None
  where the optimizer takes none."""
  spec = spec_of(config.optimizer)
  if spec is not None:
    if 'weight_decay' not in spec.kwargs:
      return None
    default = spec.kwargs['weight_decay'][0]
  else:
    parameters = optax_aliases.parameters(config.optimizer[len('optax.') :])
    if 'weight_decay' not in parameters:
      return None
    default = parameters['weight_decay'].default
  value = config.optimizer_kwargs.get('weight_decay', default)
  return float(value) if isinstance(value, str) else value


def timm_groups(config: Config, scales: Mapping[int, float] | None = None) -> list[Group]:
  """timm's groups (``timm.optim.create_optimizer_v2`` on a model), each with its own
  ``weight_decay`` (timm passes ``weight_decay=0`` to the optimizer) and LR factor.

  Without ``layer_decay``: ``param_groups_weight_decay``'s ``no_decay`` (weight decay 0)
  then ``decay`` (the optimizer's weight decay); with a weight decay of 0 every parameter
  is ``no_decay``. With ``layer_decay``: ``param_groups_layer_decay``'s
  ``layer_<i>_no_decay`` and ``layer_<i>_decay``, whose LR factor is timm's ``lr_scale``,
  ``max(layer_decay_min_scale, layer_decay ** (last layer - i))``: timm's schedulers set
  each group's LR to the scheduled LR times its ``lr_scale``
  (``timm.scheduler.Scheduler.update_groups``), so here it scales the group's base LR
  as ``lr_factor`` does. ``scales``: layer -> scale, for the layers the tree has (None:
  the two kinds of layer 0 at scale 1, what the config alone says).

  Raises:
    ConfigError: ``weight_decay_exclude_1d`` or ``no_weight_decay_list`` with an optimizer
      that takes no weight decay.
  """
  decay = _weight_decay(config)
  if decay is None and (config.weight_decay_exclude_1d or config.no_weight_decay_list):
    key = 'weight_decay_exclude_1d' if config.weight_decay_exclude_1d else 'no_weight_decay_list'
    raise ConfigError(
      f'{key} sets which parameters get weight decay, but {config.optimizer} takes no weight_decay keyword; '
      f'leave {key} out.'
    )
  base = base_lr(config)
  spec = spec_of(config.optimizer)
  ignored = spec.constructor_only if spec is not None else ()
  kwargs = {k: v for k, v in config.optimizer_kwargs.items() if k not in ignored}

  def group(name: str, weight_decay: float, factor: float) -> Group:
    kw = kwargs if decay is None else {**kwargs, 'weight_decay': weight_decay}
    return Group(name, None if base is None else base * factor, kw, factor)  # type: ignore[arg-type]

  if config.layer_decay is None:
    return [group(NO_DECAY, 0.0, 1.0)] + ([group(DECAY, decay, 1.0)] if decay else [])
  out = []
  for layer, scale in (scales or {0: 1.0}).items():
    out += [group(f'layer_{layer}_{NO_DECAY}', 0.0, scale), group(f'layer_{layer}_{DECAY}', decay or 0.0, scale)]
  return out


def _ordered_paths(params: Any) -> list[tuple[str, Any]]:
  """(path, leaf) in the tree's own order: mappings in their iteration order (a Linen tree
  from an unjitted ``init``: the order the modules create their parameters, torch's
  ``named_parameters`` order), where jax's flattening sorts dict keys; jax's order where
  the walk does not give the same paths."""
  flat = [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]

  def walk(node: Any, prefix: tuple) -> list[tuple]:
    if isinstance(node, Mapping):
      return [p for k in node for p in walk(node[k], (*prefix, jax.tree_util.DictKey(k)))]
    if type(node) in (list, tuple):
      return [p for i, v in enumerate(node) for p in walk(v, (*prefix, jax.tree_util.SequenceKey(i)))]
    return [(*prefix, *p) for p, _ in jax.tree_util.tree_flatten_with_path(node)[0]]

  order = [path_name(p) for p in walk(params, ())]
  leaves = dict(flat)
  if sorted(order) != sorted(leaves) or len(leaves) != len(flat):
    return flat
  return [(p, leaves[p]) for p in order]


def _layers(config: Config, paths: list[str]) -> tuple[dict[str, int], int]:
  """Each path's layer and the number of layers: ``layer_groups`` in order (a regex with
  groups: one layer per number, in numeric order; a path that no entry matches: the last
  layer, timm's ``layer_map.get(name, layer_max)``), else timm's ``auto_group_layers``:
  the paths outside ``layer_decay_classifier`` in chunks of :data:`LAYERS_PER_GROUP` in
  order, then the head (every path where no classifier is given, as timm).

  Raises:
    ConfigError: a ``layer_groups`` entry that matches no path.
  """
  if config.layer_groups is None:
    head = config.layer_decay_classifier
    trunk = [p for p in paths if head and not any(p.startswith(h) for h in head)]
    layer = {p: i // LAYERS_PER_GROUP for i, p in enumerate(trunk)}
    count = -(-len(trunk) // LAYERS_PER_GROUP)
    return {p: layer.get(p, count) for p in paths}, count + 1
  patterns = [re.compile(p) for p in config.layer_groups]
  found: dict[str, tuple[int, tuple]] = {}
  for p in paths:
    for i, pattern in enumerate(patterns):
      if m := pattern.match(p):
        found[p] = (i, tuple(int(g) if g and g.isdecimal() else (g or '') for g in m.groups()))
        break
  keys: list[tuple] = []
  for i, pattern in enumerate(patterns):
    mine = sorted({key for j, key in found.values() if j == i}, key=lambda k: [(isinstance(x, str), x) for x in k])
    if not mine:
      shown = ', '.join(paths[:10]) + (f' ... ({len(paths)} in all)' if len(paths) > 10 else '')
      raise ConfigError(
        f'layer_groups[{i}]={pattern.pattern!r} matches no parameter path (matched at the start of the path, '
        f'after the earlier entries); paths: {shown}.'
      )
    keys += [(i, key) for key in mine]
  number = {key: n for n, key in enumerate(keys)}
  return {p: number[found[p]] if p in found else len(keys) - 1 for p in paths}, len(keys)


def _timm_placement(config: Config, params: Any) -> tuple[dict[str, str], list[Group]]:
  """Each path's timm group (:data:`FROZEN` for those left out) and the groups that hold
  parameters, in timm's order (first appearance in parameter order)."""
  ordered = _ordered_paths(params)
  decay = _weight_decay(config)
  exclude_1d = config.weight_decay_exclude_1d is not False  # timm's default: True
  patterns = config.no_weight_decay_list
  rate = config.layer_decay
  layered = rate is not None
  layer: dict[str, int] = {}
  scales: list[float] = []
  if rate is not None:  # param_groups_layer_decay's layer_scales
    layer, count = _layers(config, [p for p, _ in ordered])
    scales = [max(config.layer_decay_min_scale, rate ** (count - 1 - i)) for i in range(count)]
  placed: dict[str, str] = {}
  for path, leaf in ordered:
    ndim = np.ndim(leaf)
    no_wd = any(fnmatch.fnmatchcase(path, pat) for pat in patterns) or (exclude_1d and ndim <= 1)
    if not layered:  # param_groups_weight_decay: also a name ending in .bias; everything without weight decay
      no_wd = no_wd or not decay or (exclude_1d and path.endswith('/bias'))
      placed[path] = NO_DECAY if no_wd else DECAY
      continue
    scale = scales[layer[path]]
    no_opt = config.layer_decay_no_opt_scale
    frozen = no_opt and scale < no_opt
    placed[path] = FROZEN if frozen else f'layer_{layer[path]}_{NO_DECAY if no_wd else DECAY}'
  made = timm_groups(config, dict(enumerate(scales)) if layered else None)
  used = list(dict.fromkeys(placed.values()))  # layer decay: timm's order, each group where it first appears
  by_name = {g.name: g for g in made}
  return placed, [by_name[name] for name in used if name != FROZEN] if layered else [g for g in made if g.name in used]
