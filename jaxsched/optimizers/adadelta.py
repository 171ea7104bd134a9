"""Adadelta: ``torch.optim.Adadelta`` with its learning rate, eps placement and L2."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec


class ScaleByTorchAdadeltaState(NamedTuple):
  """torch's ``square_avg`` and ``acc_delta`` per parameter."""

  square_avg: Any
  acc_delta: Any


def scale_by_torch_adadelta(rho: Any, eps: Any) -> optax.GradientTransformation:
  """Adadelta's direction ``sqrt(d + eps) / sqrt(v + eps) * g``, as ``torch.optim.Adadelta``.

  ``v = rho * v + (1 - rho) * g**2`` before the direction is taken, and
  ``d = rho * d + (1 - rho) * delta**2`` after; both start at zero. The result
  is a *descent* direction, to be scaled by ``-lr`` (``optax.adadelta`` with
  ``learning_rate=None`` skips that sign and ascends).
  """

  def init_fn(params):
    return ScaleByTorchAdadeltaState(_common.zeros_like(params), _common.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    square_avg = jax.tree.map(_common.square_average(rho), state.square_avg, updates)
    delta = jax.tree.map(
      lambda g, v, d: jnp.sqrt(d + _common.cast(eps, d)) / jnp.sqrt(v + _common.cast(eps, v)) * g,
      updates,
      square_avg,
      state.acc_delta,
    )
    acc_delta = jax.tree.map(_common.square_average(rho), state.acc_delta, delta)
    return delta, ScaleByTorchAdadeltaState(square_avg, acc_delta)

  return optax.GradientTransformation(init_fn, update_fn)


def adadelta(learning_rate, rho, eps, weight_decay, maximize):
  """Adadelta, as ``torch.optim.Adadelta``.

  ``g = -g`` if maximize; ``g += weight_decay * p`` (L2);
  ``v = rho * v + (1 - rho) * g**2``; ``delta = sqrt(d + eps) / sqrt(v + eps) * g``;
  ``d = rho * d + (1 - rho) * delta**2``; ``p -= lr * delta``. weight_decay of
  exactly 0 removes the term, as in torch.
  """
  return _common.chain(
    *_common.gradient(maximize, weight_decay),
    scale_by_torch_adadelta(rho, eps),
    _common.descend(learning_rate),
  )


SPECS = (
  OptimizerSpec(
    name='Adadelta',
    factory=adadelta,
    lr=1.0,
    kwargs={
      'rho': (0.9, _checks.Real(0.0, 1.0)),  # torch accepts rho == 1
      'eps': (1e-6, _checks.NON_NEGATIVE),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state={ScaleByTorchAdadeltaState: {'square_avg': 'square_avg', 'acc_delta': 'acc_delta'}},
  ),
)
