"""Adagrad: ``torch.optim.Adagrad`` with its lr decay, accumulator start, eps and L2."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec


class TorchAdagradState(NamedTuple):
  """torch's ``step`` (updates already applied) and ``sum`` per parameter."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  sum: Any


def torch_adagrad(
  learning_rate: Any, lr_decay: Any, eps: Any, initial_accumulator_value: Any
) -> optax.GradientTransformation:
  """Adagrad's step ``-clr * g / (sqrt(s) + eps)``, as ``torch.optim.Adagrad``.

  ``s`` starts at ``initial_accumulator_value`` and accumulates ``g**2``; eps is
  added *outside* the root (optax adds it inside). ``clr = lr / (1 + k * lr_decay)``
  where ``k`` counts the updates already applied (torch's ``step - 1``), so it
  follows an lr schedule.
  """

  def init_fn(params):
    return TorchAdagradState(
      jnp.zeros([], jnp.int32),
      jax.tree.map(lambda p: jnp.full_like(p, _common.cast(initial_accumulator_value, p)), params),
    )

  def update_fn(updates, state, params=None):
    del params
    step = -learning_rate / (1 + state.count * lr_decay)
    sums = jax.tree.map(lambda s, g: s + g * g, state.sum, updates)
    updates = jax.tree.map(lambda g, s: _common.cast(step, g) * g / (jnp.sqrt(s) + _common.cast(eps, s)), updates, sums)
    return updates, TorchAdagradState(optax.safe_increment(state.count), sums)

  return optax.GradientTransformation(init_fn, update_fn)


def adagrad(learning_rate, lr_decay, weight_decay, initial_accumulator_value, eps, maximize):
  """Adagrad, as ``torch.optim.Adagrad``.

  ``g = -g`` if maximize; ``g += weight_decay * p`` (L2); ``s += g**2`` (from
  ``initial_accumulator_value``); ``p -= lr / (1 + (t - 1) * lr_decay) * g /
  (sqrt(s) + eps)`` at torch's step ``t``. weight_decay of exactly 0 removes
  the term, as in torch.
  """
  return _common.chain(
    *_common.gradient(maximize, weight_decay),
    torch_adagrad(learning_rate, lr_decay, eps, initial_accumulator_value),
  )


SPECS = (
  OptimizerSpec(
    name='Adagrad',
    factory=adagrad,
    lr=0.01,  # torch's and the reference page's default
    kwargs={
      'lr_decay': (0.0, _checks.NON_NEGATIVE),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'initial_accumulator_value': (0.0, _checks.NON_NEGATIVE),
      'eps': (1e-10, _checks.NON_NEGATIVE),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    lr_linear=True,
    constructor_only=('initial_accumulator_value',),
    torch_state={TorchAdagradState: {'sum': 'sum'}},
  ),
)
