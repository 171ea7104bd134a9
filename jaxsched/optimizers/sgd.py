"""SGD: ``torch.optim.SGD`` with torch's momentum, dampening, nesterov and L2."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec


class MomentumState(NamedTuple):
  """torch's ``momentum_buffer`` per parameter and the step count."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  buffer: Any


def torch_momentum(momentum: Any, dampening: Any, nesterov: bool) -> optax.GradientTransformation:
  """SGD's momentum as ``torch.optim.SGD`` computes it.

  ``buf = g`` on the first step (never dampened), then
  ``buf = momentum * buf + (1 - dampening) * g``; the direction is ``buf``, or
  ``g + momentum * buf`` with nesterov. ``optax.trace`` has no dampening.
  """

  def init_fn(params):
    return MomentumState(jnp.zeros([], jnp.int32), _common.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    # The first step's buffer is g itself: 0 * 0 + 1 * g with the zeros of init,
    # exactly g (torch clones it), without a per-leaf select.
    first = state.count == 0
    keep = jnp.where(first, 0, momentum)
    take = jnp.where(first, 1, 1 - dampening).astype(keep.dtype)  # RMSprop's literal 0.0 is weakly typed
    buffer = jax.tree.map(lambda g, b: _common.cast(keep, g) * b + _common.cast(take, g) * g, updates, state.buffer)
    if nesterov:
      updates = jax.tree.map(lambda g, b: g + _common.cast(momentum, g) * b, updates, buffer)
    else:
      updates = buffer
    return updates, MomentumState(optax.safe_increment(state.count), buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def sgd(learning_rate, momentum, dampening, weight_decay, nesterov, maximize):
  """Stochastic gradient descent, as ``torch.optim.SGD``.

  ``g = -g`` if maximize; ``g += weight_decay * p`` (L2); momentum as
  :func:`torch_momentum`; ``p -= lr * g``. momentum or weight_decay of exactly 0
  removes that term (and its state), as in torch.
  """
  return _common.chain(
    *_common.gradient(maximize, weight_decay),
    torch_momentum(momentum, dampening, nesterov) if momentum is not None else None,
    _common.descend(learning_rate),
  )


def nesterov_check(owner: str) -> Callable[[dict[str, Any]], None]:
  """The cross-check of torch.optim.SGD's rule, which ``owner`` (a class name) shares: nesterov
  needs momentum > 0 and dampening == 0."""

  def check(kw: dict[str, Any]) -> None:
    if kw['nesterov'] and (kw['momentum'] == 0 or kw['dampening'] != 0):
      raise ConfigError(
        f'nesterov=True requires momentum > 0 and dampening == 0 (as {owner}); '
        f'got momentum={kw["momentum"]!r}, dampening={kw["dampening"]!r}.'
      )

  return check


SPECS = (
  OptimizerSpec(
    name='SGD',
    factory=sgd,
    lr=0.01,  # the reference page's default; torch's is 1e-3
    kwargs={
      'momentum': (0.9, _checks.Schedulable(_checks.NON_NEGATIVE)),  # reference: 0.9; torch: 0
      'dampening': (0.0, _checks.Real()),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'nesterov': (False, _checks.Boolean()),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('momentum', 'weight_decay'),
    cross_check=nesterov_check('torch.optim.SGD'),
    lr_linear=True,
    torch_state={MomentumState: {'buffer': 'momentum_buffer'}},
    torch_step=None,
  ),
)
