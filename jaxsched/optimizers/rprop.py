"""Rprop: ``torch.optim.Rprop``, the resilient backpropagation of sign-based step sizes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec


class TorchRpropState(NamedTuple):
  """torch's ``prev`` (last gradient, zeroed where its sign flipped) and
  ``step_size`` per parameter."""

  prev: Any
  step_size: Any


def torch_rprop(
  learning_rate: Any, etas: tuple[float, float], step_sizes: tuple[float, float]
) -> optax.GradientTransformation:
  """Rprop's step ``-sign(g) * step_size``, as ``torch.optim.Rprop``.

  The learning rate only seeds every step size (at init, as torch does on its
  first step); later values of the learning rate, scheduled or not, have no
  effect. Each step: ``s = sign(g * prev)`` becomes ``etaplus`` where positive,
  ``etaminus`` where negative and 1 where zero; ``step_size = clamp(step_size *
  s, *step_sizes)``; ``g = 0`` where ``s == etaminus``; ``prev = g``. The first
  step (``prev = 0``) moves by ``clamp(lr)``; ``optax.rprop`` applies the
  previous step's update, so its first step is a no-op.
  """
  etaminus, etaplus = etas
  step_size_min, step_size_max = step_sizes

  def init_fn(params):
    return TorchRpropState(
      _common.zeros_like(params),
      jax.tree.map(lambda p: jnp.full_like(p, _common.cast(learning_rate, p)), params),
    )

  def factors(g, prev):
    # torch overwrites the sign tensor in place, in this order, in g's dtype.
    s = jnp.sign(g * prev)
    s = jnp.where(s > 0, _common.cast(etaplus, s), s)
    s = jnp.where(s < 0, _common.cast(etaminus, s), s)
    return jnp.where(s == 0, _common.cast(1, s), s)

  def update_fn(updates, state, params=None):
    del params
    s = jax.tree.map(factors, updates, state.prev)
    step_size = jax.tree.map(
      lambda size, si: jnp.clip(size * si, _common.cast(step_size_min, si), _common.cast(step_size_max, si)),
      state.step_size,
      s,
    )
    grads = jax.tree.map(lambda g, si: jnp.where(si == _common.cast(etaminus, si), jnp.zeros_like(g), g), updates, s)
    updates = jax.tree.map(lambda g, size: -jnp.sign(g) * size, grads, step_size)
    return updates, TorchRpropState(grads, step_size)

  return optax.GradientTransformation(init_fn, update_fn)


def rprop(learning_rate, etas, step_sizes, maximize):
  """Rprop, as ``torch.optim.Rprop``.

  ``g = -g`` if maximize, then :func:`torch_rprop`: per-element step sizes
  seeded with ``lr``, grown by ``etas[1]`` while the gradient keeps its sign and
  shrunk by ``etas[0]`` when it flips (that step is skipped), clamped to
  ``step_sizes``; ``p -= sign(g) * step_size``.
  """
  return _common.chain(
    _common.negate() if maximize else None,
    torch_rprop(learning_rate, etas, step_sizes),
  )


def _check_etas(kw: dict[str, Any]) -> None:
  etaminus, etaplus = kw['etas']
  if not 0.0 < etaminus < 1.0 < etaplus:
    raise ConfigError(
      f'Rprop: etas={list(kw["etas"])!r} is not allowed: expected 0 < etas[0] < 1 < etas[1] (as torch.optim.Rprop).'
    )


SPECS = (
  OptimizerSpec(
    name='Rprop',
    factory=rprop,
    lr=0.01,
    kwargs={
      'etas': ((0.5, 1.2), _checks.Sequence(_checks.Real(), 2)),
      'step_sizes': ((1e-6, 50.0), _checks.Sequence(_checks.Real(), 2)),
      'maximize': (False, _checks.Boolean()),
    },
    cross_check=_check_etas,
    torch_state={TorchRpropState: {'prev': 'prev', 'step_size': 'step_size'}},
  ),
)
