"""SWALR (``torch.optim.swa_utils.SWALR``): anneals each group's lr to a fixed ``swa_lr``.

torch's ``get_lr`` is recursive: step k recovers the lr the anneal started from
out of the group's current lr, ``prev = (lr - a(k-1) swa_lr) / (1 - a(k-1))``,
and returns ``swa_lr * a(k) + prev * (1 - a(k))`` with ``a(k) = anneal(min(1, k /
max(1, E)))``. Stepped on its own, ``prev`` is the lr the group had when SWALR
took over, so the closed form is ``swa_lr * a(n) + lr0 * (1 - a(n))``; chained
with other schedulers, the recursion is SWALR's affine step map.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsched import _checks
from jaxsched.schedules._numeric import const, half_cosine, to_float
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec

STRATEGIES = ('cos', 'linear')


def _alpha(anneal_epochs: int, anneal_strategy: str) -> Callable[[jax.Array], jax.Array]:
  """``a(step)``: torch's ``anneal_func(max(0, min(1, step / max(1, E))))`` of an integer step;
  'cos' is ``(1 - cos(pi t)) / 2``, computed as ``sin(pi t / 2) ** 2``, 'linear' is ``t``."""
  span = max(1, anneal_epochs)

  def alpha(step):
    s = jnp.clip(step, 0, span)
    return half_cosine(s, 2 * span) if anneal_strategy == 'cos' else to_float(s) * const(1.0 / span)

  return alpha


def _step(k: jax.Array, anneal_epochs: int) -> jax.Array:
  """torch's ``step = self._step_count - 1``, and ``max(1, step)`` when anneal_epochs is 0."""
  return k if anneal_epochs else jnp.maximum(k, 1)


def swalr_value(swa_lr: float, anneal_epochs: int, anneal_strategy: str) -> Callable[[jax.Array, Any], jax.Array]:
  """``value(n, lr0)``: the lr after n ``step()`` calls of an SWALR built when the
  group's lr was ``lr0`` (n = 0: right after construction; lr0 with anneal_epochs
  > 0, swa_lr with anneal_epochs == 0)."""
  alpha = _alpha(anneal_epochs, anneal_strategy)

  def value(n, lr0):
    a = alpha(_step(n, anneal_epochs))
    return const(swa_lr) * a + jnp.asarray(lr0, a.dtype) * (1 - a)

  return value


def swalr(lr, swa_lr, anneal_epochs, anneal_strategy):
  """SWALR (``torch.optim.swa_utils.SWALR``): anneals from the group's lr to swa_lr
  over anneal_epochs steps ('cos' or 'linear'), then holds swa_lr.

  Standalone, the anneal starts from the optimizer's lr. As a SequentialLR
  member it restarts from the lr at its milestone (torch's ``_update_lr(0)``
  leaves SWALR's step count at 1); in a ChainedScheduler each step is torch's
  recursion on the lr the members before it left.
  """
  value = swalr_value(swa_lr, anneal_epochs, anneal_strategy)
  alpha = _alpha(anneal_epochs, anneal_strategy)

  def step(k):
    s = _step(k, anneal_epochs)
    prev, cur = alpha(s - 1), alpha(s)
    done = prev == 1  # torch's _get_initial_lr returns swa_lr
    a = jnp.where(done, const(0.0), (1 - cur) / jnp.where(done, const(1.0), 1 - prev))
    b = jnp.where(done, const(swa_lr), const(swa_lr) * (cur - prev * a))
    return a, b

  return Curve(value=lambda n: value(n, lr), kind='affine', step=step, restart=value)


SPECS = (
  ScheduleSpec(
    'SWALR',
    swalr,
    {
      'swa_lr': (REQUIRED, _checks.Real()),
      'anneal_epochs': (10, _checks.Integer(0)),
      'anneal_strategy': ('cos', _checks.Choice(STRATEGIES)),
    },
  ),
)
