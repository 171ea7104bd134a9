"""Where a torch parameter lives in a JAX parameter tree, and how its axes are laid out there.

torch names a parameter ``'features.0.weight'`` and keeps ``nn.Linear``'s weight
as (out, in) and ``nn.Conv2d``'s as (O, I, H, W); Flax names it
``'features/0/kernel'`` and keeps ``nn.Dense``'s kernel as (in, out) and
``nn.Conv``'s as (H, W, I, O). A *rule* says, for a torch name and the number of
dimensions of its tensor, which '/'-joined JAX path holds it and which
:class:`Layout` change turns the torch tensor into the JAX array (None: the entry
has no JAX counterpart, e.g. ``num_batches_tracked``). :func:`flax_rule` is the
rule for Flax's common layers (table :data:`FLAX`); :func:`with_overrides`
changes it for single names. The same change is applied to every per-parameter
optimizer state (moments, buffers) of the parameter.

BatchNorm's running statistics are buffers in torch (``running_mean``,
``running_var``, ``num_batches_tracked``) and a separate collection in Flax
(Linen's ``variables['batch_stats']``, NNX's ``nnx.BatchStat`` variables, both
``mean`` and ``var``): :func:`torch_params` and :func:`torch_state_dict` take
them with ``batch_stats=``, and say which statistics they would otherwise drop.
The two keep them alike, with two differences: torch's ``momentum`` is the weight
of the new batch, Flax's the weight of the old average (torch's ``momentum=0.1``
is Flax's ``momentum=0.9``), and torch's training step averages each batch's
unbiased variance (Bessel's correction), Flax's its biased one. Flax has no
``num_batches_tracked`` (torch reads it only with ``momentum=None``, the
cumulative average of :func:`torch.optim.swa_utils.update_bn`).

This module needs no torch: it works on anything ``numpy.asarray`` reads
(torch CPU tensors included).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxsched._errors import ConfigError, ConfigWarning
from jaxsched.groups import path_name


@dataclasses.dataclass(frozen=True)
class Layout:
  """An axis permutation between a torch tensor and its JAX array.

  Attributes:
    name: what it is, for messages ('dense', 'conv', 'same').
    axes: ``axes(ndim)``: for each JAX axis, the torch axis it comes from.
  """

  name: str
  axes: Callable[[int], tuple[int, ...]]

  def to_jax(self, x: Any) -> np.ndarray:
    """The torch tensor ``x`` in JAX's layout."""
    x = as_numpy(x)
    return np.transpose(x, self.axes(x.ndim))

  def to_torch(self, x: Any) -> np.ndarray:
    """The JAX array ``x`` in torch's layout."""
    x = np.asarray(x)
    return np.transpose(x, np.argsort(self.axes(x.ndim)))

  def swaps_last_two(self, ndim: int) -> bool:
    """Whether the change only swaps the last two axes (a Dense kernel)."""
    axes = self.axes(ndim)
    return ndim >= 2 and axes == (*range(ndim - 2), ndim - 1, ndim - 2)

  def keeps_axes(self, ndim: int) -> bool:
    return self.axes(ndim) == tuple(range(ndim))


SAME = Layout('same', lambda ndim: tuple(range(ndim)))
# nn.Linear (out, in) -> nn.Dense (in, out)
DENSE = Layout('dense', lambda ndim: (*range(ndim - 2), ndim - 1, ndim - 2))
# nn.ConvNd (O, I, *kernel) -> nn.Conv (*kernel, I, O)
CONV = Layout('conv', lambda ndim: (*range(2, ndim), 1, 0))

Rule = Callable[[str, int], 'tuple[str, Layout] | None']

# Flax's names and layouts for torch's common layers: (torch leaf name, the tensor's
# dimensions or None for any) -> (Flax leaf name, layout change), or None to skip the entry.
FLAX: dict[tuple[str, int | None], tuple[str, Layout] | None] = {
  ('weight', 1): ('scale', SAME),  # nn.BatchNorm*, nn.LayerNorm, nn.GroupNorm -> scale
  ('weight', 2): ('kernel', DENSE),  # nn.Linear -> nn.Dense
  ('weight', 3): ('kernel', CONV),  # nn.Conv1d -> nn.Conv
  ('weight', 4): ('kernel', CONV),  # nn.Conv2d
  ('weight', 5): ('kernel', CONV),  # nn.Conv3d
  ('bias', None): ('bias', SAME),
  ('running_mean', None): ('mean', SAME),  # BatchNorm's buffers, Flax's batch_stats
  ('running_var', None): ('var', SAME),
  ('num_batches_tracked', None): None,
}


def flax_rule(name: str, ndim: int) -> tuple[str, Layout] | None:
  """The JAX path and layout change of torch's ``name`` under Flax's conventions
  (:data:`FLAX`): dots become slashes and the leaf is renamed; a leaf the table
  does not know keeps its name and layout."""
  scope, _, leaf = name.rpartition('.')
  key = (leaf, ndim) if (leaf, ndim) in FLAX else (leaf, None)
  if key not in FLAX:
    return name.replace('.', '/'), SAME
  target = FLAX[key]
  if target is None:
    return None
  jax_leaf, layout = target
  return '/'.join([*scope.split('.'), jax_leaf] if scope else [jax_leaf]), layout


def with_overrides(overrides: Mapping[str, tuple[str, Layout] | None], base: Rule = flax_rule) -> Rule:
  """``base`` with some torch names mapped explicitly, e.g.
  ``{'embed.weight': ('embed/embedding', SAME)}`` (an ``nn.Embedding`` is not a Dense)."""
  overrides = dict(overrides)
  return lambda name, ndim: overrides[name] if name in overrides else base(name, ndim)


def as_rule(rule: Rule | Mapping[str, Any] | None) -> Rule:
  """A rule from a callable, a mapping of overrides on :func:`flax_rule`, or None (:func:`flax_rule`)."""
  if rule is None:
    return flax_rule
  if isinstance(rule, Mapping):
    return with_overrides(rule)
  if not callable(rule):
    raise ConfigError(
      f'rule={rule!r} must be a function (torch name, ndim) -> (JAX path, Layout) or None, '
      f'or a mapping of torch names to (JAX path, Layout).'
    )
  return rule


def as_numpy(x: Any) -> np.ndarray:
  """A numpy array of a torch tensor (detached, on the CPU) or of anything array-like."""
  if hasattr(x, 'detach'):
    x = x.detach().cpu()
    if str(x.dtype) == 'torch.bfloat16':
      x = x.float()
    return x.numpy()
  return np.asarray(x)


def leaf_paths(tree: Any) -> dict[str, Any]:
  """Path (:func:`jaxsched.groups.path_name`) -> leaf."""
  return {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, value in flat.items():
    *scope, leaf = path.split('/')
    node = out
    for part in scope:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


# torch's names of BatchNorm's running statistics (nn.BatchNorm*, nn.SyncBatchNorm, nn.InstanceNorm* tracking them)
RUNNING_STATS = ('running_mean', 'running_var')
STATS_HINT = "Linen's variables['batch_stats'], or nnx.state(model, nnx.BatchStat)"


def torch_params(
  state_dict: Mapping[str, Any],
  rule: Rule | Mapping[str, Any] | None = None,
  *,
  like: Any = None,
  batch_stats: Any = None,
) -> Any:
  """A torch ``state_dict`` (or ``named_parameters()``) as a JAX parameter tree.

  Args:
    state_dict: torch names to tensors (or arrays).
    rule: where each name goes and its layout change (default :func:`flax_rule`).
    like: optional JAX tree to fill: then only its paths are taken, with its leaves'
      dtypes and its container types, and every one of its leaves must be found.
      BatchNorm's running statistics that neither ``like`` nor ``batch_stats`` takes
      are named in a :class:`jaxsched.ConfigWarning`.
    batch_stats: optional tree of the model's BatchNorm statistics to fill as ``like``
      (Linen's ``variables['batch_stats']``, or ``nnx.state(model, nnx.BatchStat)``):
      torch's ``running_mean`` and ``running_var`` (:data:`FLAX`); needs ``like``.

  Returns:
    ``like``'s structure, or nested dicts of numpy arrays by path (every entry the
    rule maps, statistics included); ``(params, batch_stats)`` with ``batch_stats``.

  Raises:
    ConfigError: a shape that does not fit ``like`` (``batch_stats``), or a leaf of
      ``like`` (``batch_stats``) with no torch counterpart.
  """
  rule = as_rule(rule)
  flat = {}
  for name, tensor in dict(state_dict).items():
    value = as_numpy(tensor)
    target = rule(name, value.ndim)
    if target is not None:
      path, layout = target
      flat[path] = (name, layout.to_jax(value))
  if like is None:
    if batch_stats is not None:
      raise ConfigError('batch_stats= is a tree to fill beside the parameters: give like= (the parameters) too.')
    return _nested({path: value for path, (_, value) in flat.items()})
  params = _fill(flat, like, 'parameter')
  taken = set(leaf_paths(like))
  if batch_stats is not None:
    stats = _fill(flat, batch_stats, 'BatchNorm statistic')
    taken |= set(leaf_paths(batch_stats))
  dropped = [name for path, (name, _) in flat.items() if path not in taken and name.rpartition('.')[2] in RUNNING_STATS]
  if dropped:
    warnings.warn(
      f"torch's BatchNorm statistics {', '.join(dropped)} are not taken: pass batch_stats= ({STATS_HINT}) to "
      f'have them.',
      ConfigWarning,
      stacklevel=2,
    )
  return params if batch_stats is None else (params, stats)


def _fill(flat: Mapping[str, tuple[str, np.ndarray]], like: Any, what: str) -> Any:
  """``like`` with each leaf replaced by the torch value of its path (``flat``), in its dtype."""

  def fill(path, leaf):
    if path not in flat:
      raise ConfigError(
        f'the JAX {what} {path!r} has no torch counterpart under the rule; torch names map to: '
        f'{", ".join(sorted(flat)) or "nothing"}.'
      )
    name, value = flat[path]
    if value.shape != tuple(np.shape(leaf)):
      raise ConfigError(
        f'torch {name!r} of shape {value.shape} (after the layout change) does not fit the JAX '
        f'{what} {path!r} of shape {tuple(np.shape(leaf))}.'
      )
    return value.astype(np.asarray(leaf).dtype)

  values = {p: fill(p, leaf) for p, leaf in leaf_paths(like).items()}
  return jax.tree_util.tree_map_with_path(lambda p, _: jax.numpy.asarray(values[path_name(p)]), like)


def locate(rule: Rule, name: str, params_by_path: Mapping[str, Any]) -> tuple[str, Layout]:
  """The JAX path and layout of torch's ``name`` in a JAX tree (``path -> leaf``): the
  rule is asked for each number of dimensions and the path must hold an array of that many.

  Raises:
    ConfigError: no JAX parameter takes the name.
  """
  found = set()
  for ndim in range(8):
    target = rule(name, ndim)
    if target is not None and target[0] in params_by_path and np.ndim(params_by_path[target[0]]) == ndim:
      found.add(target)
  if len(found) != 1:
    tried = sorted({t[0] for t in (rule(name, n) for n in range(8)) if t is not None})
    raise ConfigError(
      f'torch parameter {name!r} has no JAX counterpart: the rule maps it to '
      f'{", ".join(map(repr, tried)) or "nothing"}, and the JAX parameters are '
      f'{", ".join(params_by_path)}. Pass a rule (jaxsched.interop.layouts.with_overrides).'
    )
  return found.pop()


def torch_state_dict(
  params: Any,
  torch_names: Sequence[str],
  rule: Rule | Mapping[str, Any] | None = None,
  *,
  batch_stats: Any = None,
  num_batches_tracked: int | None = None,
) -> dict[str, np.ndarray]:
  """The reverse of :func:`torch_params`: ``{torch name: array in torch's layout}``
  for each of ``torch_names``. With ``torch_names=list(module.state_dict())`` the result
  loads with ``module.load_state_dict({k: torch.from_numpy(v) ...})`` (strict): nothing
  of the module is left at its own value unnoticed.

  Args:
    params: the JAX parameters.
    torch_names: the torch names to give: the module's parameters, or its whole ``state_dict()``.
    rule: as for :func:`torch_params`.
    batch_stats: the model's BatchNorm statistics (Linen's ``variables['batch_stats']``, or
      ``nnx.state(model, nnx.BatchStat)``), for names of torch's ``running_mean`` and ``running_var``.
    num_batches_tracked: the value of torch's ``num_batches_tracked`` buffers, which Flax does not
      keep (BatchNorm reads it only with ``momentum=None``); needed where ``torch_names`` has one.

  Raises:
    ConfigError: a name with no JAX counterpart in ``params`` (or ``batch_stats``), a running
      statistic without ``batch_stats``, a ``num_batches_tracked`` without ``num_batches_tracked=``.
  """
  rule = as_rule(rule)
  by_path = leaf_paths(params)
  tree = {**by_path, **({} if batch_stats is None else leaf_paths(batch_stats))}
  out = {}
  for name in torch_names:
    leaf = name.rpartition('.')[2]
    if leaf == 'num_batches_tracked' and all(rule(name, n) is None for n in range(8)):
      if num_batches_tracked is None:
        raise ConfigError(
          f"torch's {name!r} (BatchNorm's count of training batches) has no Flax counterpart: give "
          f'num_batches_tracked= (e.g. 0; torch reads it only where momentum is None), or leave the name out.'
        )
      out[name] = np.asarray(num_batches_tracked, np.int64)
      continue
    targets = (rule(name, n) for n in range(8))
    if leaf in RUNNING_STATS and batch_stats is None and not any(t is not None and t[0] in tree for t in targets):
      raise ConfigError(f"torch's BatchNorm statistic {name!r} is not a parameter: pass batch_stats= ({STATS_HINT}).")
    path, layout = locate(rule, name, tree)
    out[name] = layout.to_torch(np.asarray(tree[path]))
  return out
