"""RMSprop: ``torch.optim.RMSprop`` with eps outside the root, centering, momentum and L2."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec
from jaxsched.optimizers.sgd import MomentumState, torch_momentum


class ScaleByTorchRMSState(NamedTuple):
  """torch's ``square_avg`` and, when centered, ``grad_avg`` (else None)."""

  square_avg: Any
  grad_avg: Any


def scale_by_torch_rms(alpha: Any, eps: Any, centered: bool, scale: Any = 1.0) -> optax.GradientTransformation:
  """``scale * g / (sqrt(v) + eps)`` as ``torch.optim.RMSprop`` computes it.

  ``v = alpha * v + (1 - alpha) * g**2`` starting from zeros (no bias
  correction); centered: ``a = lerp(a, g, 1 - alpha)`` and ``v - a**2`` under
  the root. eps is added *outside* the square root (optax's default is inside).
  ``scale`` multiplies the numerator before the division, as torch's
  ``addcdiv(g, avg, value=scale)`` does (``-lr`` without momentum, 1 with it).
  """

  def init_fn(params):
    return ScaleByTorchRMSState(_common.zeros_like(params), _common.zeros_like(params) if centered else None)

  def update_fn(updates, state, params=None):
    del params
    square_avg = jax.tree.map(_common.square_average(alpha), state.square_avg, updates)
    if centered:
      grad_avg = jax.tree.map(_common.lerp(1 - alpha), state.grad_avg, updates)
      variance = jax.tree.map(lambda v, a: v - a * a, square_avg, grad_avg)
    else:
      grad_avg, variance = None, square_avg
    updates = jax.tree.map(
      lambda g, v: _common.cast(scale, g) * g / (jnp.sqrt(v) + _common.cast(eps, v)), updates, variance
    )
    return updates, ScaleByTorchRMSState(square_avg, grad_avg)

  return optax.GradientTransformation(init_fn, update_fn)


def rmsprop(learning_rate, alpha, eps, weight_decay, momentum, centered, maximize):
  """RMSprop, as ``torch.optim.RMSprop``.

  ``g = -g`` if maximize; ``g += weight_decay * p`` (L2);
  ``v = alpha * v + (1 - alpha) * g**2``; centered: ``a = lerp(a, g, 1 - alpha)``,
  ``v~ = v - a**2`` (else ``v~ = v``); ``u = g / (sqrt(v~) + eps)``; with momentum
  ``buf = momentum * buf + u`` and ``u = buf``; ``p -= lr * u``. The momentum
  buffer is kept *before* the learning rate, so an lr schedule never leaks into
  it (``optax.rmsprop`` traces after the lr). momentum or weight_decay of
  exactly 0 removes that term (and its state), as in torch; momentum can be
  scheduled (OneCycleLR and CyclicLR cycle it).
  """
  gradient = _common.gradient(maximize, weight_decay)  # maximize and L2 act on the gradient first
  if momentum is None:
    # torch folds -lr into the numerator: p.addcdiv_(g, avg, value=-lr).
    return _common.chain(*gradient, scale_by_torch_rms(alpha, eps, centered, -learning_rate))
  return _common.chain(
    *gradient,
    scale_by_torch_rms(alpha, eps, centered),
    # torch's RMSprop buffer starts at zero, so m * 0 + u = u on the first
    # step: SGD's momentum without dampening.
    torch_momentum(momentum, 0.0, False),
    _common.descend(learning_rate),
  )


SPECS = (
  OptimizerSpec(
    name='RMSprop',
    factory=rmsprop,
    lr=0.01,  # torch's and the reference page's default
    kwargs={
      'alpha': (0.99, _checks.NON_NEGATIVE),  # torch only rejects alpha < 0
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'momentum': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'centered': (False, _checks.Boolean()),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('weight_decay', 'momentum'),
    lr_linear=True,
    torch_state={
      ScaleByTorchRMSState: {'square_avg': 'square_avg', 'grad_avg': 'grad_avg'},
      MomentumState: {'buffer': 'momentum_buffer'},
    },
  ),
)
