"""How a node of an optimizer's state becomes torch's per-parameter state, and back.

torch keeps an optimizer's state per parameter: ``optimizer.state_dict()['state'][index]`` maps
torch's keys to tensors in torch's layout, with the parameter's ``step``. The spec of the optimizer
says how its state classes name their fields there (:attr:`OptimizerSpec.torch_state`), which of them
hold one number for all parameters (``torch_scalars``) and how torch keeps ``step``
(``torch_step``): :class:`Fields` converts a node from these facts alone. The states torch keeps
otherwise have converters of their own, registered below by state class: Adafactor's factored
second moments (:class:`FactoredMoments`, one field of ``AdafactorState``) and LBFGS's history
(:class:`History`, one state for all parameters, over the flattened parameters).

A converter works on numpy arrays in torch's layout (:class:`TorchState`); :mod:`jaxsched.interop.state`
walks the JAX state and turns them into tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxsched._errors import ConfigError
from jaxsched.groups import path_name
from jaxsched.interop.correspondence import Correspondence, Param
from jaxsched.interop.layouts import as_numpy, leaf_paths
from jaxsched.optimizers import OptimizerSpec
from jaxsched.optimizers.adafactor import AdafactorState
from jaxsched.optimizers.lbfgs import LBFGSState


def torch_value(x: Any) -> np.ndarray:
  """A value of torch's state (a tensor, a number) as a numpy array."""
  return as_numpy(x) if hasattr(x, 'detach') else np.asarray(x)


@dataclasses.dataclass
class TorchState:
  """torch's per-parameter optimizer state, as the converters read it (:func:`jaxsched.from_torch`)
  and write it (:func:`jaxsched.to_torch`).

  Attributes:
    spec: the optimizer's spec.
    corr: torch's parameters matched to the JAX ones.
    params: the JAX parameters.
    k: the optimizer steps taken.
    state: parameter index -> torch's key -> value (tensors read, numpy arrays in torch's layout written).
    steps: the updates of each parameter whose state keeps its own count (torch's ``step``; written).
    scalar: torch's default dtype, that of its 0-d state tensors (written).
    by_path: the parameters by JAX path.
  """

  spec: OptimizerSpec
  corr: Correspondence
  params: Any
  k: int
  state: dict[int, dict[str, Any]]
  steps: dict[int, int] = dataclasses.field(default_factory=dict)
  scalar: Any = np.float32
  by_path: dict[str, Param] = dataclasses.field(init=False)

  def __post_init__(self) -> None:
    self.by_path = self.corr.by_path()

  def param(self, path: tuple[Any, ...]) -> Param | None:
    """The parameter of a state leaf at ``path`` (a pair of factored moments: its parent's)."""
    return self.by_path.get(path_name(path)) or self.by_path.get(path_name(path[:-1]))

  def value(self, p: Param, key: str) -> np.ndarray:
    """torch's ``key`` of ``p``; ConfigError where its state has none."""
    s = self.state.get(p.index, {})
    if key not in s or s[key] is None:
      raise ConfigError(
        f"the checkpoint's state of {p.name!r} has no {key!r} (it has {', '.join(s) or 'nothing'}); "
        f"the config's {self.spec.name} keeps one (another setting, e.g. amsgrad or momentum?)."
      )
    return torch_value(s[key])

  def fits(self, p: Param, key: str, value: np.ndarray, like: Any) -> jax.Array:
    """A copy of ``value`` (in JAX's layout) in ``like``'s dtype; ConfigError where the shapes differ.
    A copy: on the CPU ``jnp.asarray`` may share the memory of torch's tensor, which torch's next
    ``step()`` changes in place."""
    if value.shape != tuple(like.shape):
      raise ConfigError(
        f"the checkpoint's {key} of {p.name!r} has shape {value.shape} in JAX's layout, the JAX "
        f'parameter {p.path!r} {tuple(like.shape)}.'
      )
    return jnp.array(value, like.dtype, copy=True)

  def steps_of(self, covered: Sequence[Param]) -> int:
    """torch's ``step`` of the parameters (one number: jaxsched steps them together); without
    torch's step (SGD, Muon), a state that exists has had k >= 1 updates."""
    steps = {
      int(torch_value(self.state[p.index]['step']))
      if 'step' in self.state.get(p.index, {})
      else (max(self.k, 1) if self.state.get(p.index) else 0)
      for p in covered
    }
    if len(steps) > 1:
      raise ConfigError(
        f'the parameters {", ".join(p.name for p in covered)} have taken different numbers of steps '
        f'in the checkpoint ({sorted(steps)}); jaxsched steps them together.'
      )
    return steps.pop() if steps else 0


class Converter(Protocol):
  """Converts one node of a state class, both ways."""

  def from_torch(self, node: Any, torch: TorchState) -> Any:
    """The node holding torch's state."""

  def to_torch(self, node: Any, torch: TorchState) -> None:
    """Writes the node's values into torch's state."""


class FieldConverter(Protocol):
  """Converts one field of a node (a tree over the node's parameters), both ways."""

  def from_torch(self, value: Any, torch: TorchState) -> Any: ...

  def to_torch(self, value: Any, torch: TorchState) -> None: ...


@dataclasses.dataclass(frozen=True)
class Fields:
  """A per-parameter state converted by its spec's facts: each field of ``keys`` is a tree of
  torch's ``key`` per parameter, in the parameter's layout, or (``scalars``) one number torch
  keeps per parameter; ``count`` is torch's ``step``; ``own`` fields have converters of their own."""

  keys: Mapping[str, str]
  scalars: frozenset[str]
  own: Mapping[str, FieldConverter]

  def fields(self, node: Any) -> list[str]:
    """The node's fields that hold state (not None, not the count)."""
    return [f for f in node._fields if f != 'count' and getattr(node, f) is not None]

  def covered(self, node: Any, torch: TorchState) -> list[Param]:
    """The parameters the node holds state for, in its order."""
    for field in self.fields(node):
      if field not in self.scalars:
        found = [torch.param(path) for path, _ in jax.tree_util.tree_flatten_with_path(getattr(node, field))[0]]
        return list(dict.fromkeys(p for p in found if p is not None))
    return []

  def started(self, node: Any, torch: TorchState) -> bool:
    """Whether torch would have this state yet (torch creates it on a parameter's first step):
    its own count where it keeps one; else the optimizer steps taken, which SGD and Muon
    cannot tell after :func:`jaxsched.from_torch` without ``step=`` (torch keeps no ``step`` for
    them), so there a state counts as started where its tensors are not all zeros (a zero
    momentum buffer is what torch's Muon starts from)."""
    if 'count' in node._fields:
      return int(node.count) > 0
    if torch.k:
      return True
    return torch.spec.torch_step is None and any(np.any(np.asarray(x)) for x in jax.tree.leaves(node))

  def from_torch(self, node: Any, torch: TorchState) -> Any:
    covered = self.covered(node, torch)
    if not any(torch.state.get(p.index) for p in covered):  # not stepped yet: the fresh state is torch's
      return node
    new = {}
    for field in self.fields(node):
      value = getattr(node, field)
      if field in self.own:
        new[field] = self.own[field].from_torch(value, torch)
      elif field in self.scalars:
        key = self.keys[field]
        values = {float(torch.value(p, key)) for p in covered if key in torch.state.get(p.index, {})}
        if len(values) > 1:
          raise ConfigError(
            f"the checkpoint's {key} differs between {', '.join(p.name for p in covered)}; jaxsched keeps one for them."
          )
        new[field] = jnp.asarray(values.pop(), value.dtype) if values else value
      elif field in self.keys:
        new[field] = jax.tree_util.tree_map_with_path(
          lambda path, like, key=self.keys[field]: self.leaf(torch, path, key, like), value
        )
    if 'count' in node._fields:
      new['count'] = jnp.asarray(torch.steps_of(covered), node.count.dtype)
    return node._replace(**new)

  @staticmethod
  def leaf(torch: TorchState, path: tuple[Any, ...], key: str, like: Any) -> jax.Array:
    p = torch.by_path.get(path_name(path))
    if p is None:  # a frozen parameter (in no torch group) under a direction all groups share: its fresh state
      return like
    return torch.fits(p, key, p.layout.to_jax(torch.value(p, key)), like)

  def to_torch(self, node: Any, torch: TorchState) -> None:
    if not self.started(node, torch):
      return
    covered = self.covered(node, torch)
    for field in self.fields(node):
      value = getattr(node, field)
      if field in self.own:
        self.own[field].to_torch(value, torch)
      elif field in self.scalars:
        for p in covered:
          torch.state[p.index][self.keys[field]] = np.asarray(float(value), torch.scalar)
      elif field in self.keys:
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
          mine = torch.by_path.get(path_name(path))
          if mine is not None:  # None: a frozen parameter, which torch keeps no state for
            torch.state[mine.index][self.keys[field]] = mine.layout.to_torch(np.asarray(leaf))
    if 'count' in node._fields:
      torch.steps.update({p.index: int(node.count) for p in covered})


class FactoredMoments:
  """Adafactor's second moments (``AdafactorState.moments``): torch's ``variance`` for a vector,
  ``row_var`` and ``col_var`` (its last two dimensions' means) for a tensor of two or more
  dimensions. A layout change that swaps the last two axes (a Dense kernel) turns torch's row
  means into JAX's column means (the other changes are refused: ``check_layout``)."""

  @staticmethod
  def key(p: Param, which: int, ndim: int) -> tuple[str, bool]:
    """torch's key of the factored moment ``which`` (0: rows, 1: columns) and whether its axes swap."""
    swap = not p.layout.keeps_axes(ndim)
    return ('row_var', 'col_var')[1 - which if swap else which], swap

  def from_torch(self, moments: Any, torch: TorchState) -> Any:
    def fill(path, like):
      p = torch.by_path.get(path_name(path))
      if p is not None:
        return torch.fits(p, 'variance', p.layout.to_jax(torch.value(p, 'variance')), like)
      p = torch.by_path.get(path_name(path[:-1]))
      if p is None:  # a frozen parameter under a direction all groups share (Fields.leaf)
        return like
      key, swap = self.key(p, path[-1].idx, like.ndim)
      value = torch.value(p, key)
      return torch.fits(p, key, np.swapaxes(value, -1, -2) if swap else value, like)

    return jax.tree_util.tree_map_with_path(fill, moments)

  def to_torch(self, moments: Any, torch: TorchState) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(moments)[0]:
      leaf = np.asarray(leaf)
      p = torch.by_path.get(path_name(path))
      if p is not None:
        torch.state[p.index]['variance'] = leaf
      elif (p := torch.by_path.get(path_name(path[:-1]))) is not None:  # None: a frozen parameter
        key, swap = self.key(p, path[-1].idx, leaf.ndim)
        torch.state[p.index][key] = np.swapaxes(leaf, -1, -2) if swap else leaf


class History:
  """torch.optim.LBFGS's one state for all parameters (torch keeps it under the first
  parameter's index): the direction, step, curvature pairs (lists, oldest first, where
  jaxsched keeps rings) and counters, over torch's flattened parameters (its group's params
  in order, each in torch's layout) where jaxsched flattens with ``ravel_pytree``."""

  def ordered(self, torch: TorchState) -> list[Param]:
    return sorted(torch.corr.params, key=lambda p: p.index)

  def to_jax(self, vectors: Sequence[Any], like: jax.Array, torch: TorchState) -> jax.Array:
    """torch's flattened parameter vectors in JAX's ``ravel_pytree`` order and layout."""
    by_path = leaf_paths(torch.params)
    ordered = self.ordered(torch)
    sizes = [int(np.size(by_path[p.path])) for p in ordered]
    out = []
    for vector in vectors:
      pieces = np.split(torch_value(vector), np.cumsum(sizes)[:-1])
      leaves = {
        p.path: p.layout.to_jax(piece.reshape(p.layout.to_torch(np.asarray(by_path[p.path])).shape))
        for p, piece in zip(ordered, pieces)
      }
      tree = jax.tree_util.tree_map_with_path(lambda path, _, leaves=leaves: leaves[path_name(path)], torch.params)
      out.append(ravel_pytree(jax.tree.map(lambda x: np.asarray(x, like.dtype), tree))[0])
    return jnp.stack(out) if out else jnp.zeros((0,) + like.shape[-1:], like.dtype)

  def to_flat(self, vector: jax.Array, torch: TorchState) -> np.ndarray:
    """A JAX ``ravel_pytree`` vector as torch's flattened parameters."""
    _, unravel = ravel_pytree(torch.params)
    by_path = leaf_paths(unravel(vector))
    return np.concatenate([p.layout.to_torch(np.asarray(by_path[p.path])).reshape(-1) for p in self.ordered(torch)])

  def from_torch(self, node: LBFGSState, torch: TorchState) -> LBFGSState:
    s = torch.state.get(0)
    if not s:
      return node
    history = node.old_dirs.shape[0]
    num_old = len(s.get('old_dirs', []))
    if num_old > history:
      raise ConfigError(f"the checkpoint's LBFGS holds {num_old} curvature pairs, history_size is {history}.")
    dtype = node.d.dtype

    def rows(ring, key):
      return ring.at[:num_old].set(self.to_jax(s[key], node.d, torch)) if num_old else ring

    return node._replace(
      func_evals=jnp.asarray(s['func_evals'], jnp.int32),
      n_iter=jnp.asarray(s['n_iter'], jnp.int32),
      d=self.to_jax([s['d']], node.d, torch)[0],
      t=jnp.asarray(torch_value(s['t']), dtype),
      old_dirs=rows(node.old_dirs, 'old_dirs'),
      old_stps=rows(node.old_stps, 'old_stps'),
      ro=node.ro.at[:num_old].set(jnp.asarray([float(torch_value(r)) for r in s.get('ro', [])], dtype)),
      head=jnp.zeros([], jnp.int32),
      num_old=jnp.asarray(num_old, jnp.int32),
      h_diag=jnp.asarray(torch_value(s['H_diag']), dtype),
      prev_flat_grad=self.to_jax([s['prev_flat_grad']], node.d, torch)[0],
      prev_loss=jnp.asarray(torch_value(s['prev_loss']), dtype),
    )

  def to_torch(self, node: LBFGSState, torch: TorchState) -> None:
    if int(node.n_iter) == 0:
      return
    history, num_old, head = node.old_dirs.shape[0], int(node.num_old), int(node.head)
    rows = [(head + i) % history for i in range(num_old)]  # oldest first, as torch's lists
    torch.state[0] = {
      'func_evals': int(node.func_evals),
      'n_iter': int(node.n_iter),
      'd': self.to_flat(node.d, torch),
      't': float(node.t),
      'old_dirs': [self.to_flat(node.old_dirs[r], torch) for r in rows],
      'old_stps': [self.to_flat(node.old_stps[r], torch) for r in rows],
      'ro': [np.asarray(node.ro[r]) for r in rows],
      'H_diag': np.asarray(node.h_diag),
      'prev_flat_grad': self.to_flat(node.prev_flat_grad, torch),
      'prev_loss': float(node.prev_loss),
      'al': [None] * history,
    }


# The states torch keeps otherwise than one key per field: whole nodes, and single fields of a node.
NODES: dict[type, Converter] = {LBFGSState: History()}
FIELDS: dict[tuple[type, str], FieldConverter] = {(AdafactorState, 'moments'): FactoredMoments()}


def converter(spec: OptimizerSpec, cls: type) -> Converter:
  """The converter of ``spec``'s state class ``cls``: its own, or :class:`Fields` from the spec's facts."""
  if cls in NODES:
    return NODES[cls]
  return Fields(
    spec.torch_state[cls],
    frozenset(field for c, field in spec.torch_scalars if c is cls),
    {field: conv for (c, field), conv in FIELDS.items() if c is cls},
  )
