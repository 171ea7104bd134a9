"""SparseAdam: ``torch.optim.SparseAdam``'s lazy Adam on dense JAX gradients."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec
from jaxsched.optimizers.adam import BETAS, TORCH_STATE, AdamState, bias_correction


def _toward(old: jax.Array, new: jax.Array, rest: Any) -> jax.Array:
  """``old + (new - old) * (1 - beta)``, ``rest = 1 - beta``: torch's SparseAdam moment update.

  The same average as Adam's ``lerp``/``addcmul`` (:mod:`jaxsched.optimizers.adam`)
  but rounded differently, which shows in float32 (beta = 0: ``m + (g - m)`` is not
  exactly ``g``), so it is written as torch writes it.
  """
  return old + (new - old) * _common.cast(rest, new)


def scale_by_sparse_adam(b1: Any, b2: Any, eps: Any) -> optax.GradientTransformation:
  """SparseAdam's direction as ``torch.optim.SparseAdam`` computes it (before ``-lr``).

  An entry whose gradient is exactly 0 is absent (torch's ``grad.to_sparse()``
  stores only non-zeros): its ``m``, ``v`` and parameter stay as they are. Present
  entries get Adam's moments and ``sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)``
  (eps added to the raw ``sqrt(v)``). The step ``t`` counts every update of the
  tensor, present entries or not, as torch's one ``state['step']`` per tensor.
  """

  def init_fn(params):
    return AdamState(jnp.zeros([], jnp.int32), _common.zeros_like(params), _common.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    present = jax.tree.map(lambda g: g != 0, updates)
    rest1, rest2 = 1 - b1, 1 - b2
    mu = jax.tree.map(lambda k, g, m: jnp.where(k, _toward(m, g, rest1), m), present, updates, state.mu)
    nu = jax.tree.map(lambda k, g, v: jnp.where(k, _toward(v, g * g, rest2), v), present, updates, state.nu)
    step_size = jnp.sqrt(bias_correction(b2, count)) / bias_correction(b1, count)

    def direction(k, m, v):
      step = _common.cast(step_size, m) * (m / (jnp.sqrt(v) + _common.cast(eps, v)))
      return jnp.where(k, step, jnp.zeros_like(step))

    updates = jax.tree.map(direction, present, mu, nu)
    return updates, AdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def sparse_adam(learning_rate, b1, b2, eps, maximize):
  """Lazy Adam for sparse gradients, as ``torch.optim.SparseAdam``.

  ``g = -g`` if maximize; only entries with ``g != 0`` update their moments and
  parameters: ``p -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)``
  (:func:`scale_by_sparse_adam`). No weight decay, as in torch.
  """
  return _common.chain(
    _common.negate() if maximize else None,
    scale_by_sparse_adam(b1, b2, eps),
    _common.descend(learning_rate),
  )


SPECS = (
  OptimizerSpec(
    name='SparseAdam',
    factory=sparse_adam,
    lr=0.001,
    lr_check=_checks.Schedulable(_checks.POSITIVE),  # torch: 0.0 < lr
    complex_params=False,  # torch raises in the constructor
    kwargs={
      'betas': ((0.9, 0.999), BETAS),
      'eps': (1e-8, _checks.POSITIVE),  # torch rejects eps <= 0 here
      'maximize': (False, _checks.Boolean()),
    },
    lr_linear=True,
    torch_state=TORCH_STATE,
    torch_step='int',  # torch keeps SparseAdam's step as a Python int
  ),
)
