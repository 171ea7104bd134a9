"""ASGD: ``torch.optim.ASGD``, averaged SGD with a decaying step and a Polyak average."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec

# torch keeps ``eta`` and ``mu`` as tensors of its default scalar dtype
# (float32 unless torch's default dtype is float64), also for float64 params.
SCALAR_DTYPE = jnp.float32


class TorchASGDState(NamedTuple):
  """torch's ``step``, ``eta`` (step size), ``mu`` (averaging weight) and
  ``ax`` (the Polyak average of the parameters)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  eta: jax.Array
  mu: jax.Array
  ax: Any


def torch_asgd(learning_rate: Any, lambd: Any, alpha: Any, t0: Any) -> optax.GradientTransformation:
  """ASGD's step, as ``torch.optim.ASGD``; needs ``params``.

  ``p = p * (1 - lambd * eta) - eta * g``; ``ax = p`` while ``mu == 1``, else
  ``ax += mu * (p - ax)``; then, at torch's step ``t`` (updates applied so far),
  ``eta = lr / (1 + lambd * lr * t)**alpha`` and ``mu = 1 / max(1, t - t0)``.
  ``eta`` starts at ``lr`` and ``mu`` at 1; both are stored in float32, as torch
  stores them. The average ``ax`` is for evaluation: it never feeds back into
  the parameters.
  """

  def init_fn(params):
    return TorchASGDState(
      jnp.zeros([], jnp.int32),
      jnp.array(learning_rate, SCALAR_DTYPE),  # a copy: the state may be donated
      jnp.ones([], SCALAR_DTYPE),
      _common.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('ASGD needs the parameters: call update(grads, state, params).')
    decay = 1 - lambd * state.eta  # in the hyperparameters' precision, as torch's Python floats
    step = -state.eta

    def new_param(g, p):
      return p * _common.cast(decay, p) + _common.cast(step, g) * g

    # The update that optax.apply_updates turns into torch's new parameters.
    updates = jax.tree.map(lambda g, p: new_param(g, p) - p, updates, params)
    new_params = optax.apply_updates(params, updates)
    copy = state.mu == 1  # torch copies the parameters while mu is 1, else averages
    ax = jax.tree.map(
      lambda a, p: jax.lax.select(copy, p, a + (p - a) * _common.cast(state.mu, p)),
      state.ax,
      new_params,
    )
    count = optax.safe_increment(state.count)
    step = count.astype(jnp.result_type(learning_rate))
    eta = (learning_rate / (1 + lambd * learning_rate * step) ** alpha).astype(SCALAR_DTYPE)
    mu = (1 / jnp.maximum(1, step - t0)).astype(SCALAR_DTYPE)
    return updates, TorchASGDState(count, eta, mu, ax)

  return optax.GradientTransformation(init_fn, update_fn)


def asgd(learning_rate, lambd, alpha, t0, weight_decay, maximize):
  """Averaged SGD, as ``torch.optim.ASGD``.

  ``g = -g`` if maximize; ``g += weight_decay * p`` (L2); then
  :func:`torch_asgd`: ``p = p * (1 - lambd * eta) - eta * g`` with
  ``eta = lr / (1 + lambd * lr * t)**alpha``, and the average ``ax`` of the
  parameters from step ``t0`` on, kept in the state. weight_decay of exactly 0
  removes the term, as in torch.
  """
  return _common.chain(
    *_common.gradient(maximize, weight_decay),
    torch_asgd(learning_rate, lambd, alpha, t0),
  )


SPECS = (
  OptimizerSpec(
    name='ASGD',
    factory=asgd,
    lr=0.01,
    kwargs={
      # torch checks neither lambd, alpha nor t0.
      'lambd': (1e-4, _checks.Real()),
      'alpha': (0.75, _checks.Real()),
      't0': (1e6, _checks.Real()),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    torch_state={TorchASGDState: {'eta': 'eta', 'mu': 'mu', 'ax': 'ax'}},
    torch_scalars=frozenset({(TorchASGDState, 'eta'), (TorchASGDState, 'mu')}),  # one per parameter in torch
  ),
)
