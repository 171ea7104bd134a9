"""Hyperparameters in the optimizer state, as ``optax.inject_hyperparams`` keeps them,
showing the values of the next update."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def hyperparam_dtype() -> jnp.dtype:
  """float64 when jax_enable_x64 is on, else float32: never narrower than float32."""
  return jax.dtypes.canonicalize_dtype(jnp.float64)


def inject(factory: Callable[..., optax.GradientTransformation], args: dict[str, Any]) -> optax.GradientTransformationExtraArgs:
  """``factory(**args)`` with its floats and schedules in the state.

  Floats and schedules (callables of the update count, or Optax stateful
  schedules such as :class:`jaxsched.Plateau`) live in ``state.hyperparams``;
  ints, bools, strings, tuples and None shape the computation and stay static.
  After each update ``state.hyperparams`` holds the values the NEXT update will
  use, as right after ``init`` and as torch's ``param_group['lr']`` (what
  Lightning's LearningRateMonitor logs); ``optax.inject_hyperparams`` alone
  keeps those of the update just made.
  """
  static = [k for k, v in args.items() if not (isinstance(v, float) or callable(v))]
  tx = optax.inject_hyperparams(factory, static_args=static, hyperparam_dtype=hyperparam_dtype())(**args)
  schedules = {
      k: v if isinstance(v, optax.schedules.StatefulSchedule) else optax.WrappedSchedule(v)
      for k, v in args.items() if callable(v) and k not in static
  }
  if not schedules:
    return tx

  def update_fn(updates, state, params=None, **extra_args):
    updates, state = tx.update(updates, state, params, **extra_args)
    shown = dict(state.hyperparams)
    for k, f in schedules.items():
      shown[k] = jnp.asarray(f(state.hyperparams_states[k]), shown[k].dtype)
    return updates, state._replace(hyperparams=shown)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)
